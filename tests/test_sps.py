"""sps is lossless: exactly vanilla's greedy tokens at T=0, the target distribution at T>0."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import stats

from tests.conftest import tiny_llama
from tests.helpers import decoder_for


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
    for gamma, max_new in [(4, 40), (2, 17), (5, 64)]:
        sps = decoder_for(model, draft, "sps", 0.0, eos=eos, gamma=gamma)
        for text in prompts:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
            )
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            ref, _ = vanilla.generate(ids, max_new, seed=0)
            got, _ = sps.generate(ids, max_new, seed=0)
            assert got.tokens == ref.tokens, (gamma, max_new, text)
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


def sampled_counts(gen, n: int) -> np.ndarray:
    counts = np.zeros((VOCAB, VOCAB))
    for seed in range(n):
        result, _ = gen.generate(PROMPT, 2, seed=seed)
        counts[result.tokens[0], result.tokens[1]] += 1
    return counts


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
TEMPERATURE = 1.0


@pytest.fixture(scope="module")
def tiny_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    # Two different random models: the draft disagrees with the target, so rejections happen.
    return tiny_llama(vocab_size=VOCAB, seed=0), tiny_llama(vocab_size=VOCAB, seed=1)


@pytest.fixture(scope="module")
def vanilla_counts(tiny_pair) -> np.ndarray:
    return sampled_counts(decoder_for(tiny_pair[0], None, "vanilla", TEMPERATURE), N_SAMPLES)


@pytest.mark.parametrize("gamma", [1, 3])
def test_sps_samples_from_target_distribution(tiny_pair, vanilla_counts, gamma: int) -> None:
    target, draft = tiny_pair
    exact = exact_two_token_distribution(target, TEMPERATURE)
    gen = decoder_for(target, draft, "sps", TEMPERATURE, gamma=gamma)
    sps_counts = sampled_counts(gen, N_SAMPLES)

    assert chi_square_p(sps_counts, exact) > 1e-3
    assert chi_square_p(vanilla_counts, exact) > 1e-3
    tv = 0.5 * np.abs(sps_counts - vanilla_counts).sum() / N_SAMPLES
    assert tv < 0.07

    # The test has power: the draft's own distribution is far away and clearly rejected.
    draft_exact = exact_two_token_distribution(draft, TEMPERATURE)
    assert 0.5 * np.abs(draft_exact - exact).sum() > 0.2
    assert chi_square_p(sps_counts, draft_exact) < 1e-6


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
