"""The one token-counting rule, shared by every method."""

from __future__ import annotations

from specrepro.engine.stopping import StopRule

NL, WORD, SPACE, WORD_NL, EOS = 10, 20, 30, 40, 2


def rule(max_new: int = 10, single_line: bool = False) -> StopRule:
    return StopRule(
        eos_ids=frozenset({EOS}),
        max_new_tokens=max_new,
        single_line=single_line,
        newline_ids=frozenset({NL, WORD_NL}),
        visible_ids=frozenset({WORD, WORD_NL}),
        visible_before_newline_ids=frozenset({WORD_NL}),
    )


def test_eos_is_kept_and_later_tokens_dropped() -> None:
    assert rule().trim([WORD, EOS, WORD, WORD]) == ([WORD, EOS], True)


def test_max_new_tokens_trims_overshoot() -> None:
    assert rule(max_new=3).trim([WORD] * 5) == ([WORD] * 3, True)
    assert rule(max_new=3).trim([WORD] * 2) == ([WORD] * 2, False)


def test_single_line_stops_after_first_newline_following_text() -> None:
    # A newline before any visible text does not end the answer.
    assert rule(single_line=True).trim([NL, SPACE, WORD, NL, WORD]) == ([NL, SPACE, WORD, NL], True)
    assert rule(single_line=True).trim([WORD_NL, WORD]) == ([WORD_NL], True)
    assert rule(single_line=False).trim([WORD, NL, WORD]) == ([WORD, NL, WORD], False)
