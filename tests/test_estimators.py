"""One estimator per label: every table's speed column is the estimator its label names.

Two questions of very different length and speed make the estimators disagree: 11 tokens in
1 s (11 tok/s) and 301 tokens in 10 s (30.1 tok/s) give a mean of per-question rates of
20.55 tok/s but totals of 312 / 11 = 28.36 tok/s. Every expected number is computed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from specrepro.report.aggregate import summarise
from specrepro.report.ddd import ddd_table
from specrepro.report.dsbd import dsbd_table, threshold_points
from specrepro.report.tables import write_dataset_tables

MIB = 2**20
EN_DASH = "\u2013"
# (question, new tokens, seconds at 1x); a method at speed s takes seconds / s.
QUESTIONS = (("q1", 11, 1.0), ("q2", 301, 10.0))


def row(method: str, algorithm: str, qid: str, tokens: int, seconds: float, **extra) -> dict:
    """One turn: the prefill forward yields 1 token, then verification forwards of `tau`
    tokens each (the prefill left out of tau, as docs/measurement.md counts it)."""
    tau = extra.pop("tau", 1.0)
    verified = tokens - 1
    forwards = round(verified / tau)
    base = {
        "run_id": f"{method}-{extra.get('temperature', 0.0)}",
        "pair": "p", "dataset": "squad", "method": method, "algorithm": algorithm,
        "params": "{}", "temperature": 0.0, "seed": 0, "dtype": "float32",
        "question_id": qid, "turn": 0, "new_tokens": tokens, "wall_time_s": seconds,
        "target_forwards": forwards + 1, "verify_forwards": forwards,
        "verified_tokens": verified, "accept_lengths": json.dumps([1] * tokens),
        "energy_j": None, "energy_reason": "run on device cpu", "em": 1.0, "f1": 0.5,
        "exec_match": None, "exec_excluded": None, "lossless_match": None,
        "kv_bytes_peak": MIB, "peak_gpu_memory_bytes": None, "target_loglik": -1.0,
        "hardware": "test CPU",
    }  # fmt: skip
    return {**base, **extra}


def runs(method: str, algorithm: str, speed: tuple[float, float], **extra) -> list[dict]:
    """Both questions, question i run `speed[i]` times faster than at 1x."""
    return [
        row(method, algorithm, qid, tokens, seconds / s, **extra)
        for (qid, tokens, seconds), s in zip(QUESTIONS, speed, strict=True)
    ]


# Speed counts every new token, the prefill's included; only tau leaves it out.
def rates(speed: tuple[float, float]) -> list[float]:
    return [
        tokens / (seconds / s) for (_, tokens, seconds), s in zip(QUESTIONS, speed, strict=True)
    ]


def totals(speed: tuple[float, float]) -> float:
    tokens = sum(t for _, t, _ in QUESTIONS)
    return tokens / sum(sec / s for (_, _, sec), s in zip(QUESTIONS, speed, strict=True))


def mean_rate(speed: tuple[float, float]) -> float:
    return sum(rates(speed)) / len(QUESTIONS)


BASE = (1.0, 1.0)  # 11 and 30.1 tok/s
FAST = (2.0, 5.0)  # the short question twice as fast, the long one 5 times


def markdown_rows(text: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in `text`, as {column label: cell}."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    columns = [c.strip() for c in lines[0].strip("|").split("|")]
    return [
        dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines[1:]
    ]


def by_method(rows: list[dict[str, str]], key: str = "method") -> dict[str, dict[str, str]]:
    return {r[key].split(" (vs ")[0]: r for r in rows}


def test_the_hand_numbers_tell_the_estimators_apart() -> None:
    # Guards the fixture itself: with equal estimators the tests below would prove nothing.
    assert mean_rate(BASE) == pytest.approx((11 + 30.1) / 2)
    assert totals(BASE) == pytest.approx(312 / 11)
    assert f"{mean_rate(BASE):.1f}" != f"{totals(BASE):.1f}"
    assert mean_rate(FAST) / mean_rate(BASE) != pytest.approx(totals(FAST) / totals(BASE))


def dataset_table(tmp_path: Path) -> dict[str, dict[str, str]]:
    tidy = pd.DataFrame(
        [
            *runs("vanilla", "vanilla", BASE),
            # An A/A control: a second vanilla entry, compared with vanilla like any method.
            *runs("vanilla-aa", "vanilla", BASE, lossless_match=1.0),
            *runs("sps", "sps", FAST, tau=2.5, kv_bytes_peak=3 * MIB, lossless_match=0.0),
        ]
    )
    # Question 2's KV cache is larger: the peak is the largest, not the mean.
    tidy.loc[(tidy["method"] == "sps") & (tidy["question_id"] == "q1"), "kv_bytes_peak"] = MIB
    write_dataset_tables(summarise(tidy), tmp_path)
    return by_method(markdown_rows((tmp_path / "table_squad.md").read_text()))


def test_dataset_table_tokens_per_s_is_totals(tmp_path: Path) -> None:
    table = dataset_table(tmp_path)
    assert table["vanilla"]["tok/s (totals)"] == f"{312 / 11:.1f}" == "28.4"
    assert table["sps"]["tok/s (totals)"] == f"{totals(FAST):.1f}"
    # Both speedup estimators stay, each under its own label.
    sps = table["sps"]
    ratio_of_means = mean_rate(FAST) / mean_rate(BASE)
    assert sps["speedup, mean tok/s [95% CI]"].startswith(f"{ratio_of_means:.2f} [")
    assert sps["speedup, totals [95% CI]"].startswith(f"{totals(FAST) / totals(BASE):.2f} [")


def test_dataset_table_memory_tau_and_lossless(tmp_path: Path) -> None:
    table = dataset_table(tmp_path)
    # KV peak for every method, vanilla included, in MiB (2**20 bytes), the largest turn.
    assert table["vanilla"]["KV peak (MiB)"] == "1.0"
    assert table["sps"]["KV peak (MiB)"] == "3.0"
    assert all(r["peak device MiB"] == "n/a" for r in table.values())  # not measured on CPU
    # tau: 10 and 300 verified tokens over 4 and 120 verification forwards = 2.5; counting
    # the prefill forward and token it would be 312 / 126 = 2.48.
    assert table["sps"]["tau"] == "2.50" and table["vanilla"]["tau"] == "1.00"
    # The baseline is not compared with itself; the A/A control is, and shows its rate.
    assert table["vanilla"]["lossless (%)"] == EN_DASH
    assert table["vanilla-aa"]["lossless (%)"] == "100.0"
    assert table["sps"]["lossless (%)"] == "0.0"
    assert table["sps"]["EM (%)"] == "100.0" and table["sps"]["F1 (%)"] == "50.0"
    assert table["sps"]["target log-lik/token"] == "-1.00"


def test_spider_table_shows_ea_and_the_excluded_questions(tmp_path: Path) -> None:
    spider = dict(dataset="spider", em=None, f1=None, exec_excluded=0, exec_match=1.0)
    tidy = pd.DataFrame([*runs("vanilla", "vanilla", BASE, **spider)])
    # q2's gold query fails: no execution match, left out of EA and counted.
    tidy.loc[tidy["question_id"] == "q2", ["exec_match", "exec_excluded"]] = [None, 1]
    write_dataset_tables(summarise(tidy), tmp_path)
    text = (tmp_path / "table_spider.md").read_text()
    vanilla = by_method(markdown_rows(text))["vanilla"]
    assert vanilla["EA (%)"] == "100.0" and vanilla["gold failed"] == "1"
    assert "EM (%)" not in vanilla
    assert "gold query failed" in text


def ddd_frame() -> pd.DataFrame:
    return pd.DataFrame(
        [*runs("vanilla", "vanilla", BASE), *runs("eagle2", "eagle2", FAST, tau=2.5)]
    )


def test_ddd_table_uses_the_mean_of_per_question_rates() -> None:
    text = ddd_table(ddd_frame(), "p", dataset="squad")
    table = by_method(markdown_rows(text))
    assert table["vanilla"]["mean tok/s"] == f"{mean_rate(BASE):.1f}" == "20.6"
    assert table["eagle2"]["mean tok/s"] == f"{mean_rate(FAST):.1f}"
    speedup = mean_rate(FAST) / mean_rate(BASE)  # (22 + 150.5) / 2 / 20.55 = 4.20
    cell = table["eagle2"]["speedup vs vanilla (mean tok/s) [95% CI]"]
    assert cell.startswith(f"{speedup:.2f} [")
    assert not cell.startswith(f"{totals(FAST) / totals(BASE):.2f}")
    assert table["eagle2"]["tau"] == "2.50"
    assert table["eagle2"]["n"] == "2" and table["eagle2"]["rule"] == "to answer"
    assert "prefill excluded, bonus token included" in text
    assert "EAGLE's estimator (mean tok/s)" in text


def dsbd_frame() -> pd.DataFrame:
    beam = dict(temperature=1.0, params=json.dumps({"width": 3}), kv_bytes_peak=4 * MIB)
    dsbd = {**beam, "params": json.dumps({"width": 3, "w_thres": 0.7, "min_width": 1})}
    vanilla = dict(temperature=1.0, kv_bytes_peak=MIB, peak_gpu_memory_bytes=512 * MIB)
    return pd.DataFrame(
        [
            *runs("beam", "beam", BASE, **beam),
            *runs("dsbd", "dsbd", FAST, tau=2.5, **dsbd),
            *runs("vanilla", "vanilla", BASE, **vanilla),
        ]
    )


def test_dsbd_table_uses_totals() -> None:
    text = dsbd_table(dsbd_frame(), "p", "squad")
    table = by_method(markdown_rows(text))
    assert table["beam"]["tok/s (totals)"] == f"{totals(BASE):.2f}" == "28.36"
    assert table["dsbd"]["tok/s (totals)"] == f"{totals(FAST):.2f}"
    speedup = totals(FAST) / totals(BASE)  # 312 / 2.5 / 28.36 = 4.40
    cell = table["dsbd"]["speedup vs beam, totals [95% CI]"]
    assert cell.startswith(f"{speedup:.2f} [")
    assert not cell.startswith(f"{mean_rate(FAST) / mean_rate(BASE):.2f}")
    assert table["beam"]["speedup vs beam, totals [95% CI]"] == "1.00"
    assert "total tokens over total seconds" in text


def test_dsbd_table_memory_quality_and_forwards() -> None:
    text = dsbd_table(dsbd_frame(), "p", "squad")
    table = by_method(markdown_rows(text))
    # Every method's KV peak in MiB from the same column, vanilla included.
    kv = [table[m]["KV peak (MiB)"] for m in ("beam", "dsbd", "vanilla")]
    assert kv == ["4.0", "4.0", "1.0"]
    assert table["vanilla"]["peak device MiB"] == "512.0"
    assert table["beam"]["peak device MiB"] == "n/a"
    assert table["dsbd"]["EM (%)"] == "100.0" and table["dsbd"]["F1 (%)"] == "50.0"
    assert table["dsbd"]["target log-lik/token"] == "-1.00"
    # 1 / tau: 124 verification forwards for 310 verified tokens, prefill left out.
    assert table["dsbd"]["target forwards / token"] == "0.40"
    assert table["beam"]["target forwards / token"] == "1.00"
    assert "prefill excluded, bonus token included" in text
    assert "MB" not in text.replace("MiB", "")


def test_dsbd_threshold_points_use_totals(tmp_path: Path) -> None:
    from specrepro.report.figures import dsbd_threshold_figure

    points = threshold_points(dsbd_frame(), "p")
    (point,) = points.to_dict("records")
    assert point["speedup"] == pytest.approx(totals(FAST) / totals(BASE))
    assert point["low"] <= point["speedup"] <= point["high"]
    assert (point["quality"], point["f1"], point["beam_f1"]) == (100.0, 50.0, 50.0)
    # The figure draws EM and F1 beside beam's (one render, both formats written).
    paths = dsbd_threshold_figure(points, tmp_path / "threshold", "t")
    assert all(path.stat().st_size > 0 for path in paths)


def test_accepted_length_histogram_leaves_the_prefill_out() -> None:
    from specrepro.report.figures import length_distribution, verification_lengths

    # One prefill token, then rounds of 2 and 3 tokens: tau 2.5 as the tables count it.
    tidy = pd.DataFrame(
        [row("sps", "sps", "q1", 11, 1.0, tau=2.5, accept_lengths=json.dumps([1, 2, 3, 2, 3]))]
    )
    lengths = verification_lengths(tidy)
    assert lengths.tolist() == [[2, 3, 2, 3]]
    shares = length_distribution(lengths)
    assert float((shares * range(len(shares))).sum()) == pytest.approx(2.5)
