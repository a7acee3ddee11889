"""beam sampling and DSBD: the joint step, the width law, forest scoring, and DSBD's output
distribution against beam sampling's (exact enumeration on a tiny model)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from specrepro.decoding.base import MethodError
from specrepro.engine.beams import (
    Beam,
    BeamPool,
    draw,
    dynamic_width,
    joint_distribution,
)
from specrepro.engine.forest import keep_paths, keep_rows, rows_forward, shared_forward
from specrepro.engine.runner import ModelRunner
from specrepro.engine.sampling import make_generator
from specrepro.engine.stopping import StopRule
from tests.conftest import tiny_llama
from tests.helpers import decoder_for
from tests.test_sps import chi_square_p

VOCAB = 8
PROMPT = [1, 2, 3]


# Tiny models: one intra-op thread is ~10x faster than several contending for the CPUs.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference_joint(scores: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Beam sampling's step distribution written out with numpy loops (docs/methods.md#beam)."""
    flat = scores.ravel() / temperature
    order = sorted(range(flat.size), key=lambda i: -flat[i])
    keep = set(order[:top_k] if top_k else order)
    weights = np.array(
        [np.exp(flat[i] - flat.max()) if i in keep else 0.0 for i in range(flat.size)]
    )
    probs = weights / weights.sum()
    if top_p < 1.0:
        mass, nucleus = 0.0, set()
        for i in order:
            if mass >= top_p:
                break
            nucleus.add(i)
            mass += probs[i]
        probs = np.array([probs[i] if i in nucleus else 0.0 for i in range(flat.size)])
        probs /= probs.sum()
    return probs


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.6), (1.0, 6, 0.8)]
)
def test_beam_step_joint_and_draws_match_reference(temperature, top_k, top_p) -> None:
    target = tiny_llama(vocab_size=VOCAB, seed=0)
    with torch.no_grad():
        logits = target(torch.tensor([[1, 2, 3], [1, 2, 5], [4, 4, 4]])).logits[:, -1]
    beam_scores = torch.tensor([-0.3, -1.2, -2.5])
    scores = beam_scores[:, None] + torch.log_softmax(logits, -1)
    ours = joint_distribution(scores, temperature, top_k, top_p).numpy()
    ref = reference_joint(scores.double().numpy(), temperature, top_k, top_p)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    # The step's draws: independent, with replacement, from that distribution.
    draws = draw(torch.tensor(ours), 20000, make_generator(0, torch.device("cpu")))
    counts = np.bincount(draws, minlength=ours.size)
    assert chi_square_p(counts, ref) > 1e-3


def test_beam_method_step_scores_are_log_joint_probabilities() -> None:
    target = tiny_llama(vocab_size=VOCAB, seed=0)
    gen = decoder_for(target, None, "beam", 1.0, width=3, top_k=0, top_p=1.0)
    result, _ = gen.generate(PROMPT, 6, seed=3)
    assert result.new_tokens == 6 and result.target_forwards == 6
    assert result.extra["widths"] == [3] * 6
    with pytest.raises(MethodError, match="needs T > 0"):
        decoder_for(target, None, "beam", 0.0).generate(PROMPT, 4, seed=0)


def test_dynamic_width_rule() -> None:
    law = [0.1, 0.2, 0.3, 0.4]  # P(K>=3)=0.4, P(K>=2)=0.7, P(K>=1)=0.9
    assert dynamic_width(law, 0.7, 1) == 2
    assert dynamic_width(law, 0.9, 1) == 1
    assert dynamic_width(law, 0.95, 1) == 1  # P(K>=0) = 1 gives 0, floored at min_width
    assert dynamic_width(law, 0.95, 2) == 2
    assert dynamic_width(law, 0.3, 1) == 3
    assert dynamic_width(law, 0.0, 1) == 3


def _forest() -> tuple[list[int], list[int], list[int]]:
    # Two beams; beam 0 grows a two-level tree, beam 1 a chain; nodes are in parent-first order.
    tokens = [5, 6, 7, 2, 3, 4, 1]
    parents = [-1, -1, 0, 0, 1, 2, 4]
    bases = [0, 1, 0, 0, 1, 0, 1]
    return tokens, parents, bases


@pytest.mark.parametrize("layout", ["rows", "shared"])
def test_forest_logits_equal_each_path_alone_and_keep_continues(layout) -> None:
    model = tiny_llama(vocab_size=16, seed=2, layers=2)
    runner = ModelRunner(model)
    runner.reset(64)
    histories = [[1, 2, 3, 4], [1, 2, 9, 8]]
    tokens, parents, bases = _forest()
    if layout == "rows":
        runner.forward(torch.tensor(histories))
        logits, paths = rows_forward(runner, tokens, parents, bases)
    else:
        # One trie: the shared prefix [1, 2] once, then each beam's own two tokens.
        runner.forward(
            [1, 2, 3, 4, 9, 8], positions=torch.tensor([0, 1, 2, 3, 2, 3]), span_mask=_trie_mask()
        )
        base_paths = [[0, 1, 2, 3], [0, 1, 4, 5]]
        logits, paths = shared_forward(runner, tokens, parents, bases, base_paths)
    for i in range(len(tokens)):
        chain, j = [], i
        while j >= 0:
            chain.append(tokens[j])
            j = parents[j]
        sequence = histories[bases[i]] + chain[::-1]
        with torch.no_grad():
            alone = model(torch.tensor([sequence])).logits[0, -1]
        torch.testing.assert_close(logits[i], alone, atol=1e-4, rtol=1e-4)
    # Keep the depth-2 nodes 6 (beam 1: 6, 3, 1) and 5 (beam 0: 5, 7, 4), node 5 twice (a
    # beam reorder with a duplicate), then continue every kept beam by one token.
    kept = [6, 5, 5]
    if layout == "rows":
        keep_rows(runner, [bases[i] for i in kept], [paths[i] for i in kept], past=4)
        assert runner.cache_len == 4 + 3
        out = runner.forward(torch.tensor([[11], [12], [13]])).logits[:, -1]
    else:
        new_paths = keep_paths(runner, [paths[i] for i in kept])
        assert runner.cache_len == 6 + 3 + 3  # the trie plus both kept paths, each once
        out, _ = shared_forward(runner, [11, 12, 13], [-1, -1, -1], [0, 1, 2], new_paths)
    for row, (node, new) in enumerate(zip(kept, [11, 12, 13], strict=True)):
        chain, j = [], node
        while j >= 0:
            chain.append(tokens[j])
            j = parents[j]
        sequence = histories[bases[node]] + chain[::-1] + [new]
        with torch.no_grad():
            alone = model(torch.tensor([sequence])).logits[0, -1]
        torch.testing.assert_close(out[row], alone, atol=1e-4, rtol=1e-4)


def _trie_mask() -> torch.Tensor:
    # positions: 0:1 1:2 2:3 3:4 (beam 0) 4:9 5:8 (beam 1 after the shared [1, 2])
    mask = torch.zeros(6, 6, dtype=torch.bool)
    for i, path in enumerate([[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 4], [0, 1, 4, 5]]):
        mask[i, path] = True
    return mask


def exact_beam_output(target: torch.nn.Module, width: int = 2) -> np.ndarray:
    """P(output = (x1, x2)) for beam sampling (T=1, no filters, no EOS, 2 new tokens): level 1
    draws `width` tokens, level 2 draws `width` (beam, token) pairs from the joint, and the
    output is the level-2 beam with the higher beam score (its joint probability; both have
    length 2; a tie goes to the first drawn). By enumeration."""
    assert width == 2
    with torch.no_grad():
        p1 = torch.softmax(target(torch.tensor([PROMPT])).logits[0, -1], -1).double().numpy()
        batch = torch.tensor([PROMPT + [a] for a in range(VOCAB)])
        p2 = torch.softmax(target(batch).logits[:, -1], -1).double().numpy()
    out = np.zeros((VOCAB, VOCAB))
    for a, b in itertools.product(range(VOCAB), repeat=2):
        rows = [a, b]
        joint = np.concatenate([p1[r] * p2[r] for r in rows])
        joint /= joint.sum()
        first = np.repeat([rows[0], rows[1]], VOCAB)
        second = np.tile(np.arange(VOCAB), 2)
        i, j = np.meshgrid(np.arange(2 * VOCAB), np.arange(2 * VOCAB), indexing="ij")
        pick = np.where(joint[i] >= joint[j], i, j)
        np.add.at(out, (first[pick], second[pick]), p1[a] * p1[b] * joint[i] * joint[j])
    return out


def output_counts(gen, n: int) -> tuple[np.ndarray, list[int]]:
    counts = np.zeros((VOCAB, VOCAB))
    rounds = []
    for seed in range(n):
        result, _ = gen.generate(PROMPT, 2, seed=seed)
        counts[result.tokens[0], result.tokens[1]] += 1
        rounds.append(result.target_forwards)
    return counts, rounds


N_SAMPLES = 600


@pytest.fixture(scope="module")
def tiny_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    # Two different random models, close enough that whole rounds are accepted at times.
    return tiny_llama(vocab_size=VOCAB, seed=0), tiny_llama(vocab_size=VOCAB, seed=1)


def test_dsbd_monte_carlo_smoke_against_enumeration(tiny_pair) -> None:
    # The one Monte Carlo check: the seeded generator's draws (the exact-law tests in
    # test_dsbd_exact.py enumerate them instead) give beam sampling's law.
    target, draft = tiny_pair
    gen = decoder_for(target, draft, "dsbd", 1.0, width=2, gamma=2, min_width=2, top_k=0, top_p=1.0)
    counts, forwards = output_counts(gen, N_SAMPLES)
    assert chi_square_p(counts, exact_beam_output(target)) > 1e-3
    # Both ways through a round happened: every level accepted (one target forward for both
    # tokens), and a rejection followed by residual draws.
    assert 0.05 * N_SAMPLES < forwards.count(1) < 0.95 * N_SAMPLES


def test_output_rule_is_the_references_score_over_length() -> None:
    # Pooled beams of different lengths: the reference keeps the candidate with the best beam
    # score divided by its generated length, scanning with a strict > (ties: the earlier).
    def reference_pick(candidates: list[Beam]) -> Beam:
        best, best_score = None, -10000
        for beam in candidates:
            score = beam.score / len(beam.tokens)
            if score > best_score:
                best, best_score = beam, score
        return best

    rng = np.random.default_rng(0)
    for _ in range(200):
        finished = [
            Beam(list(rng.integers(0, 9, size=int(rng.integers(1, 6)))), float(-rng.exponential(2)),
                 float(-rng.exponential(4)))
            for _ in range(int(rng.integers(0, 4)))
        ]  # fmt: skip
        live = [Beam([1, 2, 3, 4, 5], float(-rng.exponential(2)), -1.0) for _ in range(2)]
        pool = BeamPool(StopRule(frozenset(), 5))
        pool.finished = finished
        assert pool.best(live) is reference_pick(finished + live)
    # A constructed case where the old rule (target log-likelihood per token) differs: the
    # long beam was kept with a high joint probability but is unlikely token by token.
    long = Beam([5, 6, 0], score=-0.9, logprob=-3.0)  # -0.3 / token by score, -1.0 by loglik
    short = Beam([5], score=-0.5, logprob=-0.6)  # -0.5, -0.6
    pool = BeamPool(StopRule(frozenset({0}), 5), finished=[short, long])
    assert pool.best([]) is long
    assert max([short, long], key=Beam.loglik_per_token) is short


def test_dsbd_with_the_target_as_draft_accepts_every_level(tiny_pair) -> None:
    target, _ = tiny_pair
    gamma, width, max_new = 3, 3, 14
    # No top-k / top-p: at a filter's edge, float rounding between the draft's and the target's
    # forwards could keep different near-tied candidates (duplicate beams tie).
    gen = decoder_for(
        target, target, "dsbd", 1.0, width=width, gamma=gamma, w_thres=0.9, top_k=0, top_p=1.0
    )
    for seed in range(3):
        result, _ = gen.generate(PROMPT, max_new, seed=seed)
        rounds = result.extra["rounds"]
        full = [r for r in rounds["levels"] if r == gamma]
        assert len(full) >= 3
        # p == q at every level: the width law puts all its mass on W, every draft is accepted.
        for levels, widths, accepted in zip(
            rounds["levels"], rounds["widths"], rounds["accepted"], strict=True
        ):
            assert accepted == levels and widths == [width] * levels
        assert result.accept_lengths[:3] == [gamma + 1] * 3


def test_shared_prefix_layout_same_outputs_less_kv(tiny_pair) -> None:
    target, draft = tiny_pair
    prompt = [1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6]
    settings = dict(width=3, gamma=2, min_width=3, top_k=0, top_p=1.0)
    rows = decoder_for(target, draft, "dsbd", 1.0, layout="rows", **settings)
    shared = decoder_for(target, draft, "dsbd", 1.0, layout="shared_prefix", **settings)
    for seed in range(4):
        a, _ = rows.generate(prompt, 12, seed=seed)
        b, _ = shared.generate(prompt, 12, seed=seed)
        # The two layouts score the same forest (test_forest_...), so every decision matches.
        assert a.tokens == b.tokens
        forest = ("forest_slots",)
        same = {k: v for k, v in a.extra["rounds"].items() if k not in forest}
        assert same == {k: v for k, v in b.extra["rounds"].items() if k not in forest}
        # The same real nodes: the shared layout runs one slot per node, rows pad them.
        nodes = b.extra["rounds"]["forest_nodes"]
        assert b.extra["rounds"]["forest_slots"] == nodes
        assert all(s >= n for s, n in zip(a.extra["rounds"]["forest_slots"], nodes, strict=True))
        assert sum(a.extra["rounds"]["forest_slots"]) > sum(nodes)
        # The prompt is cached once instead of once per beam.
        assert b.kv_bytes_peak < 0.6 * a.kv_bytes_peak


def test_dsbd_refuses_bad_params(tiny_pair) -> None:
    target, draft = tiny_pair
    for bad in ({"min_width": 4}, {"w_thres": 1.5}, {"gamma": 0}, {"top_p": 0.0}):
        with pytest.raises(MethodError):
            decoder_for(target, draft, "dsbd", 1.0, width=3, **bad)
    with pytest.raises(MethodError, match="needs T > 0"):
        decoder_for(target, draft, "dsbd", 0.0).generate(PROMPT, 4, seed=0)


def test_row_reorder_keeps_each_beams_history() -> None:
    # Three beams, reordered (with a duplicate and a dropped row) after each of three steps;
    # every row's logits must equal running that beam's whole sequence alone.
    model = tiny_llama(vocab_size=16, seed=3, layers=2)
    runner = ModelRunner(model)
    runner.reset()
    sequences = [[1, 2, 3]]
    out = runner.forward(torch.tensor(sequences)).logits[:, -1]
    for rows, new in (([0, 0, 0], [4, 5, 6]), ([2, 0, 2], [7, 8, 9]), ([1, 2], [10, 11])):
        runner.select_rows(rows)
        sequences = [sequences[r] + [t] for r, t in zip(rows, new, strict=True)]
        out = runner.forward(torch.tensor([[t] for t in new])).logits[:, -1]
        with torch.no_grad():
            alone = model(torch.tensor(sequences)).logits[:, -1]
        torch.testing.assert_close(out, alone, atol=1e-4, rtol=1e-4)
