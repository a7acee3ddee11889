"""Speed metrics (tau, tokens/s, speedup) and percentile-bootstrap intervals over questions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def _as_array(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; need at least one question")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(arr) for name, arr in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"inputs must have one entry per question, got lengths {lengths}")


def _check_times(times: np.ndarray, name: str) -> None:
    # A zero or negative wall time is a broken measurement, not an infinitely fast one.
    bad = np.flatnonzero(times <= 0)
    if bad.size:
        raise ValueError(f"{name} must be positive; non-positive at question indices {bad[:10]}")


def tau(new_tokens: Sequence[int], target_forwards: Sequence[int]) -> float:
    """Mean accepted length: committed new tokens / target forward passes (sum over sum)."""
    tokens = _as_array(new_tokens, "new_tokens")
    forwards = _as_array(target_forwards, "target_forwards")
    _same_length(new_tokens=tokens, target_forwards=forwards)
    total = forwards.sum()
    if total <= 0:
        raise ValueError("target_forwards sums to zero; tau is undefined")
    return float(tokens.sum() / total)


def tokens_per_second(new_tokens: Sequence[int], wall_times: Sequence[float]) -> float:
    """Throughput over a set of generations: total new tokens / total wall time."""
    tokens = _as_array(new_tokens, "new_tokens")
    times = _as_array(wall_times, "wall_times")
    _same_length(new_tokens=tokens, wall_times=times)
    _check_times(times, "wall_times")
    return float(tokens.sum() / times.sum())


def speedup_ratio_of_totals(
    method_tokens: Sequence[int],
    method_times: Sequence[float],
    base_tokens: Sequence[int],
    base_times: Sequence[float],
) -> float:
    """Speedup as (method total tokens / total time) / (baseline total tokens / total time)."""
    base = tokens_per_second(base_tokens, base_times)
    if base <= 0:
        raise ValueError("baseline generated no tokens; speedup is undefined")
    return tokens_per_second(method_tokens, method_times) / base


def speedup_mean_of_ratios(method_tps: Sequence[float], base_tps: Sequence[float]) -> float:
    """Mean over questions of method_tps[i] / base_tps[i] (paired by question)."""
    method = _as_array(method_tps, "method_tps")
    base = _as_array(base_tps, "base_tps")
    _same_length(method_tps=method, base_tps=base)
    bad = np.flatnonzero(base <= 0)
    if bad.size:
        raise ValueError(
            f"base_tps must be positive for a per-question ratio; "
            f"non-positive at question indices {bad[:10]}"
        )
    return float(np.mean(method / base))


def speedup_ratio_of_mean_tps(method_tps: Sequence[float], base_tps: Sequence[float]) -> float:
    """mean(method_tps) / mean(base_tps): what EAGLE's evaluation/speed.py prints as "ratio"."""
    method = _as_array(method_tps, "method_tps")
    base = _as_array(base_tps, "base_tps")
    _same_length(method_tps=method, base_tps=base)
    denominator = base.mean()
    if denominator <= 0:
        raise ValueError("baseline mean tokens/s is zero; speedup is undefined")
    return float(method.mean() / denominator)


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], float] | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap: (point, low, high) of ``statistic`` over rows of ``values``.

    Rows are resampled with replacement, so paired data (one row per question, one column
    per measurement) keeps its pairing; ``statistic`` then receives the resampled 2-D array.
    The default statistic is the mean, for 1-D input only.
    """
    data = np.asarray(values, dtype=float)
    if data.ndim not in (1, 2):
        raise ValueError(f"values must be 1-D or 2-D, got shape {data.shape}")
    if data.shape[0] == 0:
        raise ValueError("values is empty; cannot bootstrap zero questions")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")

    rng = np.random.default_rng(seed)
    n = data.shape[0]
    indices = rng.integers(0, n, size=(n_resamples, n))
    if statistic is None:
        if data.ndim != 1:
            raise ValueError("2-D values need an explicit statistic")
        point = float(np.mean(data))
        # Vectorised for the common case; identical to looping np.mean over resamples.
        replicates = data[indices].mean(axis=1)
    else:
        point = float(statistic(data))
        replicates = np.array([statistic(data[idx]) for idx in indices], dtype=float)

    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    return point, float(low), float(high)


def paired_speedup_ci(
    method_tokens: Sequence[int],
    method_times: Sequence[float],
    base_tokens: Sequence[int],
    base_times: Sequence[float],
    seed: int = 0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Speedup with a bootstrap interval over questions, for each speedup definition.

    Inputs are per question (turns already summed) and paired by index. Returns
    ``{definition: {"point", "low", "high"}}`` for "mean_of_ratios", "ratio_of_totals" and
    "ratio_of_mean_tps"; all three resample the same question indices (same seed).
    """
    arrays = {
        "method_tokens": _as_array(method_tokens, "method_tokens"),
        "method_times": _as_array(method_times, "method_times"),
        "base_tokens": _as_array(base_tokens, "base_tokens"),
        "base_times": _as_array(base_times, "base_times"),
    }
    _same_length(**arrays)
    _check_times(arrays["method_times"], "method_times")
    _check_times(arrays["base_times"], "base_times")
    if np.any(arrays["base_tokens"] <= 0):
        # A per-question ratio with a zero baseline speed is infinite; refuse rather than
        # silently drop the question and bias the mean.
        raise ValueError("base_tokens must be positive for every question")
    table = np.column_stack(list(arrays.values()))

    def mean_of_ratios(rows: np.ndarray) -> float:
        return float(np.mean((rows[:, 0] / rows[:, 1]) / (rows[:, 2] / rows[:, 3])))

    def ratio_of_totals(rows: np.ndarray) -> float:
        sums = rows.sum(axis=0)
        return float((sums[0] / sums[1]) / (sums[2] / sums[3]))

    def ratio_of_mean_tps(rows: np.ndarray) -> float:
        return float(np.mean(rows[:, 0] / rows[:, 1]) / np.mean(rows[:, 2] / rows[:, 3]))

    result: dict[str, dict[str, float]] = {}
    for name, stat in (
        ("mean_of_ratios", mean_of_ratios),
        ("ratio_of_totals", ratio_of_totals),
        ("ratio_of_mean_tps", ratio_of_mean_tps),
    ):
        point, low, high = bootstrap_ci(table, stat, n_resamples, confidence, seed)
        result[name] = {"point": point, "low": low, "high": high}
    return result
