"""Where the tree drafters may read the device from the host: never inside a draft level, and
at DDD's depth checks only through a FlagReader (a read for ddd, a landed copy for ddd_async).

`late_reader` and `_level_region` are looked up here at each use, so a check or a test that
swaps them (bench gpu-check, tests/test_ddd_async.py) must swap them on this module.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import torch

from specrepro.engine.drafter import RoundStats

# -- where a draft level must not sync -----------------------------------------------------------

_level_region: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext


def level_region() -> AbstractContextManager[object]:
    """The context one draft level's device work (head forward, top-k, beam update) runs in:
    nothing, unless a check swaps one in. ddd's reads and ddd_async's polls sit outside it."""
    return _level_region()


@contextlib.contextmanager
def checked_levels(region: Callable[[], AbstractContextManager[object]]) -> Iterator[None]:
    """Run every draft level inside `region()` meanwhile (bench gpu-check: CUDA sync debug
    mode "error", which turns any host sync inside a level into an exception)."""
    global _level_region
    before = _level_region
    _level_region = region
    try:
        yield
    finally:
        _level_region = before


# -- DDD's depth checks ------------------------------------------------------------------------


@dataclass
class DepthRule:
    """DDD's stopping rule: after level s in `check_levels`, stop when
    H = logsumexp(beam cumulative log-probs) < threshold, so the tree has s levels.

    `late` (ddd_async) reads each check's flag without a host sync: the pair (H, flag) is copied
    to the host without blocking, and the head drafts further levels until the copy has landed
    (polled between levels, never read before); then, when the flag says stop, the levels
    drafted after s are dropped. Whatever the copy's timing, the tree is the one the rule gives
    (that of `ddd`); only the levels drafted and dropped vary.
    """

    check_levels: tuple[int, ...]
    threshold: float
    late: bool = False


class FlagReader(Protocol):
    """A check's (H, flag) on its way to the host."""

    def ready(self) -> bool:
        """Whether value() can return without waiting for the device."""
        ...

    def value(self) -> tuple[float, bool]:
        """(H, stop), waiting for the copy if it has not landed."""
        ...


class HostRead:
    """Reads the pair when asked: on a GPU that read is a sync (ddd's, at each check)."""

    def __init__(self, record: torch.Tensor) -> None:
        self.record = record

    def ready(self) -> bool:
        return True

    def value(self) -> tuple[float, bool]:
        h, flag = self.record.tolist()
        return h, flag != 0.0


class EventLike(Protocol):
    def query(self) -> bool: ...

    def synchronize(self) -> None: ...


class CopiedRead:
    """A check's pair in host memory that a copy still queued on the device fills in, and an
    event recorded after that copy: ready() polls the event, value() waits on it, so the host
    never reads the buffer before the copy has filled it (earlier, it can hold a stale or
    half-written value)."""

    def __init__(self, host: torch.Tensor, event: EventLike) -> None:
        self.host = host
        self.event = event

    @classmethod
    def start(cls, record: torch.Tensor) -> CopiedRead:
        """Queue a non-blocking copy of `record` (on a CUDA device) into pinned memory."""
        host = torch.empty(record.shape, dtype=record.dtype, pin_memory=True)
        host.copy_(record, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(record.device))
        return cls(host, event)

    def ready(self) -> bool:
        return self.event.query()

    def value(self) -> tuple[float, bool]:
        self.event.synchronize()
        h, flag = self.host.tolist()
        return h, flag != 0.0


def late_reader(record: torch.Tensor) -> FlagReader:
    """ddd_async's reader: a pinned copy on a GPU; on the CPU the value is there already.
    (Looked up at each check, so a test can put a copy that stays in flight in its place.)"""
    return CopiedRead.start(record) if record.is_cuda else HostRead(record)


class DepthWatch:
    """The DDD checks of one round, in level order: the ones still on their way to the host,
    and the level where the rule stopped the tree (None while it has not)."""

    def __init__(self, rule: DepthRule | None, stats: RoundStats) -> None:
        self.rule = rule
        self.stats = stats
        self.pending: deque[tuple[int, FlagReader]] = deque()
        self.stop_at: int | None = None

    def check(self, level: int, beam_scores: torch.Tensor) -> None:
        rule = self.rule
        if rule is None or level not in rule.check_levels or self.stop_at is not None:
            return
        h = torch.logsumexp(beam_scores, dim=0)
        # H and the flag travel together: one read (or copy) per check, and the flag is the
        # device's own comparison, so ddd and ddd_async decide on identical bits.
        record = torch.stack([h, (h < rule.threshold).to(h.dtype)])
        if not rule.late:
            self._apply(level, HostRead(record))
            return
        self.pending.append((level, late_reader(record)))

    def poll(self, wait: bool = False) -> None:
        """Act on the checks whose values have landed, oldest first (all of them, waiting,
        when `wait`); a check whose value has not landed is never read."""
        while self.pending and self.stop_at is None and (wait or self.pending[0][1].ready()):
            level, reader = self.pending.popleft()
            self._apply(level, reader)
        if self.stop_at is not None:
            # Checks of levels past the stop are not part of this round (ddd never makes them).
            self.pending.clear()

    def _apply(self, level: int, reader: FlagReader) -> None:
        h, stop = reader.value()
        self.stats.checks.append((level, h))
        if stop:
            self.stop_at = level
