"""Prompt records by dataset: loading and seeded subsets (evaluated, tuning, training). The
record itself is data/record.py's; JSON Lines I/O and datasets of one's own, data/jsonl.py's."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from specrepro.data.fetch import DataError
from specrepro.data.jsonl import JSONL, jsonl_source, load_jsonl_dataset, recorded_jsonl
from specrepro.data.manifest import DATASET_NAMES
from specrepro.data.mtbench import load_mtbench
from specrepro.data.record import PromptRecord, record_key
from specrepro.data.spider import load_spider
from specrepro.data.squad import load_squad
from specrepro.data.subsample import complement, subsample

_LOADERS: dict[str, Callable[[Path], list[PromptRecord]]] = {
    "mtbench": load_mtbench,
    "squad": load_squad,
    "spider": load_spider,
}


# A dataset's config entry (datasets.NAME): its kind, and a jsonl dataset's path and scorer.
Entry = Mapping[str, Any]


def load_records(dataset: str, data_dir: Path, entry: Entry | None = None) -> list[PromptRecord]:
    """Every prompt record of a dataset, in file order (Spider: only available databases).

    `entry` is the dataset's config entry: a `kind: jsonl` one reads its own file. Without
    one, a built-in name reads its files in data_dir, and another name the jsonl file that its
    fetch record in data_dir names (what a command given no config entry reads)."""
    if entry is not None and entry.get("kind") == JSONL:
        return load_jsonl_dataset(dataset, *jsonl_source(dataset, entry))
    if dataset in _LOADERS:
        return _LOADERS[dataset](Path(data_dir))
    recorded = recorded_jsonl(Path(data_dir), dataset)
    if recorded is not None:
        return load_jsonl_dataset(dataset, *jsonl_source(dataset, recorded))
    raise DataError(
        f"unknown dataset {dataset!r}; valid names: {', '.join(DATASET_NAMES)}, or a dataset "
        f"of your own (kind: jsonl, with its path) fetched into {data_dir}"
    )


def load_prompts(
    dataset: str, data_dir: Path, n: int | None, seed: int, entry: Entry | None = None
) -> list[PromptRecord]:
    """The evaluated prompts: a seeded subsample of n records (None: all), in file order."""
    return subsample(load_records(dataset, data_dir, entry), n, seed)


# The tuning questions' draw has its own seed, apart from the evaluated subsample's.
TUNING_SEED_OFFSET = 7919


def _tuning(records: list[PromptRecord], n_eval: int | None, seed: int, n_tune: int) -> list:
    rest = complement(records, subsample(records, n_eval, seed))
    return subsample(rest, n_tune, seed + TUNING_SEED_OFFSET) if n_tune else []


def load_tuning_prompts(
    dataset: str,
    data_dir: Path,
    n_eval: int | None,
    seed: int,
    n_tune: int,
    entry: Entry | None = None,
) -> list[PromptRecord]:
    """Questions to choose settings on (tree sizes, thresholds, a draft's lookahead): n_tune
    records that are never evaluated (outside load_prompts' subsample of n_eval) and that no
    student trains on (load_training_prompts leaves them out), in file order."""
    return _tuning(load_records(dataset, data_dir, entry), n_eval, seed, n_tune)


def _quotas(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Split n as evenly as possible over datasets, capped by each pool's size."""
    quotas = dict.fromkeys(sizes, 0)
    remaining = min(n, sum(sizes.values()))
    while remaining > 0:
        open_ = [d for d in sorted(sizes) if quotas[d] < sizes[d]]
        share, extra = divmod(remaining, len(open_))
        for i, d in enumerate(open_):
            give = min(sizes[d] - quotas[d], share + (1 if i < extra else 0))
            quotas[d] += give
            remaining -= give
    return quotas


def load_training_prompts(
    datasets: list[str],
    data_dir: Path,
    n_eval: dict[str, int | None],
    seed: int,
    n_train: int,
    train_seed: int,
    n_tune: dict[str, int] | None = None,
    entries: Mapping[str, Entry] | None = None,
) -> list[PromptRecord]:
    """Up to n_train prompts for training drafts, none of them an evaluated or a tuning question.

    For each dataset the evaluated subsample is load_prompts(dataset, data_dir, n_eval[d],
    seed) and the tuning questions load_tuning_prompts(..., n_tune[d]); training prompts come
    from the rest. n_train is split evenly over the datasets (a small pool gives its share to
    the others), then the mix is shuffled by train_seed. `entries` are the datasets' config
    entries (load_records: a jsonl dataset's file).
    """
    if n_train < 0:
        raise ValueError(f"n_train must be >= 0, got {n_train}")
    pools: dict[str, list[PromptRecord]] = {}
    for d in dict.fromkeys(datasets):
        if d not in n_eval:
            raise DataError(f"n_eval has no entry for dataset {d!r} (use None for all)")
        records = load_records(d, data_dir, (entries or {}).get(d))
        held_out = subsample(records, n_eval[d], seed)
        held_out += _tuning(records, n_eval[d], seed, (n_tune or {}).get(d, 0))
        pools[d] = complement(records, held_out)
    quotas = _quotas({d: len(p) for d, p in pools.items()}, n_train)
    chosen = [r for d, p in pools.items() for r in subsample(p, quotas[d], train_seed)]
    chosen.sort(key=record_key)
    random.Random(train_seed).shuffle(chosen)
    return chosen
