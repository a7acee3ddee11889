"""Exact output laws of `beam` and `dsbd` on tiny models, by enumerating every random draw.

Every random choice of both methods goes through a `Draws` object (engine/beams.py). Here an
enumerating stand-in replaces it: each draw from a distribution branches over its support (the
branch weighted by its probability), and each acceptance uniform branches over the intervals
between its row's thresholds (weighted by their lengths; the middle of the interval stands for
it). Rerunning the method once per branch, depth first, gives the probability of every output
exactly (float64), so laws are compared by total variation against 1e-9 rather than by a
low-power test. The models are tiny random Llamas in float64 (their float32 logits are then
identical whichever path, batch or forest, computes them).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pytest
import torch

from specrepro.decoding import beam as beam_module
from specrepro.decoding import dsbd as dsbd_module
from specrepro.decoding.base import MethodError
from specrepro.engine.beams import Draws
from tests.conftest import tiny_llama
from tests.helpers import decoder_for

VOCAB = 4
PROMPT = [1, 2, 3]
EOS = 0


# Tiny models: one intra-op thread is ~10x faster than several contending for the CPUs.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Enumerator(Draws):
    """One branch of every random choice: follows `prefix`, then takes option 0 of each new
    choice, recording how many options each choice had and the branch's probability."""

    def __init__(self, prefix: list[int]) -> None:
        self.prefix = prefix
        self.taken: list[int] = []
        self.options: list[int] = []
        self.weight = 1.0

    def _choose(self, weights: list[float]) -> int:
        i = len(self.taken)
        k = self.prefix[i] if i < len(self.prefix) else 0
        self.taken.append(k)
        self.options.append(len(weights))
        self.weight *= weights[k]
        return k

    def sample(self, probs: torch.Tensor, count: int) -> torch.Tensor:
        values = probs.tolist()
        support = [i for i, v in enumerate(values) if v > 0]
        out = [support[self._choose([values[i] for i in support])] for _ in range(count)]
        return torch.tensor(out, dtype=torch.long, device=probs.device)

    def uniforms(self, thresholds: torch.Tensor) -> torch.Tensor:
        out = []
        for row in thresholds.tolist():
            cuts = sorted({min(max(t, 0.0), 1.0) for t in row} | {0.0, 1.0})
            spans = [(a, b) for a, b in itertools.pairwise(cuts) if b > a]
            a, b = spans[self._choose([b - a for a, b in spans])]
            out.append((a + b) / 2)
        return torch.tensor(out, dtype=thresholds.dtype, device=thresholds.device)


def explore(run: Callable[[Enumerator], object]) -> dict:
    """P(run's result) over every branch of its choices, depth first (one rerun per branch)."""
    law: dict = defaultdict(float)
    stack: list[list[int]] = [[]]
    branches = 0
    while stack:
        prefix = stack.pop()
        branch = Enumerator(prefix)
        out = run(branch)
        branches += 1
        law[out] += branch.weight
        for depth in range(len(prefix), len(branch.options)):
            stack.extend(branch.taken[:depth] + [alt] for alt in range(1, branch.options[depth]))
    assert abs(sum(law.values()) - 1.0) < 1e-12
    law["_branches"] = branches
    return law


def enumerate_law(run: Callable[[], tuple[int, ...]], monkeypatch) -> dict[tuple, float]:
    """P(output) for a method run whose draws come from make_draws, over every branch."""
    current: list[Enumerator] = []
    for module in (beam_module, dsbd_module):
        monkeypatch.setattr(module, "make_draws", lambda generator: current[-1])

    def one(branch: Enumerator) -> tuple[int, ...]:
        current.append(branch)
        return run()

    return explore(one)


def tv(a: dict, b: dict) -> float:
    keys = (set(a) | set(b)) - {"_branches"}
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys)


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    target = tiny_llama(vocab_size=VOCAB, seed=0, layers=1, hidden=16).double()
    draft = tiny_llama(vocab_size=VOCAB, seed=1, layers=1, hidden=16).double()
    return target, draft


def method_law(pair, method, temperature, max_new, monkeypatch, eos=(), **params):
    target, draft = pair
    gen = decoder_for(target, draft if method == "dsbd" else None, method, temperature,
                      eos=eos, **params)  # fmt: skip

    def run() -> tuple[int, ...]:
        result, _ = gen.generate(PROMPT, max_new, seed=0)
        return tuple(result.tokens)

    return enumerate_law(run, monkeypatch)


def ancestral_law(target, temperature, top_k, top_p, max_new, eos=()) -> dict[tuple, float]:
    """Multinomial sampling of the warped target (T, top-k, top-p on each next-token row),
    written out: the law of the paper's memory-efficient DSBD at width 1."""
    from specrepro.engine.beams import joint_distribution

    law: dict[tuple, float] = {}

    def grow(tokens: tuple[int, ...], prob: float) -> None:
        if len(tokens) == max_new or (tokens and tokens[-1] in eos):
            law[tokens] = law.get(tokens, 0.0) + prob
            return
        with torch.no_grad():
            logits = target(torch.tensor([PROMPT + list(tokens)])).logits[0, -1].float()
        row = torch.log_softmax(logits.double(), -1)[None]
        for token, p in enumerate(joint_distribution(row, temperature, top_k, top_p).tolist()):
            if p > 0:
                grow(tokens + (token,), prob * p)

    grow((), 1.0)
    return law


def numpy_joint(scores: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Beam sampling's step distribution in numpy (docs/methods.md#beam). Candidates tied with the
    last one kept stay (duplicate beams give exact ties; the engine keeps them all)."""
    flat = scores.ravel() / temperature
    keep = np.isfinite(flat)
    if 0 < top_k < flat.size:
        keep &= flat >= np.sort(flat)[::-1][top_k - 1]
    weights = np.where(keep, np.exp(np.where(keep, flat - flat[keep].max(), 0.0)), 0.0)
    probs = weights / weights.sum()
    if top_p < 1.0:
        ordered = np.sort(probs)[::-1]
        inside = np.cumsum(ordered) - ordered < top_p
        probs = np.where(probs >= ordered[inside][-1], probs, 0.0)
        probs /= probs.sum()
    return probs


def beam_law(target, width, temperature, top_k, top_p, max_new, eos=()) -> dict[tuple, float]:
    """Beam sampling's output law written out independently of engine/beams.py: numpy joint,
    every tuple of W draws, EOS beams pooled, the output the best beam score over length
    (pool first, ties to the earlier)."""
    law: dict[tuple, float] = {}

    def logp(tokens: tuple[int, ...]) -> np.ndarray:
        with torch.no_grad():
            logits = target(torch.tensor([PROMPT + list(tokens)])).logits[0, -1].float()
        return torch.log_softmax(logits.double(), -1).numpy()

    def level(live: list[tuple], pool: list[tuple], prob: float) -> None:
        if not live:
            best = max(pool, key=lambda b: b[1] / len(b[0]))
            law[best[0]] = law.get(best[0], 0.0) + prob
            return
        scores = np.stack([b[1] + logp(b[0]) for b in live])
        joint = numpy_joint(scores, temperature, top_k, top_p)
        support = [i for i in range(joint.size) if joint[i] > 0]
        for picks in itertools.product(support, repeat=width):
            new = [(live[x // VOCAB][0] + (x % VOCAB,), float(np.log(joint[x]))) for x in picks]
            done = [b for b in new if b[0][-1] in eos or len(b[0]) == max_new]
            rest = [b for b in new if b not in done]
            level(rest, pool + done, prob * float(np.prod(joint[list(picks)])))

    level([((), 0.0)], [], 1.0)
    return law


# (name, settings, max_new, eos): DSBD with every level held at W (min_width = W) against beam
# sampling at W. Small supports (top-k on the joint, EOS) keep the branches few.
LOSSLESS = [
    ("two-levels-rows", dict(gamma=2, top_k=2, top_p=1.0, refill="W", layout="rows"), 1.0, 2, ()),
    (
        "eos-pool-shared-T0.7",
        dict(gamma=2, top_k=2, top_p=1.0, refill="W", layout="shared_prefix"), 0.7, 2, (EOS,),
    ),
    ("top-p-T1.3-refill-width", dict(gamma=1, top_k=0, top_p=0.8, refill="width"), 1.3, 1, ()),
    (
        "w_thres-0-top-p-refill-width-shared",
        dict(gamma=2, top_k=0, top_p=0.6, w_thres=0.0, min_width=1, refill="width",
             layout="shared_prefix"), 1.2, 2, (),
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "temperature", "max_new", "eos"),
    [case[1:] for case in LOSSLESS],
    ids=[case[0] for case in LOSSLESS],
)
def test_dsbd_output_law_is_beam_samplings_exactly(
    pair, monkeypatch, settings, temperature, max_new, eos
) -> None:
    beam = method_law(
        pair, "beam", temperature, max_new, monkeypatch, eos=eos, width=2,
        top_k=settings["top_k"], top_p=settings["top_p"],
    )  # fmt: skip
    written = beam_law(pair[0], 2, temperature, settings["top_k"], settings["top_p"], max_new, eos)
    assert tv(beam, written) < 1e-9  # the enumeration and `beam` against the law written out
    # min_width = W (or w_thres = 0) holds every level at W.
    dsbd = method_law(
        pair, "dsbd", temperature, max_new, monkeypatch, eos=eos, width=2,
        **{"min_width": 2, **settings},
    )  # fmt: skip
    assert all(w == [2] * len(w) for w in widths_seen(pair, settings, temperature, max_new, eos))
    assert tv(dsbd, beam) < 1e-9
    if eos:  # pooled beams of different lengths did compete
        assert {len(k) for k in dsbd if k != "_branches"} == {1, 2}


def widths_seen(pair, settings, temperature, max_new, eos) -> list[list[int]]:
    target, draft = pair
    gen = decoder_for(target, draft, "dsbd", temperature, eos=eos, width=2,
                      **{"min_width": 2, **settings})  # fmt: skip
    return [
        w
        for seed in range(3)
        for w in gen.generate(PROMPT, max_new, seed)[0].extra["rounds"]["widths"]
    ]


def test_exact_comparison_has_power(pair, monkeypatch) -> None:
    # Without the residual update (a rejected slot keeps its target), DSBD is visibly off.
    from specrepro.engine import beams as beams_module

    settings = dict(width=2, min_width=2, gamma=1, top_k=2, top_p=1.0)
    beam = method_law(pair, "beam", 1.0, 1, monkeypatch, width=2, top_k=2, top_p=1.0)
    monkeypatch.setattr(beams_module, "residual", lambda p, q: p)
    wrong = method_law(pair, "dsbd", 1.0, 1, monkeypatch, **settings)
    assert tv(wrong, beam) > 1e-3


@pytest.mark.parametrize("refill", ["W", "width"])
def test_dynamic_widths_below_w_are_not_beam_samplings_law(pair, monkeypatch, refill) -> None:
    # w_thres = 1 holds every in-round level at min_width = 1 < W = 2. Each level's beams are
    # still exact samples of the target's joint, but how many there are depends on the
    # acceptances (a fully accepted level continues with 1 beam, a refilled one holds W), so
    # the output is not beam sampling's law at W (nor at 1): measured exactly here.
    # (Over one level the "width" rule is beam sampling at that width; the second level shows
    # the difference: a fully accepted round ends with a bonus level of W beams.)
    settings = dict(width=2, min_width=1, w_thres=1.0, gamma=1, top_k=2, top_p=1.0)
    dsbd = method_law(pair, "dsbd", 1.0, 2, monkeypatch, refill=refill, **settings)
    at_w = method_law(pair, "beam", 1.0, 2, monkeypatch, width=2, top_k=2, top_p=1.0)
    at_1 = method_law(pair, "beam", 1.0, 2, monkeypatch, width=1, top_k=2, top_p=1.0)
    assert tv(dsbd, at_w) > 1e-3 and tv(dsbd, at_1) > 1e-3


def test_memory_efficient_at_width_one_is_multinomial_sampling(pair, monkeypatch) -> None:
    # One input beam per round, one output beam at its end; at width 1 every output token is
    # one exact draw of the warped next-token distribution.
    settings = dict(width=2, min_width=1, w_thres=1.0, gamma=2, top_k=2, top_p=1.0)
    law = method_law(pair, "dsbd", 0.8, 2, monkeypatch, eos=(EOS,), memory_efficient=True,
                     **settings)  # fmt: skip
    assert tv(law, ancestral_law(pair[0], 0.8, 2, 1.0, 2, (EOS,))) < 1e-9
    beam = method_law(pair, "beam", 0.8, 2, monkeypatch, eos=(EOS,), width=2, top_k=2, top_p=1.0)
    assert tv(law, beam) > 1e-3  # it trades beam sampling's law for memory


def test_memory_efficient_keeps_one_beam_per_round(pair) -> None:
    target, draft = pair
    gen = decoder_for(target, draft, "dsbd", 1.0, width=3, gamma=2, memory_efficient=True,
                      top_k=0, top_p=1.0)  # fmt: skip
    for seed in range(3):
        result, _ = gen.generate(PROMPT, 8, seed=seed)
        assert set(result.extra["rounds"]["final_width"]) <= {0, 1}
        assert result.new_tokens == 8 or result.new_tokens > 0


def test_renamed_and_bad_dsbd_keys_are_refused(pair) -> None:
    target, draft = pair
    with pytest.raises(MethodError, match=r"layout: shared_prefix.*memory_efficient: true"):
        decoder_for(target, draft, "dsbd", 1.0, memory_saving=True)
    with pytest.raises(MethodError, match="refill must be 'W' or 'width', got 'w'"):
        decoder_for(target, draft, "dsbd", 1.0, refill="w")
    with pytest.raises(MethodError, match="got 'trie'"):
        decoder_for(target, draft, "dsbd", 1.0, layout="trie")
    with pytest.raises(MethodError, match="memory_efficient must be"):
        decoder_for(target, draft, "dsbd", 1.0, memory_efficient="yes")
    assert dsbd_module.Params().refill == "W" and dsbd_module.Params().layout == "shared_prefix"


@pytest.mark.parametrize("drafts", [2, 3])
def test_accepted_count_law_and_slots_exactly(drafts) -> None:
    # verify_level over every draft tuple and acceptance outcome: the number of accepted drafts
    # follows accepted_count_distribution, and with no width cap each filled slot is p.
    from specrepro.engine.beams import accepted_count_distribution, verify_level

    rng = np.random.default_rng(drafts)
    p = torch.tensor(rng.dirichlet(np.full(5, 0.6)))
    q = torch.tensor(rng.dirichlet(np.full(5, 0.6)))

    def count(branch: Enumerator) -> int:
        picks = branch.sample(q, drafts).tolist()
        return len(verify_level(p, q, picks, drafts, branch).accepted)

    law = explore(count)
    exact = accepted_count_distribution(p, q, drafts)
    assert max(abs(law.get(k, 0.0) - exact[k]) for k in range(drafts + 1)) < 1e-12

    def first_slot(branch: Enumerator) -> int:
        picks = branch.sample(q, drafts).tolist()
        return verify_level(p, q, picks, 1, branch).samples[0]

    slot = explore(first_slot)
    assert max(abs(slot.get(x, 0.0) - float(p[x])) for x in range(5)) < 1e-12
