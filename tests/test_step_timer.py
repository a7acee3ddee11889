"""The one timer: two host syncs per generation on a GPU (its start and end), sections timed by
CUDA events read after the last one; host clock sections on the CPU."""

from __future__ import annotations

import time

import torch

from specrepro.engine import timing
from specrepro.engine.timing import StepTimer


class FakeEvent:
    """A CUDA event stand-in: its 'GPU time' is the host clock at record()."""

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.at: float | None = None

    def record(self) -> None:
        self.at = time.perf_counter()

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.at is not None and end.at is not None
        return (end.at - self.at) * 1e3  # milliseconds, as CUDA reports


def test_on_a_gpu_only_the_start_and_stop_synchronize(monkeypatch) -> None:
    syncs: list[str] = []
    monkeypatch.setattr(timing.torch.cuda, "synchronize", lambda device: syncs.append("sync"))
    monkeypatch.setattr(timing.torch.cuda, "Event", FakeEvent)
    timer = StepTimer(torch.device("cuda"))
    timer.start()
    for _ in range(20):  # twenty rounds of draft + verify
        with timer.section("draft"):
            time.sleep(0.001)
        with timer.section("verify"):
            time.sleep(0.002)
    total = timer.stop()
    assert syncs == ["sync", "sync"]
    split = timer.split()
    assert 0.015 < split["draft"] < split["verify"] < total
    assert abs(split["draft"] + split["verify"] + split["other"] - total) < 1e-9


def test_on_the_cpu_sections_use_the_host_clock() -> None:
    timer = StepTimer(torch.device("cpu"))
    timer.start()
    with timer.section("verify"):
        time.sleep(0.01)
    timer.stop()
    assert 0.01 <= timer.split()["verify"] <= timer.total
