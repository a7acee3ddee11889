"""The one timer every method uses: wall clock, split into draft / verify / other."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer:
    """Accumulates wall time per named section; 'other' is the remainder of the total."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sections: dict[str, float] = {"draft": 0.0, "verify": 0.0}
        self._start: float | None = None
        self.total = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def stop(self) -> float:
        synchronize(self.device)
        assert self._start is not None, "StepTimer.stop() before start()"
        self.total = time.perf_counter() - self._start
        return self.total

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        # A sync on entry and exit attributes asynchronous GPU work to the right section.
        synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.sections[name] = self.sections.get(name, 0.0) + time.perf_counter() - t0

    def split(self) -> dict[str, float]:
        draft = self.sections.get("draft", 0.0)
        verify = self.sections.get("verify", 0.0)
        return {"draft": draft, "verify": verify, "other": max(self.total - draft - verify, 0.0)}
