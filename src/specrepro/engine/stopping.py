"""The one token-counting rule: every method's output is trimmed the same way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from specrepro.answers import AnswerScanner, check_format


@dataclass
class StopRule:
    """Stop after an EOS token, after max_new_tokens, or at the token that ends the task's
    answer (answers.py: a content line for "line", a statement for "sql"). The stopping
    token is kept and counted.

    token_text[i] is token i decoded alone; tokens beyond it read as empty text.
    """

    eos_ids: frozenset[int]
    max_new_tokens: int
    answer_format: str = "free"
    token_text: Sequence[str] = ()

    def __post_init__(self) -> None:
        check_format(self.answer_format)
        if self.answer_format != "free" and not self.token_text:
            raise ValueError(f"answer format {self.answer_format!r} needs the token texts")

    def trim(self, generated: list[int]) -> tuple[list[int], bool]:
        """Return (tokens kept, finished) for the whole generated sequence so far."""
        scanner = AnswerScanner(self.answer_format)
        texts = self.token_text
        for i, tok in enumerate(generated):
            if i >= self.max_new_tokens:
                return generated[: self.max_new_tokens], True
            if tok in self.eos_ids:
                return generated[: i + 1], True
            text = texts[tok] if 0 <= tok < len(texts) else ""
            if scanner.feed(text) is not None:
                return generated[: i + 1], True
        return generated, len(generated) >= self.max_new_tokens


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
