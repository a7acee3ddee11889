"""Twins: tokenizers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

# Trained vocabulary sizes: LLaMA's exactly the model's rows (32000 in the real models); OPT's a
# few short of a multiple of 8, the model padded past it (50265 tokens, 50272 rows).
TOKENIZER_VOCAB = {"llama": 1024, "opt": 1020}
VOCAB_PAD = {"llama": 1, "opt": 8}
SPECIAL_TOKENS = {
    "llama": ["<unk>", "<s>", "</s>"],
    "opt": ["<s>", "<pad>", "</s>", "<unk>"],
}
TOKEN_IDS = {  # bos, eos, pad, unk (config.json / generation_config.json)
    "llama": {"bos": 1, "eos": 2, "pad": None, "unk": 0},
    "opt": {"bos": 2, "eos": 2, "pad": 1, "unk": 3},
}


# Per dataset, the most text the tokenizer learns from (the first records in file order).
CORPUS_CHARS_PER_DATASET = 400_000
# Without benchmark data: a little text in each prompt format, so the merges know them.
FALLBACK_RECORD = {
    "system": None,
    "few_shot": [],
    "turns": [
        "Compose an engaging travel blog post about a recent trip to Hawaii, highlighting "
        "cultural experiences and must-see attractions.",
        "Rewrite your previous response. Start every sentence with the letter A.",
    ],
}


def corpus_texts(
    mirror: Path | None = None, files: Sequence[Path] = (), max_chars: int = 2_000_000
) -> list[str]:
    """The text a twin tokenizer is trained on: the benchmark prompts of a data folder laid out
    like the mirror (mtbench/, squad/, spider/) in every text conversation format, then the
    lines of `files`. The prompt formats alone when neither is given (a smaller vocabulary)."""
    from specrepro.data.fetch import DataError
    from specrepro.data.prompts import load_records
    from specrepro.prompting import conversation, prompt_text

    formats = ("vicuna_v1.1", "llama-2", "plain", "completion")
    records: list[dict] = [FALLBACK_RECORD]
    if mirror is not None:
        for dataset in ("mtbench", "squad", "spider"):
            try:
                found = load_records(dataset, Path(mirror))
            except DataError:
                continue
            size = 0
            for record in found:
                records.append(record)
                size += sum(map(len, record["turns"]))
                if size > CORPUS_CHARS_PER_DATASET:
                    break
    texts: list[str] = []
    for record in records:
        messages = conversation(record, 0, [])
        if len(record["turns"]) > 1:  # a second turn after an answer
            messages = conversation(record, 1, [record["turns"][0]])
        for fmt in formats:
            texts.append(prompt_text(messages, fmt))
    for path in files:
        texts.extend(Path(path).read_text(encoding="utf-8").splitlines())
    kept, total = [], 0
    for text in dict.fromkeys(texts):  # SQuAD repeats each context per question
        kept.append(text)
        total += len(text)
        if total > max_chars:
            break
    return kept


def train_tokenizer(family: str, texts: Iterable[str]):
    """A byte-level BPE tokenizer with the family's special tokens and conventions, as a
    transformers fast tokenizer. Byte level, so any text round-trips (special-token strings
    such as "</s>" in the text are read as those tokens, as the real tokenizers read them)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIAL_TOKENS[family]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB[family],
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer)
    ids = TOKEN_IDS[family]
    bos = specials[ids["bos"]]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {bos} $B:1",
        special_tokens=[(bos, ids["bos"])],
    )
    named = {"bos_token": bos, "eos_token": specials[ids["eos"]], "unk_token": "<unk>"}
    if ids["pad"] is not None:
        named["pad_token"] = specials[ids["pad"]]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, clean_up_tokenization_spaces=False, **named
    )


def model_vocab(family: str, tokenizer_size: int) -> int:
    pad = VOCAB_PAD[family]
    return pad * math.ceil(tokenizer_size / pad)
