"""Prompt records as JSON Lines: reading and writing them, and datasets of one's own.

A dataset of one's own (`kind: jsonl`, docs/data.md#your-own-dataset) is a JSON Lines file of
prompt records read in place: nothing is fetched. Its fetch step checks that the file parses
and that every record has what its scorer needs, and writes data.dir/NAME/fetch_record.json
with the file's sha256 like the built-in datasets' records; the record also names the file, so
a command given only the data folder (not the config) finds it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from specrepro.answers import ANSWER_FORMATS, check_format
from specrepro.data.fetch import RECORD_NAME, DataError, sha256_file
from specrepro.data.record import PromptRecord, make_record, record_key
from specrepro.metrics.scorers import Scorer, dataset_scorer
from specrepro.planning import PlanError, check_datasets
from specrepro.planning.datasets import JSONL
from specrepro.prompting import CONVERSATIONS

# The fetch record's status of a file read where it lies (the built-ins' are fetched/present).
IN_PLACE = "read in place"


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


def _numbered_records(path: Path) -> list[tuple[int, PromptRecord]]:
    """(line number, record) of every non-blank line; DataError names file:line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read prompts file {path}: {exc}") from exc
    records = []
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            try:
                records.append((lineno, normalize_record(json.loads(line))))
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                raise DataError(f"{path}:{lineno}: invalid prompt record: {exc}") from exc
    return records


def read_prompts_jsonl(path: Path) -> list[PromptRecord]:
    """Read prompt records (or a plain MT-bench question.jsonl); DataError names file:line."""
    path = Path(path)
    records: list[PromptRecord] = []
    seen: set[str] = set()
    for lineno, record in _numbered_records(path):
        key = record_key(record)
        if key in seen:
            raise DataError(f"{path}:{lineno}: duplicate question_id {record['question_id']!r}")
        seen.add(key)
        records.append(record)
    return records


# -- datasets of one's own -------------------------------------------------------------------


def jsonl_source(name: str, entry: Mapping[str, Any]) -> tuple[Path, Scorer]:
    """The file and scorer of a `kind: jsonl` config entry; DataError when it is malformed."""
    try:
        check_datasets({"datasets": {name: dict(entry)}})
        scorer = dataset_scorer(name, dict(entry))
    except (PlanError, ValueError) as exc:
        raise DataError(str(exc)) from exc
    return Path(entry["path"]), scorer


def load_jsonl_dataset(name: str, path: Path, scorer: Scorer) -> list[PromptRecord]:
    """Every record of the file, in file order, its `dataset` set to `name`. DataError naming
    the file (and line) when it is missing, a line is not a prompt record, a question_id
    repeats, or a record lacks what the scorer needs (reference.answers)."""
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() else f", relative to the working directory {Path.cwd()}"
        raise DataError(f"{name}: the file {path} (datasets.{name}.path{where}) does not exist")
    records: list[PromptRecord] = []
    seen: set[str] = set()
    for lineno, record in _numbered_records(path):
        record["dataset"] = name  # a fresh dict from normalize_record
        if record["question_id"] in seen:
            raise DataError(f"{path}:{lineno}: duplicate question_id {record['question_id']!r}")
        seen.add(record["question_id"])
        why = scorer.missing(record["reference"])
        if why is not None:
            raise DataError(f"{path}:{lineno}: question {record['question_id']!r}: {why}")
        records.append(record)
    if not records:
        raise DataError(f"{name}: {path} holds no prompt records")
    return records


def fetch_jsonl_dataset(name: str, entry: Mapping[str, Any], dest: Path) -> Path:
    """Check the dataset's file (load_jsonl_dataset) and write dest/NAME/fetch_record.json with
    its sha256, its source and its record count; return dest/NAME. Nothing is copied."""
    path, scorer = jsonl_source(name, entry)
    records = load_jsonl_dataset(name, path, scorer)
    root = Path(dest) / name
    record = {
        "files": {
            str(path): {
                "sha256": sha256_file(path),
                "source": str(path.resolve()),
                "status": IN_PLACE,
                "records": len(records),
            }
        },
        "kind": JSONL,
        "path": str(path),
        "scorer": scorer.name,
    }
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".fetch-", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, root / RECORD_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return root


def recorded_jsonl(data_dir: Path, name: str) -> dict[str, str] | None:
    """The jsonl dataset entry ({kind, path, scorer}) a fetch record in data_dir/NAME names,
    or None when there is none (or it is a built-in dataset's)."""
    path = Path(data_dir) / name / RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"unreadable fetch record {path}: {exc}") from exc
    if not isinstance(record, dict) or record.get("kind") != JSONL:
        return None
    return {k: record[k] for k in ("kind", "path", "scorer")}


def verify_jsonl_dataset(name: str, entry: Mapping[str, Any], data_dir: Path) -> None:
    """DataError unless the file loads and is the one its fetch record hashed."""
    path, scorer = jsonl_source(name, entry)
    load_jsonl_dataset(name, path, scorer)
    record = Path(data_dir) / name / RECORD_NAME
    files = json.loads(record.read_text(encoding="utf-8"))["files"] if record.is_file() else {}
    recorded = files.get(str(path), {}).get("sha256")
    if recorded is None:
        raise DataError(f"{name}: no fetch record for {path} in {record}; run fetch-data")
    if recorded != (got := sha256_file(path)):
        raise DataError(
            f"{name}: {path} changed since it was checked (sha256 {recorded}, now {got}); "
            "run fetch-data again"
        )
