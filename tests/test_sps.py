"""sps is lossless: exactly vanilla's greedy tokens at T=0, the target distribution at T>0."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import stats

from tests.conftest import tiny_llama
from tests.helpers import chat_ids, decoder_for


def truncated_draft(target: torch.nn.Module, layers: int) -> torch.nn.Module:
    """An untrained draft: the target's first layers, embedding and head (same tokenizer)."""
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = layers
    draft = type(target)(config).eval()
    state = {
        k: v
        for k, v in target.state_dict().items()
        if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers
    }
    draft.load_state_dict(state, strict=False)
    return draft


@pytest.mark.slow
def test_sps_greedy_equals_vanilla_on_real_target(smollm) -> None:
    model, tokenizer = smollm
    draft = truncated_draft(model, layers=4)
    eos = {tokenizer.eos_token_id}
    vanilla = decoder_for(model, None, "vanilla", 0.0, eos=eos)
    prompts = [
        "What is the capital of France?",
        "Write a short poem about autumn leaves.",
        "Explain in two sentences why the sky is blue.",
        "List four prime numbers and add them up.",
    ]
    encoded = [chat_ids(tokenizer, text) for text in prompts]
    # Greedy output under a smaller budget is a prefix of the longest one.
    refs = [vanilla.generate(ids, 64, seed=0)[0].tokens for ids in encoded]
    for gamma, max_new in [(4, 40), (2, 17), (5, 64)]:
        sps = decoder_for(model, draft, "sps", 0.0, eos=eos, gamma=gamma)
        for ids, ref, text in zip(encoded, refs, prompts, strict=True):
            got, _ = sps.generate(ids, max_new, seed=0)
            assert got.tokens == ref[:max_new], (gamma, max_new, text)
            assert sum(got.accept_lengths) == got.new_tokens
            assert got.target_forwards == len(got.accept_lengths)


VOCAB = 8
PROMPT = [1, 2, 3]


def exact_two_token_distribution(target: torch.nn.Module, temperature: float) -> np.ndarray:
    """P(x1, x2 | prompt) under the target at temperature T, by enumeration."""
    with torch.no_grad():
        p1 = torch.softmax(target(torch.tensor([PROMPT])).logits[0, -1] / temperature, -1)
        joint = np.zeros((VOCAB, VOCAB))
        for x1 in range(VOCAB):
            p2 = torch.softmax(
                target(torch.tensor([PROMPT + [x1]])).logits[0, -1] / temperature, -1
            )
            joint[x1] = (p1[x1] * p2).numpy()
    return joint


def sampled_counts(gen, n: int) -> tuple[np.ndarray, int]:
    """Counts of (x1, x2) over n seeds, and how many rounds accepted every drafted token."""
    counts = np.zeros((VOCAB, VOCAB))
    full_rounds = 0
    for seed in range(n):
        result, _ = gen.generate(PROMPT, 2, seed=seed)
        counts[result.tokens[0], result.tokens[1]] += 1
        full_rounds += int(result.accept_lengths[0] == 2)
    return counts, full_rounds


def chi_square_p(counts: np.ndarray, expected_probs: np.ndarray) -> float:
    expected = expected_probs.ravel() * counts.sum()
    observed = counts.ravel()
    # Pool the rare cells so the chi-square approximation holds.
    keep = expected >= 5
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return float(stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


N_SAMPLES = 3000


@pytest.fixture(scope="module")
def tiny_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    # Two different random models: the draft disagrees with the target, so rejections happen.
    return tiny_llama(vocab_size=VOCAB, seed=0), tiny_llama(vocab_size=VOCAB, seed=1)


@pytest.mark.parametrize(("temperature", "gamma"), [(1.0, 1), (1.0, 3), (0.6, 1)])
def test_sps_samples_from_target_distribution(tiny_pair, temperature: float, gamma: int) -> None:
    target, draft = tiny_pair
    exact = exact_two_token_distribution(target, temperature)
    gen = decoder_for(target, draft, "sps", temperature, gamma=gamma)
    sps_counts, full_rounds = sampled_counts(gen, N_SAMPLES)
    assert chi_square_p(sps_counts, exact) > 1e-3
    # Both tokens from one round (the draft token accepted, then the bonus token or the second
    # draft token) happened often enough to matter, and so did rejections.
    assert 0.05 * N_SAMPLES < full_rounds < 0.95 * N_SAMPLES

    # The test has power: the draft's own distribution is far away and clearly rejected.
    draft_exact = exact_two_token_distribution(draft, temperature)
    assert 0.5 * np.abs(draft_exact - exact).sum() > 0.2
    assert chi_square_p(sps_counts, draft_exact) < 1e-6


def test_vanilla_samples_from_target_distribution(tiny_pair) -> None:
    target, _ = tiny_pair
    counts, _ = sampled_counts(decoder_for(target, None, "vanilla", 0.6), N_SAMPLES)
    assert chi_square_p(counts, exact_two_token_distribution(target, 0.6)) > 1e-3


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sps_with_the_target_as_draft_accepts_every_round(tiny_pair, temperature: float) -> None:
    # p == q: every drafted token is accepted and a bonus follows, so a full round commits
    # gamma + 1 tokens. A draft cache that lost or repeated a position would break this.
    target, _ = tiny_pair
    gamma, max_new = 3, 22
    gen = decoder_for(target, target, "sps", temperature, gamma=gamma)
    for seed in range(3):
        result, _ = gen.generate(PROMPT, max_new, seed=seed)
        assert result.accept_lengths == [gamma + 1] * 5 + [max_new - 5 * (gamma + 1)]
        if temperature == 0:
            ref, _ = decoder_for(target, None, "vanilla", 0.0).generate(PROMPT, max_new, seed=0)
            assert result.tokens == ref.tokens


def test_sps_rejects_and_resamples_on_tiny_models(tiny_pair) -> None:
    target, draft = tiny_pair
    gen = decoder_for(target, draft, "sps", 1.0, gamma=4)
    lengths = []
    for seed in range(50):
        result, _ = gen.generate(PROMPT, 20, seed=seed)
        assert result.new_tokens == 20
        assert sum(result.accept_lengths) == 20
        lengths += result.accept_lengths
    # Both outcomes occur: early rejections (1 token per round) and longer accepted runs.
    assert min(lengths) == 1 and max(lengths) >= 3


def test_sps_greedy_equals_vanilla_on_tiny_models(tiny_pair) -> None:
    target, draft = tiny_pair
    ref, _ = decoder_for(target, None, "vanilla", 0.0).generate(PROMPT, 30, seed=0)
    for gamma in (1, 2, 5):
        got, _ = decoder_for(target, draft, "sps", 0.0, gamma=gamma).generate(PROMPT, 30, seed=0)
        assert got.tokens == ref.tokens
