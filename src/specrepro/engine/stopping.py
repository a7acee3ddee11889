"""The one token-counting rule: every method's output is trimmed the same way."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase


@dataclass
class StopRule:
    """Stop after an EOS token, after max_new_tokens, and (single-line tasks) after the first
    newline that follows visible text. The stopping token is kept and counted."""

    eos_ids: frozenset[int]
    max_new_tokens: int
    single_line: bool = False
    newline_ids: frozenset[int] = field(default_factory=frozenset)
    visible_ids: frozenset[int] = field(default_factory=frozenset)
    visible_before_newline_ids: frozenset[int] = field(default_factory=frozenset)

    def trim(self, generated: list[int]) -> tuple[list[int], bool]:
        """Return (tokens kept, finished) for the whole generated sequence so far."""
        seen_visible = False
        for i, tok in enumerate(generated):
            if i + 1 > self.max_new_tokens:
                return generated[: self.max_new_tokens], True
            if tok in self.eos_ids:
                return generated[: i + 1], True
            if self.single_line and tok in self.newline_ids:
                if seen_visible or tok in self.visible_before_newline_ids:
                    return generated[: i + 1], True
            if tok in self.visible_ids:
                seen_visible = True
        return generated, len(generated) >= self.max_new_tokens


@dataclass(frozen=True)
class TokenClasses:
    newline: frozenset[int]
    visible: frozenset[int]
    visible_before_newline: frozenset[int]


def token_classes(tokenizer: PreTrainedTokenizerBase) -> TokenClasses:
    """Which vocabulary entries contain a newline / visible text (decoded, one token alone)."""
    newline, visible, visible_first = set(), set(), set()
    for tid in range(len(tokenizer)):
        text = tokenizer.decode([tid])
        if text.strip():
            visible.add(tid)
        if "\n" in text:
            newline.add(tid)
            if text.split("\n", 1)[0].strip():
                visible_first.add(tid)
    return TokenClasses(frozenset(newline), frozenset(visible), frozenset(visible_first))


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
