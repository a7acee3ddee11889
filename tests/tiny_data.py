"""Tiny benchmark files in the official formats and the mirror's layout (mtbench/, squad/,
spider/), for tests on a clone without the shared data mirror.

The Spider part mirrors the real gap: dev.json has questions on wta_1, whose database the
mirror lacks and the official archive holds (add_official_only_databases adds it).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

MTBENCH_QUESTIONS: list[dict[str, Any]] = [
    {"question_id": 1, "category": "writing", "turns": ["Write a haiku.", "Now a limerick."]},
    {
        "question_id": 2,
        "category": "math",
        "turns": ["What is 2+2?", "And 3+3?"],
        "reference": ["4", "6"],
    },
    {"question_id": 3, "category": "coding", "turns": ["Reverse a list.", "In C."]},
]

SQUAD: dict[str, Any] = {
    "version": "1.1",
    "data": [
        {
            "title": "Pebbles",
            "paragraphs": [
                {
                    "context": "Pebbles are small round stones found on the beach at Orwin.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "Where are pebbles found?",
                            "answers": [
                                {"answer_start": 40, "text": "on the beach at Orwin"},
                                {"answer_start": 47, "text": "beach at Orwin"},
                            ],
                        },
                        {
                            "id": "q2",
                            "question": "What shape are pebbles?",
                            "answers": [{"answer_start": 17, "text": "round"}],
                        },
                    ],
                }
            ],
        },
        {
            "title": "Kites",
            "paragraphs": [
                {
                    "context": "The red kite flew over the hill in 1999.",
                    "qas": [
                        {
                            "id": "q3",
                            "question": "When did the kite fly?",
                            "answers": [{"answer_start": 35, "text": "1999"}],
                        },
                    ],
                }
            ],
        },
    ],
}

# db_id -> tables {table: [(column, type), ...]}, primary keys [(table, col)], foreign keys
# [((table, col), (table, col))], rows {table: [...]}.
SPIDER_SCHEMAS: dict[str, dict[str, Any]] = {
    "concert_singer": {
        "tables": {
            "singer": [("singer_id", "number"), ("name", "text"), ("age", "number")],
            "concert": [("concert_id", "number"), ("concert_name", "text"), ("year", "number")],
            "singer_in_concert": [("concert_id", "number"), ("singer_id", "number")],
        },
        "primary_keys": [("singer", "singer_id"), ("concert", "concert_id")],
        "foreign_keys": [
            (("singer_in_concert", "singer_id"), ("singer", "singer_id")),
            (("singer_in_concert", "concert_id"), ("concert", "concert_id")),
        ],
        "rows": {
            "singer": [(1, "Ana", 31), (2, "Bo", 45)],
            "concert": [(1, "Spring", 2014), (2, "Autumn", 2015)],
            "singer_in_concert": [(1, 1), (2, 1)],
        },
    },
    "pets_1": {
        "tables": {"pets": [("pet_id", "number"), ("pet_type", "text"), ("weight", "number")]},
        "primary_keys": [("pets", "pet_id")],
        "foreign_keys": [],
        "rows": {"pets": [(1, "cat", 4.5), (2, "dog", 12.0), (3, "dog", 9.1)]},
    },
    # In dev.json and the official archive, not in the mirror (docs/data.md).
    "wta_1": {
        "tables": {
            "players": [("player_id", "number"), ("first_name", "text"), ("country_code", "text")]
        },
        "primary_keys": [("players", "player_id")],
        "foreign_keys": [],
        "rows": {"players": [(1, "Ada", "NZL"), (2, "Eve", "ARG")]},
    },
}

SQL_TYPES = {"number": "REAL", "text": "TEXT"}
MIRROR_DBS = ("concert_singer", "pets_1")
OFFICIAL_ONLY_DBS = ("wta_1",)

SPIDER_QUESTIONS: list[tuple[str, str, str]] = [
    ("concert_singer", "How many singers do we have?", "SELECT count(*) FROM singer"),
    ("wta_1", "How many players are there?", "SELECT count(*) FROM players"),
    (
        "concert_singer",
        "What are the names of singers who sang in a concert?",
        "SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 "
        "ON T1.singer_id = T2.singer_id",
    ),
    ("pets_1", "How many pets are there?", "SELECT count(*) FROM pets"),
    ("wta_1", "List the first names of all players.", "SELECT first_name FROM players"),
    ("concert_singer", "What is the average age of all singers?", "SELECT avg(age) FROM singer"),
    ("pets_1", "What is the weight of the heaviest pet?", "SELECT max(weight) FROM pets"),
    (
        "wta_1",
        "How many countries do players come from?",
        "SELECT count(DISTINCT country_code) FROM players",
    ),
    (
        "concert_singer",
        "List concert names ordered by year.",
        "SELECT concert_name FROM concert ORDER BY year",
    ),
    ("pets_1", "List all pet types.", "SELECT DISTINCT pet_type FROM pets"),
    ("concert_singer", "How many concerts are there?", "SELECT count(*) FROM concert"),
    ("pets_1", "How many dogs are there?", "SELECT count(*) FROM pets WHERE pet_type = 'dog'"),
]


def spider_dev() -> list[dict[str, Any]]:
    """dev.json entries with the official fields the harness reads (and the token lists)."""
    return [
        {
            "db_id": db,
            "query": query,
            "query_toks": query.split(),
            "question": question,
            "question_toks": question.split(),
        }
        for db, question, query in SPIDER_QUESTIONS
    ]


def spider_tables() -> list[dict[str, Any]]:
    """tables.json entries in the official layout (column 0 is the "*" pseudo-column)."""
    out = []
    for db, schema in SPIDER_SCHEMAS.items():
        tables = list(schema["tables"])
        columns: list[list[Any]] = [[-1, "*"]]
        types = ["text"]
        index: dict[tuple[str, str], int] = {}
        for t_idx, (table, cols) in enumerate(schema["tables"].items()):
            for col, typ in cols:
                index[(table, col)] = len(columns)
                columns.append([t_idx, col])
                types.append(typ)
        out.append(
            {
                "db_id": db,
                "table_names": [t.replace("_", " ") for t in tables],
                "table_names_original": tables,
                "column_names": [[t, c.replace("_", " ")] for t, c in columns],
                "column_names_original": columns,
                "column_types": types,
                "primary_keys": [index[k] for k in schema["primary_keys"]],
                "foreign_keys": [[index[a], index[b]] for a, b in schema["foreign_keys"]],
            }
        )
    return out


def make_spider_db(path: Path, db_id: str) -> Path:
    """A small sqlite database with db_id's tables and rows."""
    schema = SPIDER_SCHEMAS[db_id]
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    try:
        for table, cols in schema["tables"].items():
            defs = ", ".join(f"{c} {SQL_TYPES[t]}" for c, t in cols)
            con.execute(f"CREATE TABLE {table} ({defs})")
            rows = schema["rows"].get(table, [])
            if rows:
                marks = ", ".join("?" * len(cols))
                con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        con.commit()
    finally:
        con.close()
    return path


def spider_db_file(root: Path, db_id: str) -> Path:
    return root / "spider" / "database" / db_id / f"{db_id}.sqlite"


def build_tiny_mirror(root: Path) -> Path:
    """Write the tiny dataset files under root, laid out like the shared data mirror."""
    (root / "mtbench").mkdir(parents=True, exist_ok=True)
    (root / "mtbench" / "question.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in MTBENCH_QUESTIONS), encoding="utf-8"
    )
    (root / "squad").mkdir(exist_ok=True)
    (root / "squad" / "dev-v1.1.json").write_text(json.dumps(SQUAD), encoding="utf-8")
    (root / "spider").mkdir(exist_ok=True)
    (root / "spider" / "dev.json").write_text(json.dumps(spider_dev(), indent=1), encoding="utf-8")
    (root / "spider" / "tables.json").write_text(json.dumps(spider_tables()), encoding="utf-8")
    for db in MIRROR_DBS:
        make_spider_db(spider_db_file(root, db), db)
    return root


def add_official_only_databases(root: Path) -> None:
    """Add the databases the official archive has beyond the mirror (wta_1)."""
    for db in OFFICIAL_ONLY_DBS:
        make_spider_db(spider_db_file(root, db), db)
