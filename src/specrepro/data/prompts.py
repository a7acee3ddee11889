"""Prompt records by dataset: loading, seeded subsets (evaluated, tuning, training) and JSONL
I/O. The record itself is data/record.py's."""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from specrepro.answers import ANSWER_FORMATS, check_format
from specrepro.data.fetch import DataError
from specrepro.data.manifest import DATASET_NAMES
from specrepro.data.mtbench import load_mtbench
from specrepro.data.record import PromptRecord, make_record, record_key
from specrepro.data.spider import load_spider
from specrepro.data.squad import load_squad
from specrepro.data.subsample import complement, subsample
from specrepro.prompting import CONVERSATIONS

_LOADERS: dict[str, Callable[[Path], list[PromptRecord]]] = {
    "mtbench": load_mtbench,
    "squad": load_squad,
    "spider": load_spider,
}


def load_records(dataset: str, data_dir: Path) -> list[PromptRecord]:
    """Every prompt record of a dataset, in file order (Spider: only available databases)."""
    if dataset not in _LOADERS:
        raise DataError(f"unknown dataset {dataset!r}; valid names: {', '.join(DATASET_NAMES)}")
    return _LOADERS[dataset](Path(data_dir))


def load_prompts(dataset: str, data_dir: Path, n: int | None, seed: int) -> list[PromptRecord]:
    """The evaluated prompts: a seeded subsample of n records (None: all), in file order."""
    return subsample(load_records(dataset, data_dir), n, seed)


# The tuning questions' draw has its own seed, apart from the evaluated subsample's.
TUNING_SEED_OFFSET = 7919


def _tuning(records: list[PromptRecord], n_eval: int | None, seed: int, n_tune: int) -> list:
    rest = complement(records, subsample(records, n_eval, seed))
    return subsample(rest, n_tune, seed + TUNING_SEED_OFFSET) if n_tune else []


def load_tuning_prompts(
    dataset: str, data_dir: Path, n_eval: int | None, seed: int, n_tune: int
) -> list[PromptRecord]:
    """Questions to choose settings on (tree sizes, thresholds, a draft's lookahead): n_tune
    records that are never evaluated (outside load_prompts' subsample of n_eval) and that no
    student trains on (load_training_prompts leaves them out), in file order."""
    return _tuning(load_records(dataset, data_dir), n_eval, seed, n_tune)


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
) -> list[PromptRecord]:
    """Up to n_train prompts for training drafts, none of them an evaluated or a tuning question.

    For each dataset the evaluated subsample is load_prompts(dataset, data_dir, n_eval[d],
    seed) and the tuning questions load_tuning_prompts(..., n_tune[d]); training prompts come
    from the rest. n_train is split evenly over the datasets (a small pool gives its share to
    the others), then the mix is shuffled by train_seed.
    """
    if n_train < 0:
        raise ValueError(f"n_train must be >= 0, got {n_train}")
    pools: dict[str, list[PromptRecord]] = {}
    for d in dict.fromkeys(datasets):
        if d not in n_eval:
            raise DataError(f"n_eval has no entry for dataset {d!r} (use None for all)")
        records = load_records(d, data_dir)
        held_out = subsample(records, n_eval[d], seed)
        held_out += _tuning(records, n_eval[d], seed, (n_tune or {}).get(d, 0))
        pools[d] = complement(records, held_out)
    quotas = _quotas({d: len(p) for d, p in pools.items()}, n_train)
    chosen = [r for d, p in pools.items() for r in subsample(p, quotas[d], train_seed)]
    chosen.sort(key=record_key)
    random.Random(train_seed).shuffle(chosen)
    return chosen


def write_jsonl(records: Iterable[dict[str, Any]], path: Path) -> None:
    """Write one JSON object per line, atomically (temp file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _is_str_list(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(s, str) for s in x)


def normalize_record(raw: Any) -> PromptRecord:
    """Validate a parsed record and fill missing optional fields; ValueError if invalid.

    A plain MT-bench line ({question_id, category, turns, reference: [..]}) is accepted: its
    category and reference list move into the reference dict.
    """
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    qid = raw.get("question_id")
    if isinstance(qid, bool) or not isinstance(qid, str | int) or qid == "":
        raise ValueError(f"question_id must be a non-empty string or an int, got {qid!r}")
    turns = raw.get("turns")
    if not _is_str_list(turns) or not turns:
        raise ValueError("turns must be a non-empty list of strings")
    few_shot = raw.get("few_shot") or []
    if not isinstance(few_shot, list) or not all(
        isinstance(s, dict)
        and isinstance(s.get("user"), str)
        and isinstance(s.get("assistant"), str)
        for s in few_shot
    ):
        raise ValueError("few_shot must be a list of {user: str, assistant: str}")
    system = raw.get("system")
    if system is not None and not isinstance(system, str):
        raise ValueError("system must be a string or null")
    # Older prompt files said single_line: true for what is now answer_format "line".
    legacy = "line" if raw.get("single_line") is True else "free"
    answer_format = raw.get("answer_format", legacy)
    if not isinstance(answer_format, str):
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}")
    check_format(answer_format)
    dataset = raw.get("dataset", "mtbench")
    if not isinstance(dataset, str):
        raise ValueError("dataset must be a string")
    reference = raw.get("reference")
    if not isinstance(reference, dict):
        reference = {"category": raw.get("category"), "reference": reference}
    conversation = raw.get("conversation")
    if conversation is not None and conversation not in CONVERSATIONS:
        raise ValueError(f"conversation must be null or one of {CONVERSATIONS}")
    return make_record(
        qid, dataset, turns, few_shot, system, answer_format, reference, conversation
    )


def read_prompts_jsonl(path: Path) -> list[PromptRecord]:
    """Read prompt records (or a plain MT-bench question.jsonl); DataError names file:line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read prompts file {path}: {exc}") from exc
    records: list[PromptRecord] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = normalize_record(json.loads(line))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise DataError(f"{path}:{lineno}: invalid prompt record: {exc}") from exc
        key = record_key(record)
        if key in seen:
            raise DataError(f"{path}:{lineno}: duplicate question_id {record['question_id']!r}")
        seen.add(key)
        records.append(record)
    return records
