"""Tests for SQuAD EM/F1, Spider execution accuracy and speed metrics."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from specrepro.answers import answer_text
from specrepro.metrics.speed import (
    bootstrap_ci,
    paired_speedup_ci,
    speedup_mean_of_ratios,
    speedup_ratio_of_mean_tps,
    speedup_ratio_of_totals,
    tau,
    tokens_per_second,
)
from specrepro.metrics.spider import (
    MAX_VALUE_BYTES,
    ExecResult,
    execution_match,
    has_top_level_order_by,
)
from specrepro.metrics.squad import exact_match, f1, normalize_answer

# --- SQuAD -------------------------------------------------------------------------------


def test_normalize_answer() -> None:
    assert normalize_answer("  The  Quick, brown FOX! ") == "quick brown fox"
    # Articles only as whole words: "theory" and "an" inside "banana" survive.
    assert normalize_answer("A theory of an banana") == "theory of banana"


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("the Eiffel Tower", ["Eiffel Tower"], 1.0),
        ("Eiffel tower.", ["The Eiffel Tower"], 1.0),
        ("EIFFEL TOWER", ["eiffel tower"], 1.0),
        ("Paris", ["London", "paris"], 1.0),
        ("Paris, France", ["Paris"], 0.0),
        ("", ["Paris"], 0.0),
    ],
)
def test_exact_match(prediction: str, golds: list[str], expected: float) -> None:
    assert exact_match(prediction, golds) == expected


def test_f1_hand_computed() -> None:
    # pred tokens [quick, brown, fox, jumps], gold [quick, red, fox]: 2 common,
    # P = 2/4, R = 2/3, F1 = 2*(1/2)*(2/3)/(1/2+2/3) = 4/7.
    assert f1("The quick brown fox jumps", ["a quick red fox"]) == pytest.approx(4 / 7)
    assert f1("Paris", ["London"]) == 0.0
    assert f1("the", ["a"]) == 0.0  # both normalise to empty: official rule gives 0
    assert f1("Denver Broncos", ["Broncos", "Denver Broncos"]) == 1.0
    # Counts clip: pred [a1, a1] vs gold [a1] share one token: P = 1/2, R = 1, F1 = 2/3.
    assert f1("x x", ["x"]) == pytest.approx(2 / 3)


def test_empty_golds_raise() -> None:
    with pytest.raises(ValueError):
        exact_match("x", [])
    with pytest.raises(ValueError):
        f1("x", [])


def test_squad_answer_is_the_first_content_line() -> None:
    def first_line(text: str) -> str:
        return answer_text(text, "line")

    assert first_line("\n\n  Denver Broncos  \nQuestion: next") == "Denver Broncos"
    assert first_line("Answer: 1066\nmore") == "1066"
    assert first_line("answer:\n  Paris") == "Paris"
    assert first_line("```\nParis\n```") == "Paris"
    assert first_line("   \n") == ""


# --- Spider ------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, country TEXT);
        INSERT INTO singer VALUES (1, 'Ann', 30, 'FR'), (2, 'Bob', 25, 'US'),
                                  (3, 'Cid', 41, 'FR'), (4, 'Dee', 25, 'DE');
        CREATE TABLE nums (v INTEGER);
        INSERT INTO nums VALUES (1), (1), (2), (2);
        """
    )
    # Latin-1 bytes stored as TEXT, as in a few real Spider databases.
    conn.execute("INSERT INTO singer VALUES (5, CAST(X'436166E9' AS TEXT), 50, 'XX')")
    conn.commit()
    conn.close()
    return path


def extract_sql(text: str) -> str:
    return answer_text(text, "sql")


def test_extract_sql() -> None:
    assert extract_sql("SELECT name FROM singer;\nExplanation: ...") == "SELECT name FROM singer"
    assert extract_sql("```sql\nSELECT 1;\n```") == "SELECT 1"
    assert extract_sql("```\nSELECT 2\n```") == "SELECT 2"
    assert extract_sql("SQL: SELECT 3") == "SELECT 3"
    assert extract_sql("Query: ```sql SELECT 4;```") == "SELECT 4"
    assert extract_sql("```SELECT 5```") == "SELECT 5"
    assert extract_sql("\n\n") == ""
    # A statement may span lines; it ends at ';', a closing fence or a blank line.
    assert extract_sql("```sql\nSELECT name\nFROM singer\n```\nmore") == "SELECT name FROM singer"
    assert extract_sql("SELECT name\nFROM singer\n\nThis query ...") == "SELECT name FROM singer"
    assert extract_sql("SELECT 'a;b' FROM t; SELECT 2") == "SELECT 'a;b' FROM t"


def test_scoring_is_bounded_in_memory(db: Path) -> None:
    # A cross join far larger than the cap fails fast instead of filling memory.
    big = "SELECT * FROM singer a, singer b, singer c, singer d, singer e, singer f, singer g"
    result = execution_match(db, "SELECT name FROM singer", big, max_rows=1000)
    assert not result.match and result.pred_error == "more than 1000 rows"
    # Functions that build large strings or blobs are refused; other strings are capped.
    for sql in ("SELECT zeroblob(1000000000)", "SELECT printf('%.*c', 1000000000, 'x')"):
        result = execution_match(db, "SELECT 1", sql)
        assert not result.match and "not authorized" in result.pred_error, sql
    result = execution_match(db, "SELECT 1", "SELECT replace(hex(randomblob(8)), 'A', 'x')")
    assert not result.match and "not authorized" in result.pred_error
    ordinary = "SELECT upper(replace(name, 'n', name || name)) FROM singer"
    long = "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r "
    long += f"WHERE length(s) < {4 * MAX_VALUE_BYTES}) SELECT max(length(s)) FROM r"
    result = execution_match(db, "SELECT 1", long)
    assert not result.match and "too big" in result.pred_error
    assert execution_match(db, ordinary, ordinary).match  # ordinary string functions still work


def test_top_level_order_by() -> None:
    assert has_top_level_order_by("SELECT a FROM t ORDER  BY a")
    assert not has_top_level_order_by("SELECT a FROM (SELECT a FROM t ORDER BY a LIMIT 3)")
    assert not has_top_level_order_by("SELECT a FROM t WHERE b = 'order by'")
    assert not has_top_level_order_by("SELECT rank() OVER (ORDER BY a) FROM t")


def test_unordered_match(db: Path) -> None:
    res = execution_match(
        db,
        "SELECT name FROM singer WHERE country = 'FR'",
        "SELECT name FROM singer WHERE country = 'FR' ORDER BY name DESC",
    )
    assert res == ExecResult(match=True, pred_error=None, gold_error=None, ordered=False)


def test_ordered_mismatch(db: Path) -> None:
    gold = "SELECT name FROM singer WHERE age < 45 ORDER BY age, name"
    res = execution_match(db, gold, "SELECT name FROM singer WHERE age < 45 ORDER BY name DESC")
    assert res.ordered and not res.match and res.pred_error is None
    same = execution_match(db, gold, "SELECT name FROM singer WHERE age < 45 ORDER BY age, name")
    assert same.match


def test_duplicates_matter(db: Path) -> None:
    # [1, 1, 2] vs [1, 2, 2]: same set, different multiset.
    gold = "SELECT 1 UNION ALL SELECT 1 UNION ALL SELECT 2"
    pred = "SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 2"
    assert not execution_match(db, gold, pred).match
    # [1, 1] vs [1].
    assert not execution_match(db, "SELECT v FROM nums WHERE v = 1", "SELECT 1").match
    assert execution_match(db, "SELECT v FROM nums", "SELECT v FROM nums ORDER BY v DESC").match


def test_failing_prediction(db: Path) -> None:
    res = execution_match(db, "SELECT name FROM singer", "SELEC name FROM singer")
    assert not res.match and res.pred_error and res.gold_error is None
    res = execution_match(db, "SELECT name FROM singer", "SELECT nope FROM singer")
    assert not res.match and "nope" in res.pred_error


def test_empty_and_non_query_predictions(db: Path) -> None:
    empty_gold = "SELECT name FROM singer WHERE age > 100"
    res = execution_match(db, empty_gold, "   ")
    assert not res.match and res.pred_error == "empty prediction"
    assert not execution_match(db, empty_gold, "-- just a comment").match


def test_timeout(db: Path) -> None:
    forever = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )
    start = time.monotonic()
    res = execution_match(db, "SELECT 1", forever, timeout_s=0.5)
    assert time.monotonic() - start < 5.0
    assert not res.match and "timeout" in res.pred_error
    assert res.gold_error is None


def test_read_only(db: Path, tmp_path: Path) -> None:
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    attached = tmp_path / "created_by_attach.sqlite"
    for pred in (
        "DELETE FROM singer",
        "INSERT INTO singer VALUES (9, 'Eve', 20, 'UK')",
        "DROP TABLE singer",
        "SELECT 1; DELETE FROM singer",
        f"ATTACH '{attached}' AS other",
        "PRAGMA query_only = OFF",
    ):
        res = execution_match(db, "SELECT count(*) FROM singer", pred)
        assert not res.match and res.pred_error
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not attached.exists()
    assert execution_match(db, "SELECT count(*) FROM singer", "SELECT 5").match


def test_non_utf8_text(db: Path) -> None:
    res = execution_match(db, "SELECT name FROM singer", "SELECT name FROM singer")
    assert res.match and res.gold_error is None


def test_numbers_compared_raw(db: Path) -> None:
    assert execution_match(db, "SELECT avg(age) FROM singer", "SELECT avg(age) FROM singer").match
    assert not execution_match(db, "SELECT 0.1 + 0.2", "SELECT 0.3").match


def test_missing_db_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(FileNotFoundError):
        execution_match(missing, "SELECT 1", "SELECT 1")
    assert not missing.exists()


# --- speed -------------------------------------------------------------------------------


def test_tau_and_tps() -> None:
    assert tau([10, 20], [4, 6]) == pytest.approx(3.0)
    assert tokens_per_second([100, 300], [1.0, 3.0]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="empty"):
        tau([], [])
    with pytest.raises(ValueError, match="positive"):
        tokens_per_second([10], [0.0])
    with pytest.raises(ValueError, match="lengths"):
        tau([1, 2], [1])


def test_speedups_hand_made() -> None:
    method_tokens, method_times = [100, 100], [1.0, 4.0]  # 100 and 25 tok/s
    base_tokens, base_times = [100, 100], [2.0, 2.0]  # 50 and 50 tok/s
    # Ratio of totals: (200/5) / (200/4) = 40/50 = 0.8.
    totals = speedup_ratio_of_totals(method_tokens, method_times, base_tokens, base_times)
    assert totals == pytest.approx(0.8)
    # Mean of ratios: (100/50 + 25/50) / 2 = (2 + 0.5) / 2 = 1.25.
    assert speedup_mean_of_ratios([100.0, 25.0], [50.0, 50.0]) == pytest.approx(1.25)
    # Ratio of mean tok/s: 62.5 / 50 = 1.25 (equal here because base is constant).
    assert speedup_ratio_of_mean_tps([100.0, 25.0], [50.0, 50.0]) == pytest.approx(1.25)
    assert speedup_ratio_of_mean_tps([100.0, 20.0], [50.0, 25.0]) == pytest.approx(60 / 37.5)
    with pytest.raises(ValueError):
        speedup_mean_of_ratios([1.0], [0.0])
    with pytest.raises(ValueError, match="empty"):
        speedup_mean_of_ratios([], [])

    ci = paired_speedup_ci(method_tokens, method_times, base_tokens, base_times)
    assert ci["ratio_of_totals"]["point"] == pytest.approx(0.8)
    assert ci["mean_of_ratios"]["point"] == pytest.approx(1.25)
    for interval in ci.values():
        assert interval["low"] <= interval["point"] <= interval["high"]


def test_bootstrap_ci_contains_point_and_is_deterministic() -> None:
    values = np.random.default_rng(1).normal(2.0, 1.0, size=200)
    point, low, high = bootstrap_ci(values, seed=3)
    assert point == pytest.approx(values.mean())
    assert low < point < high
    assert high - low < 0.5  # about 4 * 1/sqrt(200)
    assert bootstrap_ci(values, seed=3) == (point, low, high)
    assert bootstrap_ci(values, seed=4) != (point, low, high)


def test_bootstrap_ci_constant_and_paired() -> None:
    point, low, high = bootstrap_ci(np.full(50, 1.5))
    assert point == low == high == pytest.approx(1.5)

    paired = np.column_stack([np.arange(1.0, 11.0), np.arange(1.0, 11.0) * 2])
    point, low, high = bootstrap_ci(paired, lambda rows: float(np.mean(rows[:, 1] / rows[:, 0])))
    assert point == low == high == pytest.approx(2.0)  # pairing kept: every ratio is 2

    with pytest.raises(ValueError):
        bootstrap_ci(np.array([]))
    with pytest.raises(ValueError):
        bootstrap_ci(paired)  # 2-D needs an explicit statistic


def test_paired_speedup_ci_deterministic() -> None:
    rng = np.random.default_rng(0)
    base_times = rng.uniform(1.0, 2.0, size=40)
    method_times = base_times / rng.uniform(1.5, 2.5, size=40)
    tokens = rng.integers(50, 200, size=40)
    a = paired_speedup_ci(tokens, method_times, tokens, base_times, seed=7)
    b = paired_speedup_ci(tokens, method_times, tokens, base_times, seed=7)
    assert a == b
    for interval in a.values():
        assert 1.4 < interval["low"] <= interval["point"] <= interval["high"] < 2.6
    with pytest.raises(ValueError, match="positive"):
        paired_speedup_ci([1], [0.0], [1], [1.0])
