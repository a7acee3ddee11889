"""MT-bench: 80 two-turn questions from question.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from specrepro.data.fetch import DataError
from specrepro.data.record import PromptRecord, make_record

MTBENCH_FILE = "mtbench/question.jsonl"


def load_mtbench(data_dir: Path) -> list[PromptRecord]:
    """One record per question; turns are the user messages (turn 2 follows turn 1's answer)."""
    path = Path(data_dir) / MTBENCH_FILE
    if not path.is_file():
        raise DataError(f"mtbench: {MTBENCH_FILE} not found in {data_dir}; fetch the data first")
    records: list[PromptRecord] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
            qid, category, turns = q["question_id"], q["category"], q["turns"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"mtbench: {path}:{lineno}: malformed question: {exc!r}") from exc
        if not turns or not all(isinstance(t, str) for t in turns):
            raise DataError(f"mtbench: {path}:{lineno}: turns must be a non-empty list of str")
        reference = {"category": category, "reference": q.get("reference")}
        records.append(make_record(qid, "mtbench", turns, reference=reference))
    return records
