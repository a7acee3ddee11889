"""The one token-counting rule: every method's output is trimmed the same way."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from specrepro.answers import AnswerScanner, check_format

STOP_REASONS = ("eos", "stop_string", "max_new_tokens", "context_limit")


@dataclass
class StopRule:
    """Stop after an EOS token, after max_new_tokens, or at the token that ends the task's
    answer (answers.py: a content line for "line", a statement for "sql"). The stopping
    token is kept and counted.

    max_new_tokens is the generation's token budget; `budget_reason` says what set it: the
    configured maximum ("max_new_tokens"), or the room left before the models' position limit
    ("context_limit", see `token_budget`).

    token_text[i] is token i decoded alone; tokens beyond it read as empty text.
    """

    eos_ids: frozenset[int]
    max_new_tokens: int
    answer_format: str = "free"
    token_text: Sequence[str] = ()
    budget_reason: str = "max_new_tokens"

    def __post_init__(self) -> None:
        check_format(self.answer_format)
        if self.answer_format != "free" and not self.token_text:
            raise ValueError(f"answer format {self.answer_format!r} needs the token texts")
        if self.budget_reason not in ("max_new_tokens", "context_limit"):
            raise ValueError(f"unknown budget reason {self.budget_reason!r}")

    def trim(self, generated: list[int]) -> tuple[list[int], bool]:
        """Return (tokens kept, finished) for the whole generated sequence so far."""
        kept, why = self._end(generated)
        return generated[:kept], why is not None

    def reason(self, tokens: Sequence[int]) -> str:
        """Why a generation whose output is `tokens` stopped: one of STOP_REASONS, or
        "unfinished" for tokens the rule would not have stopped at."""
        return self._end(tokens)[1] or "unfinished"

    def begin(self) -> StopScan:
        """The scan of an empty generation, to be continued with `advance`."""
        return StopScan(0, AnswerScanner(self.answer_format), None)

    def advance(self, scan: StopScan, tokens: Sequence[int]) -> StopScan:
        """The scan after `tokens` follow the ones `scan` has read (`scan` is left as it was).

        Beams that share a prefix continue its scan instead of rereading it from the start:
        `finished(advance(begin(), a + b))` equals `finished(advance(advance(begin(), a), b))`,
        and `_end` itself is this scan, so there is one counting rule."""
        if scan.end is not None or not tokens:
            return scan
        scanner = scan.scanner
        if self.answer_format != "free":  # the free format's scanner holds no state
            scanner = copy.copy(scanner)
        texts = self.token_text
        for offset, tok in enumerate(tokens):
            i = scan.length + offset
            if i >= self.max_new_tokens:
                return StopScan(i, scanner, (self.max_new_tokens, self.budget_reason))
            if tok in self.eos_ids:
                return StopScan(i + 1, scanner, (i + 1, "eos"))
            text = texts[tok] if 0 <= tok < len(texts) else ""
            if scanner.feed(text) is not None:
                return StopScan(i + 1, scanner, (i + 1, "stop_string"))
        return StopScan(scan.length + len(tokens), scanner, None)

    def finished(self, scan: StopScan) -> bool:
        """Whether a generation whose tokens `scan` has read is over."""
        return scan.end is not None or scan.length >= self.max_new_tokens

    def _end(self, generated: Sequence[int]) -> tuple[int, str | None]:
        """(tokens kept, why generation stops there); the reason is None while it goes on."""
        scan = self.advance(self.begin(), generated)
        if scan.end is not None:
            return scan.end
        done = scan.length >= self.max_new_tokens
        return scan.length, self.budget_reason if done else None


@dataclass(frozen=True)
class StopScan:
    """How far the stop rule has read a generation: `length` tokens, the answer scanner after
    them, and (kept, reason) once the rule has stopped it (later tokens are not read)."""

    length: int
    scanner: AnswerScanner
    end: tuple[int, str] | None


def token_budget(
    max_new_tokens: int, prompt_len: int, max_positions: int | None, lookahead: int
) -> tuple[int, str]:
    """(tokens a generation may produce, what bounds them: "max_new_tokens" or "context_limit").

    A round writes at most `lookahead` positions past the committed sequence (its drafts under
    verification), so a generation that stops `lookahead` short of the limit never writes a
    position the model does not have (the reference EAGLE code likewise stops its tree size,
    plus a margin, short of the maximum length). The budget is 0 when the prompt alone leaves
    no room.
    """
    if max_positions is None:
        return max_new_tokens, "max_new_tokens"
    room = max_positions - prompt_len - lookahead
    if room < max_new_tokens:
        return max(room, 0), "context_limit"
    return max_new_tokens, "max_new_tokens"


def token_texts(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """Each vocabulary entry decoded alone (enough to find newlines, fences and semicolons)."""
    return tuple(tokenizer.batch_decode([[i] for i in range(len(tokenizer))]))


def eos_token_ids(
    tokenizer: PreTrainedTokenizerBase, generation_eos: int | list[int] | None
) -> frozenset[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if isinstance(generation_eos, int):
        ids.add(generation_eos)
    elif generation_eos:
        ids.update(int(i) for i in generation_eos)
    return frozenset(ids)
