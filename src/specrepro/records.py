"""Result files: one JSONL per run, a metadata line first, one record per question after it.

Records are appended and flushed one by one into OUT.part; a killed run resumes from it, and the
file is renamed to OUT only when every question is done (so a workflow manager never mistakes
a partial file for a result).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path


class ResultsError(RuntimeError):
    pass


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".part")


def read_records(path: Path) -> tuple[dict | None, list[dict]]:
    """(meta, question records) of a result file; a torn last line is ignored."""
    meta, records = None, []
    for record in iter_lines(path):
        if record.get("record") == "meta":
            meta = record
        else:
            records.append(record)
    return meta, records


def iter_lines(path: Path) -> Iterator[dict]:
    with path.open() as f:
        for line in f:
            if not line.endswith("\n"):
                return  # torn write from a killed run
            if line.strip():
                yield json.loads(line)


class ResultWriter:
    """Appends records to OUT.part, resuming what a killed run left behind."""

    def __init__(self, out: Path, meta: dict, identity_keys: tuple[str, ...]) -> None:
        self.out = out
        self.part = partial_path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists() and not self.part.exists():
            out.rename(self.part)
        self.done: set[str] = set()
        self.set_aside: Path | None = None
        old_meta: dict | None = None
        if self.part.exists():
            self._truncate_torn_tail()
            old_meta, records = read_records(self.part)
            changed = [
                key for key in identity_keys if old_meta and old_meta.get(key) != meta.get(key)
            ]
            if changed:
                self.set_aside = self._set_aside(changed)
            else:
                self.done = {str(r["question_id"]) for r in records}
        resuming = self.part.exists()
        self._file = self.part.open("a" if resuming else "w")
        if not resuming or old_meta is None:
            self._write(meta)

    def _set_aside(self, changed: list[str]) -> Path:
        """Move an earlier run's file out of the way (kept, never deleted) and say why."""
        k = 1
        while (stale := self.out.with_name(f"{self.out.name}.stale{k}")).exists():
            k += 1
        self.part.rename(stale)
        print(
            f"{self.out}: the earlier results differ in {', '.join(changed)}; starting over "
            f"(earlier records kept in {stale})",
            file=sys.stderr,
        )
        return stale

    def _truncate_torn_tail(self) -> None:
        data = self.part.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with self.part.open("r+b") as f:
                f.truncate(end)

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def append(self, record: dict) -> None:
        qid = str(record["question_id"])
        if qid in self.done:
            raise ResultsError(f"question {qid} written twice to {self.part}")
        self._write(record)
        self.done.add(qid)

    def finish(self) -> Path:
        self._file.close()
        self.part.rename(self.out)
        return self.out

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
