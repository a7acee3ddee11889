"""DSBD's exact law below W, enumerated independently and compared with the implementation.

The law enumerated here (DsbdLaw; from docs/methods.md#dsbds-law-below-w and decoding/dsbd.py's
docstring, no engine code).
A round starts from the live beams, each with its score: the log of the target
joint probability it was kept with (the root: 0). Let g = min(gamma, max_new - length).
Drafting: level 1 holds W i.i.d. draws from the draft's joint q_1 over (live beam, token),
softmax((score + log q(token | beam)) / T) with top-k / top-p on the joint (ties kept); level
i + 1 holds W i.i.d. draws from q_(i+1), the same over (every level-i draft, token) with the
draft's score log q_i(x); finished drafts are excluded, and drafting stops after g levels or at
a level whose drafts are all finished. Verification of level i: p_i is the target's joint over
(level i - 1 node, token) in which only the beams accepted at level i - 1 (level 0: the live
beams) take part, with their scores log p_(i-1)(x), so a draft whose parent was rejected has
p_i = 0 and is always rejected. The width n_i is the largest n with P(K >= n) >= w_thres,
floored at min_width, K being the acceptances when all W drafts are tried with no cap (after r
rejections in a row a try accepts with sum_x min(p_r(x), q_i(x))). The drafts are tried in
order: draft x_j is accepted with probability min(1, p_r(x_j) / q_i(x_j)), where p_0 = p_i,
p_(r+1) = norm(max(p_r - q_i, 0)) and an acceptance resets r to 0; trying stops once n_i are
accepted. With n_i accepted, they are level i (scores log p_i(x); finished ones pooled) and the
round goes on with the unfinished ones. Otherwise the round ends with the a < n_i accepted
beams, one draw from the open slot's p_r (after its trailing r rejections) and W - a - 1
(refill W) or n_i - a - 1 (refill width) i.i.d. draws from p_i, every score log p_i(x). After g
fully accepted levels the round ends with W i.i.d. draws from p_(g+1) (the bonus level).
Memory-efficient mode: a round starts from one beam and ends with one: the open slot's draw
(the other beams of that level are dropped, but the finished ones among them are pooled) or
one bonus draw. Finished beams (EOS or max_new tokens) are pooled; the output is
the pooled beam with the best score / length. So a round ends with W beams (refill W, or the
bonus level), n_i (refill width, ended at level i) or 1 (memory-efficient), finished ones
included; each beam is marginally an exact draw of its level's p_i, but which levels pass, and
so how many beams (n_i < W) carry on, depends on the draws: the output law is neither beam
sampling's at W nor at n_i.

The implementation's law: a stand-in for its `Draws` branches every draw over its support and
every acceptance uniform over the spans between its thresholds (the span's middle standing for
it), one rerun per branch, as in test_dsbd_exact.py; what a round ends with is read at
verify_round's return and BeamPool.add. Laws are compared by total variation < 1e-9. With
random drafts at W = 3 and gamma = 3 that is 10^4-10^5 reruns, so most cases fix the drafts by
a policy (the law given the drafts: verification, where DSBD below W lives, stays random); the
drafts are enumerated too at gamma = 1; and the random-draft law at gamma = 3 is tested with
1000 seeded runs (chi-square, power stated there). Models: V = 3, a tiny float64 target and a
draft that is the target with a perturbed head (and a vocabulary-subset version of it).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from specrepro.decoding import dsbd as dsbd_module
from specrepro.engine import beams as beams_module
from specrepro.engine.beams import Draws
from specrepro.models.vocab_subset import apply_subset
from tests.conftest import tiny_llama
from tests.helpers import decoder_for
from tests.test_dsbd_exact import Enumerator

VOCAB = 3
PROMPT = [1, 2]
EOS = 0
NEG = float("-inf")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------
# The law, written out from docs/methods.md and the docstrings of decoding/dsbd.py (no engine code)
# ---------------------------------------------------------------------------------------------


def warped_joint(scores: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Beam sampling's step distribution (docs/methods.md#beam): softmax(scores / T) over every
    (row, token) candidate, top-k then top-p on that joint, ties with the last kept candidate
    kept."""
    flat = scores.ravel() / temperature
    keep = np.isfinite(flat)
    if 0 < top_k < flat.size:
        keep &= flat >= np.sort(flat)[::-1][top_k - 1]
    weights = np.zeros_like(flat)
    weights[keep] = np.exp(flat[keep] - flat[keep].max())
    probs = weights / weights.sum()
    if top_p < 1.0:
        ordered = np.sort(probs)[::-1]
        inside = np.cumsum(ordered) - ordered < top_p
        probs = np.where(probs >= ordered[inside][-1], probs, 0.0)
        probs = probs / probs.sum()
    return probs


def residual_of(cur: np.ndarray, q: np.ndarray) -> np.ndarray:
    left = np.maximum(cur - q, 0.0)
    return left / left.sum()


@dataclass(frozen=True, order=True)
class Beam:
    tokens: tuple[int, ...]
    score: float  # log of the target joint probability it was kept with

    def key(self) -> tuple:
        return (self.tokens, round(self.score, 6))


@dataclass(frozen=True)
class Node:
    """A drafted node: its sequence, its draft beam score, whether it is finished."""

    tokens: tuple[int, ...]
    score: float
    finished: bool


@dataclass(frozen=True)
class Level:
    q: np.ndarray  # the draft's joint over (previous-level row, token), flat
    picks: tuple[int, ...]  # the W drafts, flat indices into q
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Settings:
    """dsbd's parameters (decoding/dsbd.py Params) and the run's."""

    width: int = 3
    gamma: int = 3
    w_thres: float = 0.6
    min_width: int = 1
    refill: str = "W"
    memory_efficient: bool = False
    top_k: int = 3
    top_p: float = 1.0
    temperature: float = 1.0
    max_new: int = 6
    eos: tuple[int, ...] = ()
    layout: str = "rows"

    def params(self) -> dict:
        return dict(
            width=self.width, gamma=self.gamma, w_thres=self.w_thres, min_width=self.min_width,
            refill=self.refill, memory_efficient=self.memory_efficient, top_k=self.top_k,
            top_p=self.top_p, layout=self.layout,
        )  # fmt: skip


class Policy:
    """Deterministic drafts, for laws given the draft forest: level i's W picks are either
    `fixed[i]` (flat candidates) or the candidates of the draft's joint at `ranks[i]`
    (descending probability, ties to the lower index; a rank past the support wraps)."""

    def __init__(self, ranks=None, fixed=None) -> None:
        self.ranks, self.fixed = ranks, fixed

    def __call__(self, q: np.ndarray, level: int) -> tuple[int, ...]:
        if self.fixed is not None:
            picks = tuple(self.fixed[level])
        else:
            order = sorted(np.flatnonzero(q).tolist(), key=lambda x: (-round(q[x], 9), x))
            picks = tuple(order[r % len(order)] for r in self.ranks[level % len(self.ranks)])
        assert all(q[x] > 0 for x in picks), (picks, q)
        return picks


# One round's result: (widths of the verified levels, beams pooled, beams left live, levels
# fully accepted), the beams sorted.
RoundKey = tuple[tuple[int, ...], tuple, tuple, int]


class DsbdLaw:
    """DSBD's law, enumerated over every draw with exact probabilities (float64).

    Models are queried through their plain causal forward on the whole sequence, so nothing of
    the forest, cache or verification code is used."""

    def __init__(self, target, draft, s: Settings) -> None:
        self.target, self.draft, self.s = target, draft, s
        # Memory-efficient mode, the level that ends the round: whether the accepted beams that
        # are dropped still go to the pool when finished (one reading of dsbd.py's docstring).
        self._logp: dict = {}
        self._width: dict = {}
        self.round_cache: dict = {}
        # Expected numbers of events, summed over round_law calls.
        self.stats: dict[str, float] = defaultdict(float)

    # -- models ---------------------------------------------------------------------------
    def logp(self, model, tokens: tuple[int, ...]) -> np.ndarray:
        key = (id(model), tokens)
        if key not in self._logp:
            with torch.no_grad():
                logits = model(torch.tensor([PROMPT + list(tokens)])).logits[0, -1].float()
            self._logp[key] = torch.log_softmax(logits.double(), -1).numpy()
        return self._logp[key]

    def joint(self, model, rows: list[tuple[int, ...]], scores: list[float]) -> np.ndarray:
        pairs = zip(rows, scores, strict=True)
        table = np.stack([score + self.logp(model, toks) for toks, score in pairs])
        return warped_joint(table, self.s.temperature, self.s.top_k, self.s.top_p)

    def done(self, tokens: tuple[int, ...]) -> bool:
        return len(tokens) >= self.s.max_new or tokens[-1] in self.s.eos

    # -- a level's width --------------------------------------------------------------------
    def count_law(self, p: np.ndarray, q: np.ndarray, m: int) -> list[float]:
        """P(K = k): K drafts accepted when m i.i.d. drafts of q are tried one after the other
        with no cap (an acceptance resets the slot's target to p, a rejection moves it to the
        residual): a Markov chain whose step accepts with sum(min(p_r, q))."""
        chain = [p]
        for _ in range(m):
            chain.append(residual_of(chain[-1], q) if np.maximum(chain[-1] - q, 0).sum() > 0
                         else chain[-1])  # fmt: skip
        state = {(0, 0): 1.0}
        for _ in range(m):
            nxt: dict = defaultdict(float)
            for (k, r), pr in state.items():
                a = float(np.minimum(chain[r], q).sum())
                nxt[(k + 1, 0)] += pr * a
                nxt[(k, r + 1)] += pr * (1.0 - a)
            state = nxt
        law = [0.0] * (m + 1)
        for (k, _), pr in state.items():
            law[k] += pr
        return law

    def level_width(self, p: np.ndarray, q: np.ndarray) -> int:
        key = (p.tobytes(), q.tobytes())
        if key not in self._width:
            m = self.s.width
            law = self.count_law(p, q, m)
            tails = [sum(law[n:]) for n in range(m + 1)]
            # A tail within rounding of the threshold would make the width a float accident.
            assert all(abs(t - self.s.w_thres) > 1e-9 for t in tails), (tails, self.s.w_thres)
            n = max([k for k in range(m + 1) if tails[k] >= self.s.w_thres], default=0)
            self._width[key] = max(n, min(self.s.min_width, m))
        return self._width[key]

    # -- a round ----------------------------------------------------------------------------
    def draft_level(self, prev: tuple[Node, ...], policy, level: int):
        """The draft's level: its joint q over the previous level's nodes (level 1: the live
        beams with their scores; finished nodes dead) and every tuple of W i.i.d. picks with
        its probability (or the policy's picks, probability 1)."""
        q = self.joint(
            self.draft, [n.tokens for n in prev], [NEG if n.finished else n.score for n in prev]
        )
        if policy is None:
            picks_law = [
                (float(np.prod(q[list(xs)])), xs)
                for xs in itertools.product(np.flatnonzero(q).tolist(), repeat=self.s.width)
            ]
        else:
            picks_law = [(1.0, policy(q, level))]
        for pr, picks in picks_law:
            nodes = []
            for x in picks:
                toks = prev[x // VOCAB].tokens + (x % VOCAB,)
                nodes.append(Node(toks, math.log(q[x]), self.done(toks)))
            yield pr, Level(q, picks, tuple(nodes))

    def after_rejection(self, cur: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The open slot's target after a rejection: the residual."""
        return residual_of(cur, q)

    def walk(self, p, q, picks, n) -> list[tuple[float, list[int], np.ndarray]]:
        """The sequential acceptance: (probability, accepted draft indices, the open slot's
        target) for every path; draft j is accepted with min(1, cur(x_j) / q(x_j)), cur being
        p after an acceptance and norm(max(cur - q, 0)) after a rejection; the walk stops when
        n drafts are accepted."""
        out = []

        def go(j, accepted, cur, prob):
            if len(accepted) == n or j == len(picks):
                out.append((prob, accepted, cur))
                return
            x = picks[j]
            a = min(1.0, cur[x] / q[x])
            if a > 0:
                go(j + 1, accepted + [j], p, prob * a)
            if a < 1:
                go(j + 1, accepted, self.after_rejection(cur, q), prob * (1 - a))

        go(0, [], p, 1.0)
        return out

    def round_law(self, live: tuple[Beam, ...], policy: Policy | None = None) -> dict:
        """The law of a round's (widths, pooled beams, live beams, levels fully accepted) from
        the live beams, over every draft (or the policy's) and every verification draw. The
        draft's level i + 1 is independent of level i's verification, so it is enumerated
        only where level i passed (the others sum it out)."""
        if (live, policy) in self.round_cache:
            return self.round_cache[(live, policy)]
        s = self.s
        depth = min(s.gamma, s.max_new - len(live[0].tokens))
        law: dict[RoundKey, float] = defaultdict(float)

        def draws(dist: np.ndarray, count: int) -> Iterator[tuple[float, tuple[int, ...]]]:
            support = np.flatnonzero(dist).tolist()
            for xs in itertools.product(support, repeat=count):
                yield float(np.prod(dist[list(xs)])), xs

        def close(prob, widths, pooled, made, passed):
            pooled = pooled + [b for b in made if self.done(b.tokens)]
            final = [b for b in made if not self.done(b.tokens)]
            law[(tuple(widths), tuple(sorted(pooled)), tuple(sorted(final)), passed)] += prob

        def step(i, prev, valid, prob, widths, pooled):
            rows = [n.tokens for n in prev]
            p = self.joint(self.target, rows, [valid[r].score if r in valid else NEG
                                               for r in range(len(rows))])  # fmt: skip
            beam_at = lambda x: Beam(rows[x // VOCAB] + (x % VOCAB,), math.log(p[x]))  # noqa: E731
            if i == depth:  # every level passed: the bonus level
                for pr, xs in draws(p, 1 if s.memory_efficient else s.width):
                    close(prob * pr, widths, pooled, [beam_at(x) for x in xs], i)
                return
            for pr_level, level in self.draft_level(prev, policy, i):
                if i and any(x // VOCAB not in valid for x in level.picks):
                    self.stats["drafts from rejected parents"] += prob * pr_level
                n = self.level_width(p, level.q)
                here = widths + [n]
                for pr, accepted, cur in self.walk(p, level.q, level.picks, n):
                    at = prob * pr_level * pr
                    kept = [beam_at(level.picks[j]) for j in accepted]
                    if len(accepted) == n:
                        nxt = {j: b for j, b in zip(accepted, kept, strict=True)
                               if not self.done(b.tokens)}  # fmt: skip
                        done = pooled + [b for b in kept if self.done(b.tokens)]
                        if nxt:
                            step(i + 1, level.nodes, nxt, at, here, done)
                        else:
                            close(at, here, done, [], i + 1)
                        continue
                    # Not fully accepted: the open slot draws from its residual, further slots
                    # from p up to W (refill W) or n (refill width); memory-efficient keeps the
                    # open slot's beam only.
                    extra = 0 if s.memory_efficient else (
                        (s.width if s.refill == "W" else n) - len(accepted) - 1
                    )  # fmt: skip
                    for pr_open, (x0,) in draws(cur, 1):
                        for pr_rest, xs in draws(p, extra):
                            opened = [beam_at(x0)] + [beam_at(x) for x in xs]
                            total = at * pr_open * pr_rest
                            if not s.memory_efficient:
                                close(total, here, pooled, kept + opened, i)
                                continue
                            lost = [b for b in kept if self.done(b.tokens)]
                            close(total, here, pooled + lost, opened, i)

        roots = tuple(Node(b.tokens, b.score, False) for b in live)
        step(0, roots, dict(enumerate(live)), 1.0, [], [])
        self.round_cache[(live, policy)] = dict(law)
        return self.round_cache[(live, policy)]

    def output_law(self, policy: Policy | None = None) -> dict[tuple, float]:
        """P(output tokens, round-end beam counts, widths per round) over whole generations:
        rounds until no beam is live; the output is the pooled beam with the best score over
        length (docs/methods.md#dsbd, the reference's rule)."""
        memo: dict = {}

        def solve(live: tuple[Beam, ...], best: Beam | None) -> dict:
            if not live:
                return {(best.tokens, (), ()): 1.0}
            if (live, best) in memo:
                return memo[(live, best)]
            out: dict = defaultdict(float)
            for (widths, pooled, final, _), pr in self.round_law(live, policy).items():
                nb = best
                for b in pooled:
                    if nb is None or b.score / len(b.tokens) > nb.score / len(nb.tokens):
                        nb = b
                for (tokens, counts, ws), pk in solve(final, nb).items():
                    out[(tokens, (len(final),) + counts, (widths,) + ws)] += pr * pk
            memo[(live, best)] = dict(out)
            return memo[(live, best)]

        return solve((Beam((), 0.0),), None)


# ---------------------------------------------------------------------------------------------
# The implementation's law: every random draw enumerated (each a rerun), as test_dsbd_exact.py
# ---------------------------------------------------------------------------------------------


class Branch(Enumerator):
    """One branch of every random choice: the first choices follow `frozen` (unweighted: the
    law given them), then `prefix`, then option 0 of each new choice (or, with `rng`, a draw
    in proportion to the options' weights), recording how many options each choice had and
    the branch's weight. Each draw branches over its support, each acceptance uniform over the
    spans between its row's thresholds (the span's middle standing for it): test_dsbd_exact's
    Enumerator, whose `sample` and `uniforms` it shares, with frozen choices and draws."""

    def __init__(self, prefix: list[int], frozen: list[int] = (), rng=None) -> None:
        self.prefix, self.frozen, self.rng = list(frozen) + list(prefix), len(frozen), rng
        self.taken: list[int] = []
        self.options: list[int] = []
        self.weight = 1.0

    def _choose(self, weights: list[float]) -> int:
        i = len(self.taken)
        if i < len(self.prefix):
            k = self.prefix[i]
        elif self.rng is not None:
            k = self.rng.choices(range(len(weights)), weights)[0]
        else:
            k = 0
        self.taken.append(k)
        self.options.append(len(weights))
        if i >= self.frozen:
            self.weight *= weights[k]
        return k


def explore(run: Callable[[Branch], object], frozen: list[int] = ()) -> dict:
    """P(run's result | the frozen choices) over every branch of the other choices, depth
    first (one rerun per branch)."""
    law: dict = defaultdict(float)
    stack: list[list[int]] = [[]]
    while stack:
        prefix = stack.pop()
        branch = Branch(prefix, frozen)
        law[run(branch)] += branch.weight
        start = len(frozen) + len(prefix)
        for depth in range(start, len(branch.options)):
            stack.extend(
                branch.taken[len(frozen) : depth] + [alt] for alt in range(1, branch.options[depth])
            )
    assert abs(sum(law.values()) - 1.0) < 1e-12
    return dict(law)


class PolicyDraws(Draws):
    """The draft's draws of one round, taken from a policy (the draft forest fixed)."""

    def __init__(self, policy: Policy) -> None:
        self.policy, self.level = policy, 0

    def sample(self, probs: torch.Tensor, count: int) -> torch.Tensor:
        picks = self.policy(probs.double().cpu().numpy(), self.level)
        assert len(picks) == count
        self.level += 1
        return torch.tensor(picks, dtype=torch.long, device=probs.device)


class RoundOver(Exception):
    pass


class Observed:
    """The implementation, its draws enumerated (its drafts from a policy where given), read
    at each round's end: the widths it records, the beams it pools (BeamPool.add) and the
    live beams verify_round returns. Only results and these seams are read."""

    def __init__(
        self, target, draft, s: Settings, monkeypatch, policy: Policy | None = None
    ) -> None:
        self.s = s
        self.gen = decoder_for(target, draft, "dsbd", s.temperature, eos=s.eos, **s.params())
        self.current: list[Branch] = []
        self.pooled: list = []
        self.history: list[tuple[Beam, ...]] = []  # the live beams after each round
        self.stop_at: int | None = None  # raise RoundOver at the end of this round
        monkeypatch.setattr(dsbd_module, "make_draws", lambda generator: self.current[-1])
        real_verify, real_add = dsbd_module.verify_round, beams_module.BeamPool.add
        real_draft = dsbd_module.draft_forest

        def verify(*args, **kwargs):
            outcome = real_verify(*args, **kwargs)
            live = tuple(sorted(Beam(tuple(b.tokens), b.score) for b, _ in outcome.final))
            self.history.append(live)
            pooled, self.pooled = tuple(sorted(self.pooled)), []
            if len(self.history) == self.stop_at:
                final = tuple(b.key() for b in live)
                raise RoundOver((tuple(outcome.widths), pooled, final, outcome.complete))
            return outcome

        def add(pool, beam):
            self.pooled.append(Beam(tuple(beam.tokens), beam.score).key())
            real_add(pool, beam)

        def draft(ctx, live, depth, params, pool, draws):
            return real_draft(ctx, live, depth, params, pool, PolicyDraws(policy))

        monkeypatch.setattr(dsbd_module, "verify_round", verify)
        monkeypatch.setattr(beams_module.BeamPool, "add", add)
        if policy is not None:
            monkeypatch.setattr(dsbd_module, "draft_forest", draft)

    def run(self, branch: Branch):
        self.current.append(branch)
        self.pooled, self.history = [], []
        try:
            result, _ = self.gen.generate(PROMPT, self.s.max_new, seed=0)
        except RoundOver as over:
            return over.args[0]
        rounds = result.extra["rounds"]
        return (
            tuple(result.tokens),
            tuple(rounds["final_width"]),
            tuple(tuple(w) for w in rounds["widths"]),
        )

    def round_law(self, round_no: int = 1, frozen: list[int] = ()) -> dict:
        """The law of round `round_no`'s (widths, pooled beams, live beams) given the frozen
        choices (those of the rounds before it)."""
        self.stop_at = round_no
        return explore(self.run, frozen)

    def path(self, rounds: int, seed: int) -> tuple[list[int], tuple[Beam, ...]]:
        """A random path through the first `rounds` rounds (every choice drawn with its
        probability): its choices and the live beams it ends with."""
        import random

        self.stop_at = rounds
        branch = Branch([], rng=random.Random(seed))
        self.run(branch)
        return branch.taken, self.history[-1]

    def output_law(self) -> dict:
        """The law of (output, round-end beam counts, widths per round)."""
        self.stop_at = None
        return explore(self.run)


def make_pair(subset: list[int] | None = None):
    """A tiny float64 target and a draft that is the target with a perturbed head (so they
    agree only roughly: acceptance rates in between, widths that vary); `subset`: the draft
    proposes only these tokens (-inf logits elsewhere, models/vocab_subset.py)."""
    target = tiny_llama(vocab_size=VOCAB, seed=0, layers=1, hidden=16).double()
    draft = tiny_llama(vocab_size=VOCAB, seed=0, layers=1, hidden=16).double()
    noise = torch.randn(draft.lm_head.weight.shape, generator=torch.Generator().manual_seed(100),
                        dtype=torch.float64)  # fmt: skip
    with torch.no_grad():
        target.lm_head.weight.mul_(0.3)
        draft.lm_head.weight.mul_(0.3).add_(0.5 * noise)
    if subset is not None:
        apply_subset(draft, torch.tensor(subset))
    return target, draft


def rounded(law: dict) -> dict:
    """A round law with its beams as (tokens, score to 1e-6) keys, as Observed reads them."""
    out: dict = defaultdict(float)
    for (widths, pooled, final, passed), pr in law.items():
        out[(widths, tuple(b.key() for b in pooled), tuple(b.key() for b in final), passed)] += pr
    return dict(out)


def tv(a: dict, b: dict) -> float:
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def ranks(seed: int, depth: int = 3) -> Policy:
    """A policy of seeded random ranks (0-3) per draft and level."""
    rng = np.random.default_rng(seed)
    return Policy(ranks=tuple(tuple(int(r) for r in rng.integers(0, 4, 3)) for _ in range(depth)))


@pytest.fixture(scope="module")
def pairs() -> dict:
    return {"full": make_pair(), "subset": make_pair(subset=[1, 2])}


# (id, pair, settings, draft policy): W = 3, gamma = 3, widths below W. Supports are kept small
# (V = 3, top-k / top-p on the joint) so that every verification draw can be enumerated.
ROUND_CASES = [
    ("refill-W-rows", "full", Settings(), ranks(8)),
    (
        "refill-width-shared-T0.8-top-p",
        "full",
        Settings(refill="width", layout="shared_prefix", top_k=0, top_p=0.9, temperature=0.8,
                 w_thres=0.5),
        ranks(5),
    ),
    (
        "refill-width-min-width-2",
        "full",
        Settings(refill="width", w_thres=0.7, min_width=2, top_k=2),
        ranks(0),
    ),
    ("memory-efficient", "full", Settings(memory_efficient=True), ranks(8)),
    ("subset-draft-refill-W", "subset", Settings(), ranks(4)),
    (
        "subset-draft-memory-efficient",
        "subset",
        Settings(memory_efficient=True, w_thres=0.4),
        ranks(2),
    ),
    ("eos-pooled-mid-round", "full", Settings(eos=(EOS,), w_thres=0.3), ranks(6)),
]  # fmt: skip
CASES = {case[0]: case[1:] for case in ROUND_CASES}
ROOT = (Beam((), 0.0),)


def round_end_count(s: Settings, key: RoundKey) -> int:
    """The documented number of beams a round ends with (finished ones included): W when the
    round ends at the bonus level or with refill W, the last level's width with refill
    width, one in memory-efficient mode."""
    widths, _, _, passed = key
    if s.memory_efficient:
        return 1
    if passed == len(widths) or s.refill == "W":
        return s.width
    return widths[-1]


@pytest.mark.parametrize(
    ("pair_name", "s", "policy"), [c[1:] for c in ROUND_CASES], ids=[c[0] for c in ROUND_CASES]
)
def test_first_round_law_given_the_drafts(pairs, monkeypatch, pair_name, s, policy) -> None:
    # The law of the round's (widths, pooled beams, live beams, levels passed), exactly, given
    # the policy's drafts; every verification draw enumerated on both sides.
    target, draft = pairs[pair_name]
    law = DsbdLaw(target, draft, s)
    mine = rounded(law.round_law(ROOT, policy))
    seen = Observed(target, draft, s, monkeypatch, policy).round_law()
    assert tv(mine, seen) < 1e-9
    # Below W: some level is narrower than W, and the beam count at the round's end follows
    # the refill rule (nothing here finishes before max_new except EOS beams).
    assert sum(pr for key, pr in seen.items() if min(key[0]) < s.width) > 0.2
    for key in seen:
        widths, pooled, final, passed = key
        ended_at = [b for b in pooled if len(b[0]) == len(widths) + (passed == len(widths))]
        assert len(final) + len(ended_at) == round_end_count(s, key), key


def test_cases_reach_what_they_are_for(pairs) -> None:
    # The cases above hold, with positive probability: levels narrower than W after a wider
    # one, drafts whose parents were rejected, rounds ended by a rejection and rounds through
    # the bonus level, beams pooled inside a round.
    events: dict[str, float] = defaultdict(float)
    for _, pair_name, s, policy in ROUND_CASES:
        law = DsbdLaw(*pairs[pair_name], s)
        for (widths, pooled, _, passed), pr in law.round_law(ROOT, policy).items():
            events["narrower after wider"] += pr * any(b < a for a, b in itertools.pairwise(widths))
            events["ended by a rejection"] += pr * (passed < len(widths))
            events["bonus level"] += pr * (passed == len(widths))
            events["pooled"] += pr * bool(pooled)
        events["drafts from rejected parents"] += law.stats["drafts from rejected parents"]
    assert min(events.values()) > 0.1, dict(events)
    # The subset draft proposes tokens 1 and 2 only; the target keeps mass on token 0.
    law = DsbdLaw(*pairs["subset"], Settings())
    assert law.logp(pairs["subset"][1], ())[0] == NEG and law.logp(pairs["subset"][0], ())[0] > -3


@pytest.mark.parametrize(
    ("name", "seed"),
    [("refill-W-rows", 1), ("refill-width-shared-T0.8-top-p", 1), ("refill-width-min-width-2", 0),
     ("memory-efficient", 0), ("subset-draft-refill-W", 1), ("eos-pooled-mid-round", 2)],
)  # fmt: skip
def test_second_round_law_given_the_first(pairs, monkeypatch, name, seed) -> None:
    # Round 2 after a random round-1 path (its draws frozen): the caches, feeds and scores the
    # implementation carries over must give the law the enumeration gives from the live beams.
    pair_name, s, policy = CASES[name]
    s = dataclasses.replace(s, max_new=9)  # round 2 at full depth
    target, draft = pairs[pair_name]
    seen = Observed(target, draft, s, monkeypatch, policy)
    frozen, state = seen.path(1, seed)
    law = DsbdLaw(target, draft, s)
    first = rounded(law.round_law(ROOT, policy))
    reached = tuple(b.key() for b in state)
    assert state and sum(pr for key, pr in first.items() if key[2] == reached) > 0
    assert tv(rounded(law.round_law(state, policy)), seen.round_law(2, frozen)) < 1e-9


@pytest.mark.parametrize(
    ("name", "max_new"),
    [("refill-width-shared-T0.8-top-p", 5), ("memory-efficient", 5),
     ("subset-draft-memory-efficient", 7)],
)  # fmt: skip
def test_whole_generation_law_given_the_drafts(pairs, monkeypatch, name, max_new) -> None:
    # P(output, round-end beam counts, widths of every round) over whole generations of several
    # rounds, every verification draw enumerated, the drafts from the policy in every round.
    pair_name, s, policy = CASES[name]
    s = dataclasses.replace(s, max_new=max_new)
    mine = DsbdLaw(*pairs[pair_name], s).output_law(policy)
    seen = Observed(*pairs[pair_name], s, monkeypatch, policy).output_law()
    assert tv(mine, seen) < 1e-9
    assert sum(pr for key, pr in seen.items() if len(key[1]) >= 2) > 0.1  # several rounds


@pytest.mark.parametrize("pair_name", ["full", "subset"])
def test_whole_generation_law_over_every_draw(pairs, monkeypatch, pair_name) -> None:
    # Nothing fixed: the drafts too are enumerated (gamma = 1 keeps it fast); widths 1 and 2
    # below W = 3, and a second round from the beams a refill left.
    s = Settings(gamma=1, refill="width", top_k=2, max_new=2)
    mine = DsbdLaw(*pairs[pair_name], s).output_law()
    seen = Observed(*pairs[pair_name], s, monkeypatch).output_law()
    assert tv(mine, seen) < 1e-9
    assert sum(pr for key, pr in seen.items() if len(key[1]) == 2 and key[1][0] < 3) > 0.1


class StaleSlot(DsbdLaw):
    """An alternative law: a rejected slot keeps its target (the widths are unchanged)."""

    def after_rejection(self, cur: np.ndarray, q: np.ndarray) -> np.ndarray:
        return cur


def test_whole_generation_law_from_seeded_runs(pairs) -> None:
    # W = 3, gamma = 3, refill W, random drafts, the real seeded generator: 1000 runs against
    # the exact law by Pearson's chi-square (bins of expected count < 5 merged), at level 1e-3.
    # Power at that level, from the exact laws: > 0.99 against the slot that keeps its target
    # after a rejection (TV 0.26), 0.74 against temperature 1.4 instead of 1.5 (TV 0.036).
    from scipy import stats

    s = Settings(top_k=2, temperature=1.5, max_new=5)
    target, draft = pairs["full"]
    law = DsbdLaw(target, draft, s).output_law()
    gen = decoder_for(target, draft, "dsbd", s.temperature, **s.params())
    runs = 1000
    counts: dict = defaultdict(int)
    for seed in range(runs):
        result, _ = gen.generate(PROMPT, s.max_new, seed=seed)
        rounds = result.extra["rounds"]
        widths = tuple(tuple(w) for w in rounds["widths"])
        counts[(tuple(result.tokens), tuple(rounds["final_width"]), widths)] += 1
    assert set(counts) <= set(law)
    kept = [k for k in law if law[k] * runs >= 5]

    def binned(probs: dict) -> np.ndarray:
        inside = [probs.get(k, 0.0) for k in kept]
        return np.array(inside + [max(1.0 - sum(inside), 0.0)])

    expected = binned(law) * runs
    observed = binned({k: c / runs for k, c in counts.items()}) * runs
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    df = len(expected) - 1
    assert stats.chi2.sf(chi2, df) > 1e-3
    critical = stats.chi2.isf(1e-3, df)

    def power(alternative: dict) -> float:
        shift = float(((binned(alternative) * runs - expected) ** 2 / expected).sum())
        return float(stats.ncx2.sf(critical, df, shift))

    hotter = DsbdLaw(target, draft, dataclasses.replace(s, temperature=1.4)).output_law()
    assert 0.03 < tv(hotter, law) and power(hotter) > 0.7
    stale = StaleSlot(target, draft, s).output_law()
    assert 0.1 < tv(stale, law) and power(stale) > 0.99


def test_exact_comparison_has_power_below_width(pairs, monkeypatch) -> None:
    # The implementation with a rejected slot keeping its target (no residual) is far off.
    pair_name, s, policy = CASES["refill-W-rows"]
    mine = rounded(DsbdLaw(*pairs[pair_name], s).round_law(ROOT, policy))
    monkeypatch.setattr(beams_module, "residual", lambda p, q: p)
    wrong = Observed(*pairs[pair_name], s, monkeypatch, policy).round_law()
    assert tv(mine, wrong) > 1e-3


# Memory-efficient mode, EOS = 2 (the target's likeliest token): at level 1 (width 2) the draft
# EOS is always accepted (p > q), the next drafts (token 0) rarely; the round then ends at that
# level with the open slot's draw only.
EOS_DROPPED = (
    Settings(memory_efficient=True, eos=(2,), top_k=0, max_new=3),
    Policy(fixed=[(2, 0, 0), (3, 4, 5), (3, 4, 5)]),
)


def output_marginal(law: dict) -> dict:
    out: dict = defaultdict(float)
    for key, pr in law.items():
        out[key[0]] += pr
    return dict(out)


def test_memory_efficient_pools_the_finished_beams_it_drops(pairs, monkeypatch) -> None:
    # The accepted EOS beam of a level that ends the round is not the one that goes on, but it
    # finished: it is pooled (0.1519 if it were lost).
    s, policy = EOS_DROPPED
    mine = DsbdLaw(*pairs["full"], s).output_law(policy)
    assert abs(output_marginal(mine)[(2,)] - 0.8669) < 1e-4
    seen = Observed(*pairs["full"], s, monkeypatch, policy).output_law()
    assert tv(mine, seen) < 1e-9
