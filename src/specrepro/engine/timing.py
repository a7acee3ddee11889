"""The one timer every method uses: wall clock, split into draft / verify / other.

The total is host wall time between a synchronize at the generation's start and one at its end:
the only two host syncs the timer makes. On CUDA, sections are timed by CUDA events recorded on
the stream at each section's entry and exit (the stream's own clock: a section's time is when
the GPU reached its end minus when it reached its start, idle gaps while the host was still
launching included), read once after the final synchronize. A synchronize at every section
boundary, as before, cost two syncs per section per round and kept the GPU from running ahead
of the host. On the CPU, where work is done when the call returns, sections are timed by the
host clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer:
    """Accumulates time per named section; 'other' is the remainder of the total."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sections: dict[str, float] = {"draft": 0.0, "verify": 0.0}
        self._start: float | None = None
        self.total = 0.0
        # (section, start event, end event), read at stop(): CUDA only.
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    def start(self) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def stop(self) -> float:
        synchronize(self.device)
        assert self._start is not None, "StepTimer.stop() before start()"
        self.total = time.perf_counter() - self._start
        for name, begin, end in self._events:
            # elapsed_time is in milliseconds; both events completed before the synchronize.
            self.sections[name] = self.sections.get(name, 0.0) + begin.elapsed_time(end) / 1e3
        self._events.clear()
        return self.total

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        if self.device.type == "cuda":
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((name, begin, end))
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.sections[name] = self.sections.get(name, 0.0) + time.perf_counter() - t0

    def split(self) -> dict[str, float]:
        draft = self.sections.get("draft", 0.0)
        verify = self.sections.get("verify", 0.0)
        return {"draft": draft, "verify": verify, "other": max(self.total - draft - verify, 0.0)}
