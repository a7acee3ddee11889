"""Result files: one JSONL per timing group (the runs timed together, question by question),
a metadata line per run first, then one record per run and question.

A run is one (pair, method) at the group's dataset, temperature and seed; its records name it
by `pair` and `method` (member_key). Records are appended and flushed one by one into OUT.part;
a killed job resumes from it, and the file is renamed to OUT only when every question of every
run is done (so a workflow manager never mistakes a partial file for a result).
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


def member_key(record: dict) -> str:
    """The run a meta or question record belongs to."""
    return f"{record['pair']}/{record['method']}"


def read_records(path: Path) -> tuple[dict[str, dict], list[dict]]:
    """({run: meta}, question records) of a result file; a torn last line is ignored."""
    metas, records = {}, []
    for record in iter_lines(path):
        if record.get("record") == "meta":
            metas[member_key(record)] = record
        else:
            records.append(record)
    return metas, records


def iter_lines(path: Path) -> Iterator[dict]:
    with path.open() as f:
        for line in f:
            if not line.endswith("\n"):
                return  # torn write from a killed run
            if line.strip():
                yield json.loads(line)


class ResultWriter:
    """Appends records to OUT.part, resuming what a killed job left behind.

    `metas` has one metadata record per run (each with `pair` and `method`). The earlier file
    is resumed only when it holds the same runs with the same `identity_keys`; otherwise it is
    set aside (kept) and the group starts over.
    """

    def __init__(self, out: Path, metas: list[dict], identity_keys: tuple[str, ...]) -> None:
        self.out = out
        self.part = partial_path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists() and not self.part.exists():
            out.rename(self.part)
        self.done: set[tuple[str, str]] = set()  # (run, question_id)
        self.set_aside: Path | None = None
        new = {member_key(meta): meta for meta in metas}
        old: dict[str, dict] = {}
        if self.part.exists():
            self._truncate_torn_tail()
            old, records = read_records(self.part)
            changed = sorted(
                {
                    key
                    for run in new.keys() & old.keys()
                    for key in identity_keys
                    if old[run].get(key) != new[run].get(key)
                }
            )
            if old and old.keys() != new.keys():
                changed.append("runs")
            if changed:
                self.set_aside = self._set_aside(changed)
                old = {}
            else:
                self.done = {(member_key(r), str(r["question_id"])) for r in records}
        resuming = self.part.exists()
        self._file = self.part.open("a" if resuming else "w")
        if not old:
            for meta in metas:
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
        key = (member_key(record), str(record["question_id"]))
        if key in self.done:
            raise ResultsError(f"question {key[1]} of {key[0]} written twice to {self.part}")
        self._write(record)
        self.done.add(key)

    def finish(self) -> Path:
        self._file.close()
        self.part.rename(self.out)
        return self.out

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
