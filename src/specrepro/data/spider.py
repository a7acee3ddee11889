"""Spider dev: text-to-SQL over a pinned set of databases (manifest.SPIDER_SAMPLE_DBS)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from specrepro.data.fetch import DataError
from specrepro.data.manifest import SPIDER_SAMPLE_DBS, spider_sqlite_path
from specrepro.data.record import PromptRecord, make_record

SPIDER_DEV_FILE = "spider/dev.json"
SPIDER_TABLES_FILE = "spider/tables.json"
SPIDER_INSTRUCTION = "Write one SQLite query on one line that answers the question."


def spider_db_path(data_dir: Path, db_id: str) -> Path:
    """Where the sqlite file of a Spider database lives in a data folder."""
    return Path(data_dir) / spider_sqlite_path(db_id)


def spider_db_available(data_dir: Path, db_id: str) -> bool:
    # A zero-byte file is what sqlite3.connect leaves behind for a missing database; an empty
    # database would make empty predictions count as correct, so it counts as missing.
    path = spider_db_path(data_dir, db_id)
    return path.is_file() and path.stat().st_size > 0


def _read_json(data_dir: Path, rel: str) -> Any:
    path = Path(data_dir) / rel
    if not path.is_file():
        raise DataError(f"spider: {rel} not found in {data_dir}; fetch the data first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"spider: malformed {path}: {exc}") from exc


def render_schema(table: dict[str, Any]) -> str:
    """One line per table `name(col, ...)` then one line per foreign key `t1.c = t2.c`."""
    tables: list[str] = table["table_names_original"]
    columns: list[list[Any]] = table["column_names_original"]
    per_table: list[list[str]] = [[] for _ in tables]
    for t_idx, col in columns:
        if t_idx >= 0:  # index -1 is the "*" pseudo-column
            per_table[t_idx].append(col)
    lines = [f"{t}({', '.join(cols)})" for t, cols in zip(tables, per_table, strict=True)]
    fks = []
    for a, b in table["foreign_keys"]:
        (ta, ca), (tb, cb) = columns[a], columns[b]
        fks.append(f"{tables[ta]}.{ca} = {tables[tb]}.{cb}")
    if fks:
        lines += ["Foreign keys:", *fks]
    return "\n".join(lines)


def spider_user_message(schema: str, question: str) -> str:
    return f"SQLite database schema:\n{schema}\nQuestion: {question.strip()}\n{SPIDER_INSTRUCTION}"


def _drawn(data_dir: Path, db_id: str) -> bool:
    """Whether questions on db_id are in the universe the evaluated sample is drawn from."""
    return db_id in SPIDER_SAMPLE_DBS and spider_db_available(data_dir, db_id)


def spider_coverage(data_dir: Path) -> dict[str, Any]:
    """How many dev questions can be drawn: n_total, n_available, skipped (per database).

    Skipped are the databases missing here and those outside the pinned universe (wta_1, even
    when the official archive supplied it), so the mirror and the archive report the same.
    """
    dev = _read_json(data_dir, SPIDER_DEV_FILE)
    counts = Counter(ex["db_id"] for ex in dev)
    skipped = {db: c for db, c in sorted(counts.items()) if not _drawn(data_dir, db)}
    return {
        "n_total": len(dev),
        "n_available": len(dev) - sum(skipped.values()),
        "skipped": skipped,
    }


def load_spider(data_dir: Path) -> list[PromptRecord]:
    """Records for the dev questions on the pinned databases present here, in dev.json order.

    question_id is "spider-<index in dev.json>"; dev.json is pinned by its sha256 and the same
    file in the mirror and the official archive, so ids, and the seeded sample drawn from them,
    do not depend on where the data came from.
    """
    dev = _read_json(data_dir, SPIDER_DEV_FILE)
    tables = {t["db_id"]: t for t in _read_json(data_dir, SPIDER_TABLES_FILE)}
    drawn = {db: _drawn(data_dir, db) for db in {ex["db_id"] for ex in dev}}
    schemas: dict[str, str] = {}
    records: list[PromptRecord] = []
    for i, ex in enumerate(dev):
        db = ex["db_id"]
        if not drawn[db]:
            continue
        if db not in schemas:
            if db not in tables:
                raise DataError(f"spider: database {db!r} has no schema in {SPIDER_TABLES_FILE}")
            schemas[db] = render_schema(tables[db])
        records.append(
            make_record(
                f"spider-{i}",
                "spider",
                [spider_user_message(schemas[db], ex["question"])],
                answer_format="sql",
                reference={"db_id": db, "gold_sql": ex["query"]},
            )
        )
    return records
