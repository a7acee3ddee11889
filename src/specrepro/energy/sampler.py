"""Background GPU power sampler and the trapezoid integral over its samples.

The sampler knows nothing about NVML: it calls a `read_power_w` callable, so it can be driven by
the real library, a fake in tests, or any other power source.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

# (perf_counter timestamp in seconds, power in watts)
Sample = tuple[float, float]


def trapezoid_joules(samples: Sequence[Sample]) -> float:
    """Integrate power samples over time with the trapezoid rule; returns joules.

    Fewer than two samples span no time, so they integrate to 0.0; callers that need to tell
    "no data" from "no energy" must check the sample count themselves.
    """
    total = 0.0
    for (t0, w0), (t1, w1) in zip(samples, samples[1:], strict=False):
        total += 0.5 * (w0 + w1) * (t1 - t0)
    return total


class PowerSampler:
    """Samples power on a daemon thread at (at least) `sample_hz` between start() and stop().

    start() and stop() each take one sample in the caller's thread, so every run has a sample at
    both ends of the measured window and at least two samples, however short the window.
    """

    def __init__(self, read_power_w: Callable[[], float | None], sample_hz: float = 20.0) -> None:
        if sample_hz <= 0:
            raise ValueError(f"sample_hz must be positive, got {sample_hz}")
        self._read = read_power_w
        self._interval = 1.0 / sample_hz
        self._samples: list[Sample] = []
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.n_errors = 0

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("PowerSampler is already running")
        self._samples = []
        self.n_errors = 0
        self._stop_event.clear()
        self._take()
        self._thread = threading.Thread(target=self._run, name="specrepro-power", daemon=True)
        self._thread.start()

    def stop(self) -> list[Sample]:
        """Stop the thread and return all samples (timestamp order). Safe to call twice."""
        if self._thread is None:
            return list(self._samples)
        self._stop_event.set()
        self._thread.join()
        self._thread = None
        self._take()
        return list(self._samples)

    def _take(self) -> None:
        try:
            watts = self._read()
        except Exception:
            # A transient read failure must not kill the thread or the measured run; the gap
            # only makes the trapezoid coarser, and n_errors records that it happened.
            self.n_errors += 1
            return
        if watts is not None:
            self._samples.append((time.perf_counter(), float(watts)))

    def _run(self) -> None:
        # Deadline scheduling keeps the rate at sample_hz despite the time each read takes.
        next_t = time.perf_counter() + self._interval
        while not self._stop_event.wait(max(0.0, next_t - time.perf_counter())):
            self._take()
            next_t += self._interval
            now = time.perf_counter()
            if next_t < now:
                # Fell behind (slow reads): resync instead of bursting to catch up.
                next_t = now + self._interval
