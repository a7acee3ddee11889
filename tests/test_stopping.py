"""The one token-counting rule, shared by every method, and where an answer ends."""

from __future__ import annotations

from specrepro.engine.stopping import StopRule

EOS = 0
# A toy vocabulary: token id -> its text, shaped like byte-level BPE pieces.
VOCAB = ["</s>", "\n", "```", "sql", "Answer", ":", " Paris", "SELECT", " name", " FROM",
         " singer", ";", "\n\n", "``", "`", " '", "a;b", "'", " more"]  # fmt: skip
ID = {text: i for i, text in enumerate(VOCAB)}


def ids(*pieces: str) -> list[int]:
    return [ID[p] for p in pieces]


def rule(max_new: int = 40, answer_format: str = "free") -> StopRule:
    return StopRule(frozenset({EOS}), max_new, answer_format, tuple(VOCAB))


def test_eos_is_kept_and_later_tokens_dropped() -> None:
    seq = ids(" Paris", "</s>", " Paris", " Paris")
    assert rule().trim(seq) == (seq[:2], True)


def test_max_new_tokens_trims_overshoot() -> None:
    assert rule(max_new=3).trim(ids(*[" Paris"] * 5)) == (ids(*[" Paris"] * 3), True)
    assert rule(max_new=3).trim(ids(" Paris", " Paris")) == (ids(" Paris", " Paris"), False)


def test_eos_and_max_new_tokens_in_the_same_chunk() -> None:
    # A speculative round commits several tokens at once; whichever comes first wins.
    chunk = ids(" Paris", " Paris", "</s>", " Paris")
    assert rule(max_new=2).trim(chunk) == (chunk[:2], True)  # budget before EOS
    assert rule(max_new=3).trim(chunk) == (chunk[:3], True)  # EOS is the last token allowed
    assert rule(max_new=10).trim(chunk) == (chunk[:3], True)


def test_line_answer_skips_fenced_and_labelled_first_lines() -> None:
    fenced = ids("```", "sql", "\n", " Paris", "\n", " more")
    assert rule(answer_format="line").trim(fenced) == (fenced[:5], True)
    labelled = ids("Answer", ":", "\n", " Paris", "\n", " more")
    assert rule(answer_format="line").trim(labelled) == (labelled[:5], True)
    inline = ids("Answer", ":", " Paris", "\n", " more")
    assert rule(answer_format="line").trim(inline) == (inline[:4], True)
    leading_newlines = ids("\n", "\n", " Paris", "\n")
    assert rule(answer_format="line").trim(leading_newlines) == (leading_newlines, True)
    # Free text ignores lines.
    assert rule().trim(labelled) == (labelled, False)


def test_sql_answer_spans_lines_and_ends_at_its_statement() -> None:
    sql = rule(answer_format="sql")
    # A fence first line does not end it; a newline inside the statement does not either.
    fenced = ids("```", "sql", "\n", "SELECT", " name", "\n", " FROM", " singer", "\n", "```",
                 "\n", " more")  # fmt: skip
    assert sql.trim(fenced) == (fenced[:10], True)
    # The closing fence may arrive in pieces.
    split_fence = ids("SELECT", " name", "\n", "``", "`", " more")
    assert sql.trim(split_fence) == (split_fence[:5], True)
    semicolon = ids("SELECT", " name", " FROM", " singer", ";", "\n", " more")
    assert sql.trim(semicolon) == (semicolon[:5], True)
    blank_line = ids("SELECT", " name", "\n", " FROM", " singer", "\n\n", " more")
    assert sql.trim(blank_line) == (blank_line[:6], True)
    # A semicolon inside a string literal is data, not the end of the statement.
    quoted = ids("SELECT", " '", "a;b", "'", ";", " more")
    assert sql.trim(quoted) == (quoted[:5], True)
    # Unfinished statement: keeps going.
    open_ended = ids("SELECT", " name", "\n", " FROM")
    assert sql.trim(open_ended) == (open_ended, False)


def test_incremental_scan_equals_full_rescan_on_random_sequences() -> None:
    # The scan a beam continues from its parent's must end where a full rescan ends: same
    # tokens kept, same reason, at every prefix, whatever the split points.
    import random

    rng = random.Random(0)
    for answer_format in ("free", "line", "sql"):
        for max_new in (3, 8, 40):
            stop = rule(max_new, answer_format)
            for _ in range(200):
                seq = [rng.randrange(len(VOCAB)) for _ in range(rng.randrange(0, 14))]
                # EOS is rare enough that the answer rules get to act.
                seq = [t if t != EOS or rng.random() < 0.2 else ID[" Paris"] for t in seq]
                scan = stop.begin()
                at = 0
                while at < len(seq):
                    step = rng.randrange(1, 4)
                    before = scan
                    scan = stop.advance(scan, seq[at : at + step])
                    at = min(at + step, len(seq))
                    full = stop._end(seq[:at])
                    kept, why = scan.end if scan.end is not None else (scan.length, None)
                    if why is None and scan.length >= max_new:
                        why = stop.budget_reason
                    assert (kept, why) == full
                    assert stop.finished(scan) == stop.trim(seq[:at])[1]
                    assert before.length <= scan.length  # the parent's scan is left as it was
                assert stop.reason(seq) == (stop._end(seq)[1] or "unfinished")


def test_continued_scan_leaves_the_parent_scan_unchanged() -> None:
    # Two beams that share a prefix continue one scan: the sql scanner's state must not leak
    # from one child into the other.
    stop = rule(40, "sql")
    parent = stop.advance(stop.begin(), ids("SELECT", " '"))  # inside a quoted literal
    inside = stop.advance(parent, ids("a;b"))
    closed = stop.advance(parent, ids("'", ";"))
    assert not stop.finished(inside)
    assert stop.finished(closed) and closed.end == (4, "stop_string")
    assert parent.scanner.quote == "'" and parent.length == 2 and parent.end is None
