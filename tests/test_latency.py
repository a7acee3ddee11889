"""The latency profiler times decode steps only: never building, prefill or warm-up."""

from __future__ import annotations

from dataclasses import replace

import torch
from transformers import LlamaConfig

from specrepro.training import latency
from specrepro.training.family import Shape
from specrepro.training.latency import LatencySettings, profile_shapes, time_decode


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeDecoder:
    """Prefill costs 50 s, a decode step 1 s (2 s during warm-up: first steps are slow)."""

    def __init__(self, clock: FakeClock, warmup: int) -> None:
        self.clock, self.warmup, self.steps = clock, warmup, 0

    def reset(self, capacity: int | None = None) -> None:
        self.clock.now += 7.0
        self.steps = 0

    def forward(self, tokens: list[int]) -> None:
        if len(tokens) > 1:
            self.clock.now += 50.0
            return
        self.steps += 1
        self.clock.now += 2.0 if self.steps <= self.warmup else 1.0


def test_only_the_decode_steps_are_timed() -> None:
    clock = FakeClock()
    settings = LatencySettings(prompt_tokens=8, warmup=2, tokens=5, repeats=3)
    assert time_decode(FakeDecoder(clock, warmup=2), settings, clock) == [1.0, 1.0, 1.0]
    # Without warm-up steps the slow first steps would be timed: the fake is honest.
    cold = replace(settings, warmup=0)
    assert time_decode(FakeDecoder(clock, warmup=2), cold, clock)[0] > 1.0


def test_building_the_model_is_left_out(monkeypatch) -> None:
    clock = FakeClock()
    built = []

    def slow_build(shape, base_config, dtype, device):
        clock.now += 1000.0
        built.append(shape.num_layers)
        return real_build(shape, base_config, dtype, device)

    class TimedRunner(FakeDecoder):
        def __init__(self, model, name) -> None:
            super().__init__(clock, warmup=1)
            self.device = torch.device("cpu")

    real_build = latency.random_model
    monkeypatch.setattr(latency, "random_model", slow_build)
    monkeypatch.setattr(latency, "ModelRunner", TimedRunner)
    shape = Shape(1, 32, 4, 2, 8, 64, 64)
    base = LlamaConfig(vocab_size=64, max_position_embeddings=128)
    rows = profile_shapes({"a": (shape, base)}, LatencySettings(4, 1, 3, 2), clock=clock)
    assert built == [1]
    assert rows[0]["ms_per_token"] == 1000.0
    assert rows[0]["build_seconds"] == 1000.0
    assert rows[0]["counted_parameters"] == shape.counted_parameters()


def test_a_real_random_model_is_profiled() -> None:
    base = LlamaConfig(vocab_size=64, max_position_embeddings=128)
    shapes = {f"d{n}": (Shape(n, 32, 4, 2, 8, 64, 64), base) for n in (1, 2)}
    rows = profile_shapes(shapes, LatencySettings(4, 1, 3, 1))
    assert [r["num_layers"] for r in rows] == [1, 2]
    assert all(r["ms_per_token"] > 0 for r in rows)


def test_the_spread_of_the_timed_forwards_is_reported() -> None:
    from specrepro.training.latency import spread, time_decode_tokens

    clock = FakeClock()
    settings = LatencySettings(prompt_tokens=8, warmup=2, tokens=4, repeats=2)
    repeats = time_decode_tokens(FakeDecoder(clock, warmup=2), settings, clock)
    assert repeats == [[1.0] * 4, [1.0] * 4]
    out = spread([[0.001, 0.002, 0.003, 0.010], [0.002, 0.002, 0.002, 0.002]])
    assert out["ms_per_token_min"] == 2.0 and out["ms_per_token_max"] == 4.0
    assert out["ms_per_token"] == 3.0  # the median of the repeats' means
    assert out["ms_token_p10"] < out["ms_token_p50"] == 2.0 < out["ms_token_p90"]


def test_rows_carry_the_kv_bytes() -> None:
    base = LlamaConfig(vocab_size=64, max_position_embeddings=128)
    shape = Shape(2, 32, 4, 2, 8, 64, 64)
    (row,) = profile_shapes({"d": (shape, base)}, LatencySettings(4, 1, 3, 2))
    assert row["kv_bytes_per_token"] == 2 * 2 * 2 * 8 * 4  # float32
    assert row["ms_token_p10"] <= row["ms_token_p90"] and len(row["ms_per_token_repeats"]) == 2
