"""The one token-counting rule: every method's output is trimmed the same way."""

from __future__ import annotations

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

    def _end(self, generated: Sequence[int]) -> tuple[int, str | None]:
        """(tokens kept, why generation stops there); the reason is None while it goes on."""
        scanner = AnswerScanner(self.answer_format)
        texts = self.token_text
        for i, tok in enumerate(generated):
            if i >= self.max_new_tokens:
                return self.max_new_tokens, self.budget_reason
            if tok in self.eos_ids:
                return i + 1, "eos"
            text = texts[tok] if 0 <= tok < len(texts) else ""
            if scanner.feed(text) is not None:
                return i + 1, "stop_string"
        done = len(generated) >= self.max_new_tokens
        return len(generated), self.budget_reason if done else None


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
