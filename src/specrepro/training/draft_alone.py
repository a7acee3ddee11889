"""A draft model's own task accuracy: the draft alone decoding the evaluated prompts.

The draft runs as the target of a pair of its own, with vanilla decoding at T=0 and the harness
and stop rules of every run, and is scored as the tidy table scores runs (SQuAD EM/F1, Spider
execution accuracy).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from specrepro.config import MethodChoice, model_spec
from specrepro.data import read_prompts_jsonl
from specrepro.decoding.base import make_params
from specrepro.models.loader import fingerprint
from specrepro.prompting import default_conversation
from specrepro.report.tidy import tidy_table
from specrepro.run.harness import load_pair
from specrepro.run.timing_group import Member, run_group

SCORES = ("em", "f1", "exec_match")


def draft_accuracy(
    config: dict,
    draft_name: str,
    draft: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[tuple[str, Path]],
    pair: str | None = None,
    on_dataset: Callable[[str, dict], None] | None = None,
) -> dict:
    """{dataset: {n, em, f1, exec_match, per_question}} for the loaded registry model
    `draft_name` on each (dataset, prompts JSONL) of `prompts`, answering in the conversation
    format of `pair` (default: its tokenizer's). `on_dataset` gets each dataset's summary (the
    scores without per_question) as soon as it is scored.

    The draft runs where and in the dtype it was loaded (cli/common.job_placement: the run's
    device and dtype)."""
    solo = f"{draft_name}-alone"
    base = config["pairs"].get(pair or "", {})
    conversation = base.get("conversation") or default_conversation(tokenizer)
    # A copy: the caller's config keeps its pairs, while the harness finds the solo pair here.
    solo_pair = {"target": draft_name, "conversation": conversation}
    config = {**config, "pairs": {**config["pairs"], solo: solo_pair}}
    weight = next(draft.parameters())
    device, dtype = str(weight.device), str(weight.dtype).removeprefix("torch.")
    # The weights already loaded are handed to the harness's loader, which then loads none.
    spec = model_spec(config, draft_name)
    shared = {draft_name: (draft, fingerprint(spec, draft, Path(config["models"]["cache_dir"])))}
    loaded = load_pair(config, solo, dtype, device, (), shared)
    method = MethodChoice(name="vanilla", algorithm="vanilla", params=make_params("vanilla", {}))
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, path in prompts:
            records = read_prompts_jsonl(Path(path))
            raw = Path(tmp) / dataset / "T0.0-s0.jsonl"
            raw.parent.mkdir(parents=True)
            budget = config["datasets"][dataset]["max_new_tokens"]
            run_group(config, {solo: loaded}, [Member(solo, method)], records, raw, budget,
                      0.0, 0, dtype, warmup=0, progress=False)  # fmt: skip
            out[dataset] = _scores(tidy_table([raw], Path(config["data"]["dir"])))
            if on_dataset is not None:
                on_dataset(dataset, {k: out[dataset][k] for k in ("n", *SCORES)})
    return out


def _scores(frame: pd.DataFrame) -> dict:
    """Each score's mean over the questions, and each question's scores."""
    scores = frame.groupby("question_id")[list(SCORES)].mean()
    return {
        "n": int(len(scores)),
        **{k: _mean_or_none(scores[k]) for k in SCORES},
        "per_question": {
            str(q): {k: _or_none(v) for k, v in row.items()}
            for q, row in scores.to_dict("index").items()
        },
    }


def _mean_or_none(series: pd.Series) -> float | None:
    # A score no question has (EM on Spider, execution match on SQuAD) is null, not NaN, in JSON.
    values = series.dropna()
    return float(values.mean()) if len(values) else None


def _or_none(value: object) -> float | None:
    # NaN is the one value unequal to itself.
    return None if value is None or value != value else float(value)  # type: ignore[arg-type]
