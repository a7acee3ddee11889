"""ddd_async reads a check's flag only once its copy has landed, and its trees are ddd's.

On a GPU the flag (and H) of a check level is copied without blocking into pinned memory, an
event recorded after the copy; the drafter polls the event between levels and drafts on while
it has not fired. Here the copy is a fake whose host buffer holds a stale value (the flag
inverted, H = NaN) until its event has been polled `polls` times (or waited on): a read before
that would change the trees or the recorded H.
"""

from __future__ import annotations

import pytest
import torch

from specrepro.engine import host_reads
from specrepro.engine.host_reads import CopiedRead
from specrepro.models.eagle_head import build_head, head_config_for
from tests.conftest import tiny_llama
from tests.helpers import decoder_for

VOCAB = 8
PROMPT = [1, 2, 3]
DDD = {"top_k": 3, "total_tokens": 12, "check_levels": [2, 3], "max_levels": 5}
# Thresholds between the typical H values: some rounds stop at 2, some at 3, some run to 5.
THRESHOLDS = (-0.3, -1.0, -3.0)


class SlowCopyEvent:
    """A CUDA event after a non-blocking copy, as seen from the host: the copy lands at the
    query after `polls` unanswered ones, or when the host waits (synchronize)."""

    def __init__(self, record: torch.Tensor, host: torch.Tensor, polls: int) -> None:
        self.record = record.clone()
        self.host = host
        self.left = polls

    def query(self) -> bool:
        if self.left > 0:
            self.left -= 1
            return False
        self.host.copy_(self.record)
        return True

    def synchronize(self) -> None:
        self.left = 0
        self.host.copy_(self.record)


def slow_copies(polls: int):
    def start(record: torch.Tensor) -> CopiedRead:
        stale = torch.stack([torch.full_like(record[0], float("nan")), 1.0 - record[1]])
        return CopiedRead(stale, SlowCopyEvent(record, stale, polls))

    return start


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, torch.nn.Module]:
    target = tiny_llama(vocab_size=VOCAB, seed=0)
    torch.manual_seed(11)
    return target, build_head(head_config_for(target), target)


def run(tiny, method: str, temperature: float, threshold: float, seed: int):
    target, head = tiny
    gen = decoder_for(target, None, method, temperature, head=head, threshold=threshold, **DDD)
    return gen.generate(PROMPT, 24, seed=seed)[0]


def same_trees(ref, got) -> bool:
    a, b = ref.extra["rounds"], got.extra["rounds"]
    keys = ("levels", "tree_size", "accepted", "checks")
    return ref.tokens == got.tokens and all(a[k] == b[k] for k in keys)


@pytest.mark.parametrize("polls", [0, 1, 3])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_pending_flag_is_never_read_and_the_trees_are_ddds(
    tiny, monkeypatch, polls: int, temperature: float
) -> None:
    monkeypatch.setattr(host_reads, "late_reader", slow_copies(polls))
    max_levels = DDD["max_levels"]
    stopped = dropped = 0
    for threshold in THRESHOLDS:
        for seed in range(2):
            ref = run(tiny, "ddd", temperature, threshold, seed)
            got = run(tiny, "ddd_async", temperature, threshold, seed)
            assert same_trees(ref, got), (threshold, seed)
            rounds = got.extra["rounds"]
            for levels, drafted in zip(rounds["levels"], rounds["drafted"], strict=True):
                # The rule's stop is acted on `polls` levels late (the copy still in flight),
                # at the latest when drafting ends; a round the rule never stops drafts them all.
                late = min(levels + polls, max_levels) if levels < max_levels else max_levels
                assert drafted == late
                stopped += levels < max_levels
                dropped += drafted - levels
            if polls == 0:  # a copy that has landed at the first poll costs nothing
                assert got.draft_forwards == ref.draft_forwards
    assert stopped > 0
    assert (dropped > 0) == (polls > 0)


def test_reading_the_buffer_without_waiting_gives_other_trees(tiny, monkeypatch) -> None:
    # Power check: a value() that skips the wait reads the stale buffer of a copy in flight.
    def hasty(self: CopiedRead) -> tuple[float, bool]:
        h, flag = self.host.tolist()
        return h, flag != 0.0

    monkeypatch.setattr(host_reads, "late_reader", slow_copies(3))
    monkeypatch.setattr(CopiedRead, "value", hasty)
    differs = [
        not same_trees(run(tiny, "ddd", 0.0, x, 0), run(tiny, "ddd_async", 0.0, x, 0))
        for x in THRESHOLDS
    ]
    assert any(differs)


def test_on_the_cpu_ddd_async_drafts_exactly_what_ddd_drafts(tiny) -> None:
    for threshold in THRESHOLDS:
        ref = run(tiny, "ddd", 0.0, threshold, 0)
        got = run(tiny, "ddd_async", 0.0, threshold, 0)
        assert same_trees(ref, got)
        assert got.extra["rounds"]["drafted"] == got.extra["rounds"]["levels"]
        assert got.draft_forwards == ref.draft_forwards
