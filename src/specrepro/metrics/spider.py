"""Spider execution accuracy: run gold and predicted SQL on the sqlite database and compare.

The comparison follows the semantics of Spider's official test-suite evaluator
(taoyds/test-suite-sql-eval, ``exec_eval.py``: ``eval_exec_match``, ``result_eq``,
``postprocess`` and ``parse.remove_distinct``) on a single database; see ``execution_match``.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)

# Memory bounds for scoring untrusted SQL: a cross join can return tens of millions of rows
# within the timeout, and printf/zeroblob can build gigabyte strings in one call.
MAX_ROWS = 100_000
MAX_VALUE_BYTES = 1_000_000  # sqlite's own per-string/blob limit on the scoring connection
_FETCH_CHUNK = 10_000
_DENIED_FUNCTIONS = frozenset(
    {"zeroblob", "randomblob", "printf", "format", "load_extension", "readfile", "writefile"}
)

# VM instructions between deadline checks: frequent enough for sub-second timeouts,
# rare enough that the Python callback costs nothing measurable.
_PROGRESS_STEPS = 1000


@dataclass(frozen=True)
class ExecResult:
    """Outcome of comparing one predicted query with its gold query."""

    match: bool
    pred_error: str | None = None
    gold_error: str | None = None
    ordered: bool = False
    # The gold query failed (error, timeout, row cap): the question cannot be scored and
    # should be left out of execution accuracy rather than counted as a miss.
    excluded: bool = False


_CLOSERS = {"'": "'", '"': '"', "`": "`", "[": "]"}


def _split_quoted(sql: str) -> Iterator[tuple[str, bool]]:
    """``sql`` cut into (text, is_code) pieces; string literals, quoted identifiers and
    comments are the pieces with is_code False. Joining the texts gives ``sql`` back."""
    start = i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch in _CLOSERS:
            end = sql.find(_CLOSERS[ch], i + 1)
            stop = n if end == -1 else end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            stop = n if end == -1 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            stop = n if end == -1 else end + 2
        else:
            i += 1
            continue
        if start < i:
            yield sql[start:i], True
        yield sql[i:stop], False
        start = i = stop
    if start < n:
        yield sql[start:], True


def _top_level_text(sql: str) -> str:
    """The query with strings, quoted identifiers, comments and parenthesised parts blanked.

    What remains is the outermost statement, so an ORDER BY inside a subquery or a window
    (OVER (ORDER BY ...)) does not make the comparison ordered.
    """
    out: list[str] = []
    depth = 0
    for text, is_code in _split_quoted(sql):
        if not is_code:
            out.append(" ")
            continue
        for ch in text:
            if ch == "(":
                depth += 1
                out.append(" ")
            elif ch == ")":
                depth = max(depth - 1, 0)
                out.append(" ")
            else:
                out.append(ch if depth == 0 else " ")
    return "".join(out)


def has_top_level_order_by(sql: str) -> bool:
    """True if the outermost statement of ``sql`` has an ORDER BY clause."""
    return _ORDER_BY.search(_top_level_text(sql)) is not None


_WORD = re.compile(r"[\w$]+")
_SPACED_COMPARISON = re.compile(r"([<>!])\s+=")


def normalize_query(sql: str, keep_distinct: bool = False) -> str:
    """``sql`` as the official evaluator runs it: ``> =``, ``< =`` and ``! =`` closed up
    (its ``postprocess``) and, unless keep_distinct, every DISTINCT keyword dropped (its
    ``remove_distinct``), so ``SELECT DISTINCT a`` and ``count(DISTINCT a)`` lose it too.

    Unlike the official code (which uses sqlparse), string literals, quoted identifiers and
    comments are left untouched, later statements are kept rather than cut off, and the
    DISTINCT of ``IS [NOT] DISTINCT FROM`` stays, since dropping it only breaks the query.
    """
    pieces = [
        (_SPACED_COMPARISON.sub(r"\1=", text) if is_code else text, is_code)
        for text, is_code in _split_quoted(sql)
    ]
    if keep_distinct:
        return "".join(text for text, _ in pieces)
    # Word tokens outside quotes and comments, as (piece index, start, end, lowercase word).
    words = [
        (k, m.start(), m.end(), m.group().lower())
        for k, (text, is_code) in enumerate(pieces)
        if is_code
        for m in _WORD.finditer(text)
    ]
    drop: dict[int, list[tuple[int, int]]] = {}
    for w, (k, start, end, word) in enumerate(words):
        if word == "distinct" and (w + 1 == len(words) or words[w + 1][3] != "from"):
            drop.setdefault(k, []).append((start, end))
    out: list[str] = []
    for k, (text, _) in enumerate(pieces):
        pos = 0
        for start, end in drop.get(k, ()):
            out.append(text[pos:start] + " ")
            pos = end
        out.append(text[pos:])
    return "".join(out)


_READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)


def _allow_reads_only(action: int, arg1: object, arg2: object, *_: object) -> int:
    if action not in _READ_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _connect_read_only(db_path: Path) -> sqlite3.Connection:
    # Quoting keeps '?', '#' or '%' in a path from being read as URI syntax.
    uri = f"file:{quote(str(db_path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    # Spider has a few databases with non-UTF-8 text; a decode error must not count as
    # a failed query.
    conn.text_factory = lambda b: b.decode(errors="replace")
    # Belt and braces next to mode=ro: also refuses writes to ATTACHed databases.
    conn.execute("PRAGMA query_only = ON")
    # mode=ro does not stop ATTACH from creating a new file, so only reads may be prepared.
    conn.set_authorizer(_allow_reads_only)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    return conn


def _run(
    conn: sqlite3.Connection, sql: str, timeout_s: float, max_rows: int = MAX_ROWS
) -> tuple[list[tuple], str | None]:
    """Rows of ``sql`` (at most max_rows) or an error message; never raises for a bad query."""
    deadline = time.monotonic() + timeout_s
    timed_out = False

    def past_deadline() -> int:
        nonlocal timed_out
        timed_out = time.monotonic() > deadline
        return int(timed_out)

    # The handler stays installed through fetchall because rows are produced lazily there.
    conn.set_progress_handler(past_deadline, _PROGRESS_STEPS)
    try:
        cursor = conn.execute(sql)
        rows: list[tuple] = []
        while chunk := cursor.fetchmany(_FETCH_CHUNK):
            rows += chunk
            if len(rows) > max_rows:
                return [], f"more than {max_rows} rows"
    # sqlite3.Warning: several statements at once; ValueError: NUL characters in the query.
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as exc:
        if timed_out:
            return [], f"timeout after {timeout_s:g}s"
        return [], f"{type(exc).__name__}: {exc}"
    finally:
        conn.set_progress_handler(None, _PROGRESS_STEPS)
    # A comment-only text or a non-query (BEGIN, PRAGMA x=y) yields no columns; it must not
    # "match" a gold query whose result happens to be empty.
    if cursor.description is None:
        return [], "statement returned no result columns"
    return rows, None


def _columns_match(gold: Sequence[tuple], pred: Sequence[tuple], ordered: bool) -> bool:
    """Whether some order of pred's columns makes its rows equal gold's (``result_eq``).

    Both inputs hold at least one row and have the same numbers of rows and columns.
    """
    if ordered:
        # Ordered rows are equal under a column order exactly when every gold column equals
        # its pred column as a sequence, so the columns must pair off as a multiset.
        if list(gold) == list(pred):
            return True
        return Counter(zip(*gold, strict=True)) == Counter(zip(*pred, strict=True))
    # Rows as multisets. A usable order maps each gold column to a pred column holding the
    # same multiset of values (the official code's pruning), here refined to the multiset of
    # (value, signature of the value's row with its columns unordered); if the unordered rows
    # already differ (the official quick rejection) no order can help. Only orders passing
    # this are tried, one per set of identical pred columns (swapping two identical columns
    # changes nothing), built a column at a time and dropped as soon as the rows cut to the
    # columns chosen so far differ as multisets. Those tests use hashes (equal values hash
    # equal, so they never reject a good order); a complete order is checked on the values.
    gold_rows = Counter(gold)
    if Counter(pred) == gold_rows:  # the usual case: columns already in gold's order
        return True
    gold_cols = list(zip(*gold, strict=True))
    pred_cols = list(zip(*pred, strict=True))
    gold_sigs = [hash(tuple(sorted(map(hash, row)))) for row in gold]
    pred_sigs = [hash(tuple(sorted(map(hash, row)))) for row in pred]
    if Counter(gold_sigs) != Counter(pred_sigs):
        return False
    gold_bags = [Counter(zip(col, gold_sigs, strict=True)) for col in gold_cols]
    pred_bags = [Counter(zip(col, pred_sigs, strict=True)) for col in pred_cols]
    n = len(gold_cols)
    candidates = [[j for j in range(n) if gold_bags[i] == pred_bags[j]] for i in range(n)]
    if any(not c for c in candidates):
        return False
    twin_of = [next(k for k in range(j + 1) if pred_cols[k] == pred_cols[j]) for j in range(n)]
    gold_keys = [list(map(hash, gold_cols[0]))]
    for col in gold_cols[1:]:
        gold_keys.append(list(map(hash, zip(gold_keys[-1], col, strict=True))))
    gold_key_bags: dict[int, Counter] = {}
    order: list[int] = []
    used = [False] * n

    def extend(pred_keys: list[int]) -> bool:
        depth = len(order)
        if depth > 1:
            if depth not in gold_key_bags:
                gold_key_bags[depth] = Counter(gold_keys[depth - 1])
            if Counter(pred_keys) != gold_key_bags[depth]:
                return False
        if depth == n:
            return Counter(tuple(row[j] for j in order) for row in pred) == gold_rows
        for j in candidates[depth]:
            # Among identical pred columns take the first unused one.
            if used[j] or any(twin_of[k] == twin_of[j] and not used[k] for k in range(j)):
                continue
            col = pred_cols[j]
            keys = list(map(hash, zip(pred_keys, col, strict=True) if depth else col))
            used[j] = True
            order.append(j)
            if extend(keys):
                return True
            order.pop()
            used[j] = False
        return False

    return extend([])


def results_equal(gold: Sequence[tuple], pred: Sequence[tuple], ordered: bool) -> bool:
    """The official ``result_eq``: equal up to a permutation of pred's columns, rows compared
    as lists when ordered and as multisets otherwise. Two empty results are equal."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    return _columns_match(gold, pred, ordered)


def execution_match(
    db_path: Path,
    gold_sql: str,
    pred_sql: str,
    timeout_s: float = 10.0,
    max_rows: int = MAX_ROWS,
    keep_distinct: bool = False,
) -> ExecResult:
    """Execution accuracy for one question, with the semantics of Spider's official
    test-suite evaluator (taoyds/test-suite-sql-eval, ``exec_eval.eval_exec_match``) on the
    one database given:

    - Both queries are normalised first (``normalize_query``): ``> =``, ``< =``, ``! =`` are
      closed up and, unless keep_distinct (the official default is to drop it), every
      DISTINCT keyword is removed from gold and prediction alike, so DISTINCT never decides
      a match.
    - Results are equal when some permutation of the predicted columns makes them equal
      (``result_eq``): the column counts must agree, and rows are compared as multisets
      unless the gold query has an ORDER BY, then as ordered lists. Only the outermost
      statement's ORDER BY counts here (one in a subquery or window does not), where the
      official code looks for "order by" anywhere in the gold text. Two empty results match.
    - Values are compared as sqlite returns them, with no rounding.
    - A gold query that fails (error, timeout, more than max_rows rows) makes the question
      ``excluded`` (match False, prediction not run): the official evaluator asserts gold
      queries run, so such a question has no score rather than a miss. A failing or empty
      prediction is a miss (match False, pred_error set, not excluded).

    Queries run read-only, with a timeout and bounds on rows and value sizes.
    """
    db_path = Path(db_path)
    # sqlite would otherwise fail with a vague error, or in rw mode create an empty db and
    # make every query "match" on nothing.
    if not db_path.is_file():
        raise FileNotFoundError(f"Spider database not found: {db_path}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")

    gold_sql = normalize_query(gold_sql, keep_distinct)
    ordered = has_top_level_order_by(gold_sql)
    conn = _connect_read_only(db_path)
    try:
        gold_rows, gold_error = _run(conn, gold_sql, timeout_s, max_rows)
        if gold_error is not None:
            return ExecResult(False, None, gold_error, ordered, excluded=True)
        if not pred_sql.strip():
            return ExecResult(False, "empty prediction", None, ordered)
        pred_sql = normalize_query(pred_sql, keep_distinct)
        pred_rows, pred_error = _run(conn, pred_sql, timeout_s, max_rows)
    finally:
        conn.close()

    if pred_error is not None:
        return ExecResult(False, pred_error, None, ordered)
    return ExecResult(results_equal(gold_rows, pred_rows, ordered), None, None, ordered)
