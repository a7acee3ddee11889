"""Building generators directly on models (no config, no files) for algorithm tests."""

from __future__ import annotations

from specrepro.config import MethodChoice
from specrepro.decoding.base import make_params
from specrepro.run.decoder import Decoder, LoadedPair


def decoder_for(
    target, draft, algorithm: str, temperature: float, eos=(), head=None, runners=None, **params
) -> Decoder:
    loaded = LoadedPair(
        name="test",
        target=target,
        tokenizer=None,  # type: ignore[arg-type]
        draft=draft,
        conversation="plain",
        eos_ids=frozenset(eos),
        token_text=(),
        head=head,
    )
    choice = MethodChoice(algorithm, algorithm, make_params(algorithm, params))
    return Decoder(loaded, choice, temperature, runners)


def chat_ids(tokenizer, text: str) -> list[int]:
    """A one-turn user prompt through the tokenizer's chat template, as token ids."""
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
    )
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
