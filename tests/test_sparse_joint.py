"""The joint on its candidates (engine/joint.py) against the dense joint over all R x V: the
same distribution, the same residuals, acceptance tests and seeded draws, and a forest level's
log-probabilities computed only when the level is verified."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from specrepro.decoding import dsbd as dsbd_module
from specrepro.engine import forest_verify
from specrepro.engine.beams import (
    Beam,
    BeamPool,
    Draws,
    fill_level,
    level_tables,
    make_draws,
    sample_joint,
)
from specrepro.engine.forest_draft import DraftLevel, DraftNode, LiveBeam
from specrepro.engine.joint import Joint, full_joint, joint_distribution, sparse_joint
from specrepro.engine.sampling import make_generator
from specrepro.engine.stopping import StopRule
from tests.conftest import tiny_llama
from tests.helpers import decoder_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")

# (R, V, top_k, top_p, T): wide and narrow joints, top-k alone and with top-p.
SETTINGS = [
    (3, 500, 10, 0.9, 1.0),
    (1, 64, 5, 1.0, 0.7),
    (4, 40, 10, 0.6, 1.3),
    (2, 8, 3, 0.8, 1.0),  # 2k >= V: whole rows are the candidates
    (3, 1000, 1, 0.5, 1.0),
]


def sorted_joint(scores, temperature, top_k, top_p) -> torch.Tensor:
    """The joint as it was computed before candidates: top-p from a sort of all R x V."""
    logits = scores.reshape(-1).double() / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        probs = torch.softmax(logits, dim=-1)
        ordered = torch.sort(probs, descending=True).values
        inside = torch.cumsum(ordered, dim=-1) - ordered < top_p
        cutoff = ordered[max(int(inside.sum()) - 1, 0)]
        logits = logits.masked_fill(probs < cutoff, float("-inf"))
    return torch.softmax(logits, dim=-1)


def random_scores(rows: int, vocab: int, seed: int, kind: str) -> torch.Tensor:
    """Beam score + token log-probs, with the ties and -inf entries the engine meets."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(rows, vocab, generator=g)
    if kind == "duplicate-beams" and rows > 1:
        logits[1:] = logits[0]  # drafts of one candidate: identical rows tie exactly
    if kind == "bfloat16":
        logits = logits.bfloat16().float()  # many ties within a row
    if kind == "vocab-subset":
        logits[:, torch.rand(vocab, generator=g) < 0.7] = float("-inf")
    if kind == "equal-top":  # ties at the top-p boundary: mass 1/4 each among the top 4
        logits[0, :4] = 20.0
    logp = torch.log_softmax(logits.double(), -1)
    beam = -torch.rand(rows, 1, generator=g, dtype=torch.float64)
    if kind == "dead-beam" and rows > 1:
        beam[-1] = float("-inf")
    if kind == "duplicate-beams":
        beam[:] = beam[0].item()
    if kind == "equal-top":
        beam[1:] -= 5.0  # the beam holding the tie leads the joint
    return beam + logp


KINDS = ["plain", "duplicate-beams", "bfloat16", "vocab-subset", "equal-top", "dead-beam"]


def dense(joint: Joint) -> torch.Tensor:
    return torch.zeros(joint.size, dtype=torch.float64).index_copy(0, joint.ids, joint.probs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("rows", "vocab", "top_k", "top_p", "temperature"), SETTINGS)
def test_sparse_joint_is_the_dense_joint(rows, vocab, top_k, top_p, temperature, kind) -> None:
    for seed in range(4):
        scores = random_scores(rows, vocab, seed, kind)
        reference = sorted_joint(scores, temperature, top_k, top_p)
        # The dense joint reads top-p's cutoff off the candidates: bit for bit the full sort's.
        assert torch.equal(joint_distribution(scores, temperature, top_k, top_p), reference)
        joint = sparse_joint(scores, temperature, top_k, top_p)
        # Four tied top tokens in one beam overflow its 2k candidates when 2k <= 4.
        assert bool(joint.spilled) == (kind == "equal-top" and 2 * top_k <= 4)
        if bool(joint.spilled):
            continue
        assert torch.equal(joint.ids, torch.sort(joint.ids).values)
        on_all = dense(joint)
        assert torch.equal(on_all > 0, reference > 0)  # the same support, ties included
        assert (on_all - reference).abs().max() < 1e-12
        assert (joint.at(torch.arange(joint.size)) - reference).abs().max() < 1e-12


def test_equal_top_candidates_cross_the_top_p_boundary_together() -> None:
    scores = torch.full((2, 30), -40.0, dtype=torch.float64)
    scores[:, :3] = 0.0  # three tokens in two duplicate beams: six candidates of 1/6 each
    # top-k 5 keeps all six (ties with the k-th stay); top-p 0.5 ends inside the tie and keeps
    # it whole.
    joint = sparse_joint(scores, 1.0, 5, 0.5)
    assert torch.equal(dense(joint) > 0, sorted_joint(scores, 1.0, 5, 0.5) > 0)
    assert int((dense(joint) > 0).sum()) == 6


def test_ties_past_the_candidates_are_flagged() -> None:
    # More than k tokens of one row tie with the k-th: the 2k candidates of that row cannot
    # hold them all, and the caller must take the dense joint instead.
    scores = torch.randn(2, 100, dtype=torch.float64)
    scores[0, 10:40] = 5.0
    assert bool(sparse_joint(scores, 1.0, 4, 0.9).spilled)
    scores[0, 10:40] = torch.linspace(5.0, 4.0, 30, dtype=torch.float64)
    assert not bool(sparse_joint(scores, 1.0, 4, 0.9).spilled)
    # Fewer than k candidates with probability (a -inf k-th): every one of them is held.
    scores[:, 3:] = float("-inf")
    assert not bool(sparse_joint(scores, 1.0, 10, 0.9).spilled)


def test_without_top_k_the_joint_is_dense() -> None:
    scores = random_scores(3, 50, 0, "plain")
    joint = sparse_joint(scores, 1.0, 0, 0.8)
    assert joint.ids.numel() == joint.size == 150
    assert torch.equal(joint.probs, sorted_joint(scores, 1.0, 0, 0.8))


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_seeded_draws_on_the_candidates_are_the_dense_draws(count) -> None:
    for seed in range(30):
        joint = sparse_joint(random_scores(3, 400, seed, KINDS[seed % len(KINDS)]), 1.0, 10, 0.9)
        dense_draws, sparse_draws = (make_draws(make_generator(seed, CPU)) for _ in "ab")
        expected = dense_draws.sample(dense(joint), count)
        assert torch.equal(sample_joint(sparse_draws, joint, count), expected)
        # The generators are left in the same state: every later draw matches too.
        assert torch.equal(torch.rand(3, generator=dense_draws.generator),
                           torch.rand(3, generator=sparse_draws.generator))  # fmt: skip


def level_inputs(seed: int, kind: str):
    """A level's target joint, a draft joint over the same candidates, and W drafts of it."""
    p_scores = random_scores(3, 300, seed, kind)
    q_scores = p_scores + 0.7 * torch.randn(3, 300, generator=torch.Generator().manual_seed(seed))
    q = joint_distribution(q_scores, 1.0, 10, 0.9)
    drafts = torch.multinomial(
        q, 3, replacement=True, generator=torch.Generator().manual_seed(seed)
    )
    return p_scores, q, drafts.tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_level_on_the_candidates_is_the_dense_level(kind) -> None:
    # level_tables and fill_level on the target's candidates against the same on all R x V:
    # the residual chain, acceptance probabilities and tests, scores, and the seeded draws.
    for seed in range(12):
        p_scores, q, drafts = level_inputs(seed, kind)
        sparse_p = sparse_joint(p_scores, 1.0, 10, 0.9)
        dense_p = joint_distribution(p_scores, 1.0, 10, 0.9)
        held = q.nonzero().view(-1)
        for q_as in (q, Joint(held, q[held], q.numel(), torch.tensor(False))):
            outcomes = []
            for p in (dense_p, sparse_p):
                draws = make_draws(make_generator(seed, CPU))
                tables = level_tables(p, q_as, drafts, draws, extra=torch.log(q)[None])
                outcome = fill_level(p, tables, drafts, 3, draws)
                outcomes.append((tables, outcome))
            (dt, do), (st, so) = outcomes
            chain = torch.stack([dense(Joint(sparse_p.ids, row, 900, sparse_p.spilled))
                                 for row in st.chain])  # fmt: skip
            assert (chain - dt.chain).abs().max() < 1e-12
            assert max(abs(a - b) for a, b in zip(st.alphas, dt.alphas, strict=True)) < 1e-12
            assert st.accept == dt.accept and st.extra == dt.extra
            for a, b in zip(st.log_p, dt.log_p, strict=True):
                assert a == b or abs(a - b) < 1e-12  # -inf off p's support
            assert (so.accepted, so.samples, so.complete) == (do.accepted, do.samples, do.complete)
            assert (so.pending is None and do.pending is None) or torch.equal(
                so.pending, do.pending
            )


def forest_round(seed: int, vocab: int = 200, gamma: int = 3, width: int = 3):
    """A DSBD round's inputs without models: one live beam, `gamma` drafted levels whose draft
    joints are near the target's, and the target's logits at every forest row."""
    g = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(1 + gamma * width, vocab, generator=g)
    live = [LiveBeam(Beam([], 0.0, 0.0), [1], [], [1], [])]
    levels, previous = [], 1
    for level in range(gamma):
        first = 1 + (level - 1) * width if level else 0
        noisy = logits[first : first + previous] + torch.randn(previous, vocab, generator=g)
        q = joint_distribution(torch.log_softmax(noisy.double(), -1), 1.0, 10, 0.9)
        picks = torch.multinomial(q, width, replacement=True, generator=g).tolist()
        nodes = [DraftNode(x // vocab, x % vocab, [x % vocab], 0.0, False) for x in picks]
        levels.append(DraftLevel(nodes, q, picks))
        previous = width
    return live, levels, logits


def run_round(seed: int, draws: Draws, params=None):
    live, levels, logits = forest_round(seed)
    ctx = SimpleNamespace(temperature=1.0, target=None, draft=None)
    pool = BeamPool(StopRule(frozenset(), 50))
    params = params or dsbd_module.Params()
    return forest_verify.verify_round(ctx, live, levels, logits, params, pool, draws)


def test_a_level_not_verified_gets_no_log_probs(monkeypatch) -> None:
    computed: list[range] = []
    inner = forest_verify.level_log_probs

    def counted(logits: torch.Tensor, rows: range) -> torch.Tensor:
        computed.append(rows)
        return inner(logits, rows)

    monkeypatch.setattr(forest_verify, "level_log_probs", counted)
    verified = []
    for seed in range(20):
        computed.clear()
        outcome = run_round(seed, make_draws(make_generator(seed, CPU)))
        # Level i's joint is over level i-1's rows (the roots for the first); the bonus level
        # reads the last level's rows.
        expected = [range(0, 1), range(1, 4), range(4, 7), range(7, 10)][: outcome.new_levels]
        assert computed == expected
        verified.append(outcome.new_levels)
    assert min(verified) < 4  # some rounds stopped early: their later rows were never computed


def test_rounds_on_the_candidates_draw_the_dense_rounds_beams(monkeypatch) -> None:
    use_dense = [False]
    sparse = forest_verify.sparse_joint

    def chosen(*args) -> Joint:
        return full_joint(joint_distribution(*args)) if use_dense[0] else sparse(*args)

    monkeypatch.setattr(forest_verify, "sparse_joint", chosen)
    for memory_efficient in (False, True):
        params = dsbd_module.Params(memory_efficient=memory_efficient)
        for seed in range(10):
            outcomes = []
            for flag in (True, False):
                use_dense[0] = flag
                outcomes.append(run_round(seed, make_draws(make_generator(seed, CPU)), params))
            a, b = outcomes
            assert (a.widths, a.complete, a.new_levels) == (b.widths, b.complete, b.new_levels)
            assert [(x.tokens, row) for x, row in a.final] == [
                (x.tokens, row) for x, row in b.final
            ]
            for (x, _), (y, _) in zip(a.final, b.final, strict=True):
                assert abs(x.score - y.score) < 1e-12 and x.logprob == y.logprob


def test_dsbd_outputs_match_with_the_dense_joint(monkeypatch) -> None:
    # Whole generations on tiny models, top-k cutting the joint: the same tokens and rounds
    # under each seed as with the target's joint computed on all R x V.
    target, draft = tiny_llama(vocab_size=64, seed=0), tiny_llama(vocab_size=64, seed=1)
    gen = decoder_for(target, draft, "dsbd", 1.0, width=3, gamma=3, top_k=5, top_p=0.9)
    runs = {}
    for mode in ("sparse", "dense"):
        if mode == "dense":
            monkeypatch.setattr(
                forest_verify, "sparse_joint", lambda *a: full_joint(joint_distribution(*a))
            )
        runs[mode] = [gen.generate([1, 2, 3], 12, seed=s)[0] for s in range(4)]
    for a, b in zip(runs["sparse"], runs["dense"], strict=True):
        assert a.tokens == b.tokens and a.extra["rounds"] == b.extra["rounds"]


def test_spilled_candidates_fall_back_to_the_dense_joint(monkeypatch) -> None:
    # Logits with many exact ties at every level: the candidates spill, the level is verified
    # again on the dense joint, and every kept beam is a candidate of it.
    live, levels, logits = forest_round(0)
    logits[:, :40] = logits.max() + 1.0  # 40 tied tokens at the top of every row
    spilled = []
    inner = forest_verify.sparse_joint

    def watched(*args) -> Joint:
        joint = inner(*args)
        spilled.append(bool(joint.spilled))
        return joint

    monkeypatch.setattr(forest_verify, "sparse_joint", watched)
    ctx = SimpleNamespace(temperature=1.0, target=None, draft=None)
    pool = BeamPool(StopRule(frozenset(), 50))
    draws = make_draws(make_generator(0, CPU))
    out = forest_verify.verify_round(ctx, live, levels, logits, dsbd_module.Params(), pool, draws)
    assert spilled and all(spilled)
    assert out.final and all(beam.tokens[-1] < 40 for beam, _ in out.final)
