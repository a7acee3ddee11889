"""What the plan knows of a dataset: its kind, the file a `jsonl` dataset reads, and its size.

A dataset is one of the built-in benchmarks (its kind is its name) or a dataset of one's own,
`kind: jsonl`, whose prompt records are a JSON Lines file at `path` (docs/data.md). Plain Python,
like the rest of this package: the Snakefile imports it by path.
"""

from __future__ import annotations

import json
import re

from .names import PlanError

BUILTIN_DATASETS = ("mtbench", "squad", "spider")
JSONL = "jsonl"
KINDS = (*BUILTIN_DATASETS, JSONL)
# A dataset's name is a folder under data.dir, part of result file names and a Snakemake
# wildcard value: lowercase letters, digits and "_" only, a letter first.
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
# Questions of a whole built-in set (datasets.NAME.n null): MT-bench 80, SQuAD v1.1 dev,
# Spider dev; and their turns (MT-bench's second turn follows the first's answer).
FULL_SIZES = {"mtbench": 80, "squad": 10570, "spider": 1034}
TURNS = {"mtbench": 2}


def dataset_kind(name: str, entry: dict) -> str:
    """The entry's `kind`; a built-in name's kind is that name when it gives none."""
    kind = entry.get("kind")
    if kind is None:
        return name if name in BUILTIN_DATASETS else ""
    return kind


def check_datasets(config: dict) -> None:
    """PlanError naming the first malformed `datasets` entry: a name unsafe in file names and
    wildcards, an unknown kind, a built-in kind under another name, a `jsonl` entry without
    `path`, or a `path` on a built-in. (The scorer's name is the schema's and the library's.)"""
    datasets = config.get("datasets") or {}
    check_dataset_names(datasets)
    for name, entry in datasets.items():
        if entry is not None:
            _check_entry(name, entry)


def check_dataset_names(datasets: dict) -> None:
    """PlanError for a dataset name unsafe in file names and wildcards."""
    for name in datasets:
        if not re.match(NAME_PATTERN, str(name)):
            raise PlanError(
                f"datasets.{name}: a dataset name must match {NAME_PATTERN} (a lowercase "
                "letter, then lowercase letters, digits or _): it names folders, result files "
                "and Snakemake wildcards"
            )


def _check_entry(name: str, entry: dict) -> None:
    where = f"datasets.{name}"
    kind = dataset_kind(name, entry)
    if not kind:
        raise PlanError(
            f"{where}: not a built-in dataset ({', '.join(BUILTIN_DATASETS)}); a dataset of "
            "your own is `kind: jsonl` with the `path` of its JSON Lines file"
        )
    if kind not in KINDS:
        raise PlanError(f"{where}: unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    if kind in BUILTIN_DATASETS and kind != name:
        raise PlanError(
            f"{where}: kind {kind!r} is the built-in dataset named {kind!r} only; a dataset "
            "of your own is `kind: jsonl`"
        )
    if kind == JSONL and name in BUILTIN_DATASETS:
        raise PlanError(
            f"{where}: {name!r} is a built-in dataset's name; name your jsonl dataset otherwise"
        )
    if kind == JSONL and not entry.get("path"):
        raise PlanError(
            f"{where}: kind jsonl needs `path`, the JSON Lines file of its prompt records "
            "(relative to the working directory, or absolute)"
        )
    if kind != JSONL and "path" in entry:
        raise PlanError(
            f"{where}: `path` is for kind jsonl only; the built-in {name} is fetched into "
            "data.dir (from data.mirror, or downloaded)"
        )


def dataset_path(config: dict, name: str) -> str | None:
    """The file a `jsonl` dataset reads, as configured; None for a built-in dataset."""
    entry = config["datasets"][name]
    return entry["path"] if dataset_kind(name, entry) == JSONL else None


def dataset_files(config: dict, name: str) -> list[str]:
    """The files of the working directory that fetching the dataset reads (rule fetch_data's
    input): a `jsonl` dataset's file, so that editing it reruns what it feeds."""
    path = dataset_path(config, name) if name in config.get("datasets", {}) else None
    return [path] if path else []


def dataset_entries(config: dict, name: str) -> dict:
    """A `jsonl` dataset's entries that the jobs reading its records depend on: its kind, its
    file and its scorer (which checks the records). None for a built-in: their jobs' entries
    stay as they were."""
    entry = config["datasets"].get(name) or {}
    if dataset_kind(name, entry) != JSONL:
        return {}
    return {f"datasets.{name}.{k}": entry[k] for k in ("kind", "path", "scorer") if k in entry}


def scorer_entries(config: dict) -> dict:
    """Every `scorer` a datasets entry states (the tidy table's scores follow them)."""
    return {
        f"datasets.{name}.scorer": entry["scorer"]
        for name, entry in config["datasets"].items()
        if entry and "scorer" in entry
    }


def jsonl_facts(path: str) -> tuple[int, int] | None:
    """(records, most turns of one record) of a JSON Lines file of prompt records; None when it
    cannot be read or parsed (the fetch step says why)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        turns = [len(json.loads(line).get("turns") or []) for line in lines]
    except (OSError, ValueError, AttributeError):
        return None
    return len(lines), max(turns, default=1)


def full_size(config: dict, name: str) -> int | None:
    """Questions in the whole dataset: a built-in's known size, a `jsonl` file's record count
    (None when the file cannot be read)."""
    path = dataset_path(config, name)
    if path is None:
        return FULL_SIZES[name]
    facts = jsonl_facts(path)
    return None if facts is None else facts[0]


def dataset_turns(config: dict, name: str) -> int | None:
    """Turns a question generates at most: 2 on MT-bench, 1 on the other built-ins, a `jsonl`
    file's longest record (None when the file cannot be read)."""
    path = dataset_path(config, name)
    if path is None:
        return TURNS.get(name, 1)
    facts = jsonl_facts(path)
    return None if facts is None else facts[1]
