"""A CPU proxy for hidden GPU syncs: how often a method reads a tensor's value on the host.

On a GPU every such read (`item`, `tolist`, `bool()`, `int()`, `float()`, `.cpu()`, `.numpy()`,
a tensor used as a Python index) waits for all queued device work: a sync, and while it lasts
the GPU runs dry of queued kernels. The CPU has no syncs, but the reads are the same Python
calls, so counting them during a generation on a tiny model bounds the syncs per round without
a GPU (`python -m specrepro.bench gpu-check` checks the real thing on a CUDA device).

Each method gets a ceiling on reads per round (a round = one verification forward), set to what
the code does with a little headroom, and the reads it needs are written down beside it. A new
read inside a round loop fails this test; lower the ceiling when a read goes away.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import torch

from specrepro.engine import host_reads
from specrepro.engine.runner import ModelRunner
from specrepro.models.eagle_head import build_head, head_config_for
from tests.conftest import tiny_llama
from tests.helpers import decoder_for

VOCAB = 8
PROMPT = [1, 2, 3]
MAX_NEW = 30
TREE_METHODS = ("eagle", "eagle2", "ddd", "ddd_async")
READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy")
DDD = {"top_k": 3, "total_tokens": 10, "check_levels": [2, 3], "threshold": -0.5, "max_levels": 5}
PARAMS: dict[str, dict] = {
    "vanilla": {},
    "sps": {"gamma": 3},
    "eagle": {},  # EAGLE-1's 25-node tree
    "eagle2": {"top_k": 3, "depth": 4, "total_tokens": 10},
    "ddd": DDD,
    "ddd_async": DDD,
    "dsbd": {"width": 3, "gamma": 3},
}
# (method, temperature) -> (most reads per round, why the round needs them). Every method also
# reads once per model per round in ensure_finite() (engine/runner.py), before it commits
# tokens: non-finite logits must stop a run, and that is read once per round, not per forward.
# Measured on this setup (reads per round): vanilla 2.07, sps 4.0 (5.89 before issue 29's
# drafted tokens on the device), eagle 3.07 / 8.38 (T=1), eagle2 4.07 / 7.21, ddd and ddd_async
# 5.07 / 8.23, dsbd 6.96 (11.72 before issue 18's one read per verified level). Before issue
# 17's changes: eagle 37.1 / 46.4, eagle2 6.11 / 9.58, ddd and ddd_async 8.11 / 11.45, dsbd 22.6.
CEILINGS: dict[tuple[str, float], tuple[float, str]] = {
    ("vanilla", 0.0): (2.2, "the chosen token (the next forward's input) + 1 finite check"),
    ("sps", 0.0): (
        4.2,
        "the gamma=3 drafted tokens in one read (each is the draft's next input on the device) "
        "+ the target's argmaxes to compare with them + 2 finite checks",
    ),
    ("eagle", 0.0): (
        3.3,
        "the target's argmaxes and the drafted tokens in one read (the host walks the tree to "
        "commit the accepted path) + 2 finite checks; the static tree's indices and masks "
        "live on the device",
    ),
    ("eagle", 1.0): (
        9.0,
        "eagle at T=0's reads + one per tried child (a child's uniform is drawn only after its "
        "elder sibling's rejection is known: the generator's stream at a seed) + the bonus",
    ),
    ("eagle2", 0.0): (
        4.3,
        "the reranked tree (shape and tokens, one read: the verification mask is built from "
        "it) + the target's argmaxes + 2 finite checks",
    ),
    ("eagle2", 1.0): (7.8, "eagle2 at T=0's reads + one per tried child + the bonus"),
    ("ddd", 0.0): (
        5.5,
        "eagle2's reads + one per check level reached (H and the stop flag in one read: the "
        "sync DDD pays to decide its depth)",
    ),
    ("ddd", 1.0): (8.8, "ddd at T=0's reads + one per tried child + the bonus"),
    ("ddd_async", 0.0): (
        5.5,
        "as ddd: on the CPU its flags are host values; on a GPU these reads are of pinned host "
        "memory after the copy's event (no sync, see test_ddd_async.py)",
    ),
    ("ddd_async", 1.0): (8.8, "as ddd at T=1"),
    ("dsbd", 1.0): (
        7.5,
        "per draft level the W draws with their log joint probabilities (the draft's trie is "
        "built on the host); per verified level one read (every draft's test against every "
        "residual of the chain, the count law's inputs and the scores together); one read for "
        "the draws of unfilled slots or the bonus level; + 2 finite checks",
    ),
}


@contextlib.contextmanager
def patched_reads(on_read: Callable[[str], None]) -> Iterator[None]:
    """Call on_read(name) at each outermost host read of a tensor value (a read made inside
    another, e.g. float() through item(), is not counted twice)."""
    originals = {name: getattr(torch.Tensor, name) for name in READS}
    depth = [0]

    def wrap(name: str, method: Callable) -> Callable:
        def read(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            if depth[0] == 0:
                on_read(name)
            depth[0] += 1
            try:
                return method(self, *args, **kwargs)
            finally:
                depth[0] -= 1

        return read

    for name, method in originals.items():
        setattr(torch.Tensor, name, wrap(name, method))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


@contextlib.contextmanager
def counting_reads() -> Iterator[Counter]:
    counts: Counter = Counter()
    with patched_reads(lambda name: counts.update([name])):
        yield counts


@contextlib.contextmanager
def counting_blocking_copies() -> Iterator[list[str]]:
    """The CPU stand-in for the syncs CUDA's sync debug mode reports at a copy from pageable
    host memory: every tensor built from Python values straight onto a device
    (`torch.tensor(list, device=...)`, `torch.as_tensor(list, device=...)`). On a GPU each such
    copy blocks until done; the engine builds the tensor on the host and hands it to
    tree.to_device (pinned, non-blocking) instead."""
    calls: list[str] = []
    originals = {name: getattr(torch, name) for name in ("tensor", "as_tensor")}

    def wrap(name: str, make: Callable) -> Callable:
        def build(data: object, *args: object, **kwargs: object) -> torch.Tensor:
            if kwargs.get("device") is not None and not isinstance(data, torch.Tensor):
                calls.append(f"torch.{name}(..., device={kwargs['device']})")
            return make(data, *args, **kwargs)

        return build

    for name, make in originals.items():
        setattr(torch, name, wrap(name, make))
    try:
        yield calls
    finally:
        for name, make in originals.items():
            setattr(torch, name, make)


class HostRead(RuntimeError):
    """A tensor value was read on the host where none may be (a RuntimeError, as CUDA's sync
    debug mode raises)."""


@contextlib.contextmanager
def refusing_reads() -> Iterator[None]:
    """The CPU stand-in for torch.cuda.set_sync_debug_mode("error"): any host read raises."""

    def refuse(name: str) -> None:
        raise HostRead(f"Tensor.{name} inside a region that must not read the device")

    with patched_reads(refuse):
        yield


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    target = tiny_llama(vocab_size=VOCAB, seed=0)
    torch.manual_seed(11)
    head = build_head(head_config_for(target), target)
    return {"target": target, "draft": tiny_llama(vocab_size=VOCAB, seed=1), "head": head}


def decoder(models: dict, method: str, temperature: float):
    draft = models["draft"] if method in ("sps", "dsbd") else None
    head = models["head"] if method in TREE_METHODS else None
    return decoder_for(models["target"], draft, method, temperature, head=head, **PARAMS[method])


@pytest.mark.parametrize(("method", "temperature"), sorted(CEILINGS))
def test_host_reads_per_round_stay_under_the_methods_ceiling(
    models, method: str, temperature: float
) -> None:
    gen = decoder(models, method, temperature)
    gen.generate(PROMPT, 4, seed=0)  # warm-up: anything done once per process is not counted
    with counting_reads() as counts:
        result, _ = gen.generate(PROMPT, MAX_NEW, seed=0)
    rounds = result.verify_forwards
    assert rounds >= 8, "too few rounds to measure a per-round rate"
    per_round = sum(counts.values()) / rounds
    ceiling, why = CEILINGS[(method, temperature)]
    assert per_round <= ceiling, (
        f"{method} T={temperature}: {per_round:.2f} host reads per round > {ceiling} "
        f"({dict(counts)}); its rounds need: {why}"
    )


def test_the_counter_sees_every_kind_of_read() -> None:
    t = torch.tensor([1.5])
    with counting_reads() as counts:
        t.item(), t.tolist(), bool(t), int(t), float(t), t.cpu(), t.numpy()
        [0, 1][torch.tensor(1)]
    assert sum(counts.values()) == 8
    assert set(counts) == set(READS)


@pytest.mark.parametrize("method", TREE_METHODS)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_tree_draft_levels_read_nothing_on_the_host(models, method: str, temperature: float):
    # The regions bench gpu-check runs under CUDA's sync debug mode "error".
    gen = decoder(models, method, temperature)
    levels = []

    @contextlib.contextmanager
    def region() -> Iterator[None]:
        levels.append(1)
        with refusing_reads():
            yield

    with host_reads.checked_levels(region):
        result, _ = gen.generate(PROMPT, MAX_NEW, seed=0)
    assert result.new_tokens == MAX_NEW
    assert len(levels) >= result.verify_forwards  # the region did run: >= 1 level per round


def test_dsbd_draft_forwards_read_nothing_on_the_host(models, monkeypatch) -> None:
    gen = decoder(models, "dsbd", 1.0)
    forward = ModelRunner.forward
    calls = []

    def strict(self: ModelRunner, *args: object, **kwargs: object) -> object:
        if self is not gen.draft:
            return forward(self, *args, **kwargs)
        calls.append(1)
        with refusing_reads():
            return forward(self, *args, **kwargs)

    monkeypatch.setattr(ModelRunner, "forward", strict)
    result, _ = gen.generate(PROMPT, MAX_NEW, seed=0)
    assert result.new_tokens > 0
    assert len(calls) >= result.target_forwards


def test_the_read_refusal_catches_a_read_in_a_draft_level(models, monkeypatch) -> None:
    # Power check: a host read slipped into a level (here: the head's positions) is caught.
    gen = decoder(models, "eagle2", 0.0)
    forward = ModelRunner.forward

    def reading(self: ModelRunner, *args: object, **kwargs: object) -> object:
        positions = kwargs.get("positions")
        if positions is not None:
            int(positions[0])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(ModelRunner, "forward", reading)
    with host_reads.checked_levels(refusing_reads), pytest.raises(HostRead):
        gen.generate(PROMPT, MAX_NEW, seed=0)


@pytest.mark.parametrize(("method", "temperature"), sorted(CEILINGS))
def test_no_round_copies_host_values_straight_to_the_device(models, method, temperature) -> None:
    gen = decoder(models, method, temperature)
    gen.generate(PROMPT, 4, seed=0)
    with counting_blocking_copies() as copies:
        result, _ = gen.generate(PROMPT, MAX_NEW, seed=0)
    assert result.verify_forwards >= 8
    assert copies == [], f"{method} T={temperature}: blocking host-to-device copies {copies}"


def test_the_copy_stand_in_catches_a_list_copied_to_the_device_in_a_round(models, monkeypatch):
    gen = decoder(models, "vanilla", 0.0)
    forward = ModelRunner.forward

    def copying(self: ModelRunner, tokens, *args: object, **kwargs: object) -> object:
        if isinstance(tokens, list):
            tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.device)
        return forward(self, tokens, *args, **kwargs)

    monkeypatch.setattr(ModelRunner, "forward", copying)
    with counting_blocking_copies() as copies:
        result, _ = gen.generate(PROMPT, MAX_NEW, seed=0)
    assert len(copies) >= result.target_forwards
