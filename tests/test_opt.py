"""OPT on the shared engine (the DSBD paper's facebook/opt-13b with opt-125m), on tiny models.

OPT differs from the LLaMA-shaped models every other test uses where the engine could go wrong:
learned absolute positions stored with an offset of 2 (a position off by one or two, or counted
from the cache instead of the tree depth, gives other logits, and nothing fails loudly until the
table ends), LayerNorm with biases, its own attention and cache code, and an lm_head tied to the
input embedding. Checked here: vanilla greedy is transformers' own greedy `generate`; explicit
positions and masks (trees) give each path's logits; sps at T=0 and beam / dsbd at width 1,
top-k 1 are greedy decoding; sps samples the target's law; DSBD's exact output law is beam
sampling's (tests/test_dsbd_exact.py's checks, run on an OPT pair); and generation stops before
the position table ends. Prompts run long enough that positions pass a few dozen.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from specrepro.decoding.base import MethodError
from tests.helpers import decoder_for
from tests.test_context_limit import watch_positions
from tests.test_dsbd_exact import LOSSLESS
from tests.test_dsbd_exact import (
    test_dsbd_output_law_is_beam_samplings_exactly as check_dsbd_law_is_beam_law,
)
from tests.test_dsbd_exact import test_exact_comparison_has_power as check_law_test_has_power
from tests.test_dsbd_exact import (
    test_memory_efficient_at_width_one_is_multinomial_sampling as check_memory_efficient_law,
)
from tests.test_sps import chi_square_p, exact_two_token_distribution, sampled_counts
from tests.test_tree import check_tree_verification

VOCAB = 8  # tests/test_sps.py's law helpers enumerate this vocabulary
LAW_VOCAB = 4  # tests/test_dsbd_exact.py's beam_law enumerates this one
SHORT = [1, 2, 3, 4, 5]
# Positions up to ~110 by the end of a generation: an offset error shows in every logit.
LONG = [(7 * i + 3) % VOCAB for i in range(70)]

# Tiny models: one intra-op thread is ~10x faster than several contending for the CPUs.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_opt(
    vocab_size: int = VOCAB, seed: int = 0, layers: int = 2, hidden: int = 32,
    max_positions: int = 512,
) -> OPTForCausalLM:  # fmt: skip
    """A random OPT with facebook/opt-*'s structure: learned positions (offset 2), pre-norm
    LayerNorms with biases, and lm_head tied to embed_tokens."""
    torch.manual_seed(seed)
    config = OPTConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        word_embed_proj_dim=hidden,
        ffn_dim=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=max_positions,
        # OPT's init_std 0.02 leaves the residual stream dominated by the (tied) token
        # embedding, so every argmax echoes the last input token; 0.1 lets the layers matter.
        init_std=0.1,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    model = OPTForCausalLM(config).eval()
    # Peaked distributions, as tiny_llama's scaled lm_head gives. Scaling the tied lm_head
    # would scale the input embeddings with it; the final LayerNorm's gain scales only logits.
    with torch.no_grad():
        model.model.decoder.final_layer_norm.weight.mul_(5.0)
    return model


def opt_draft(target: OPTForCausalLM, layers: int = 1, seed: int = 1) -> OPTForCausalLM:
    """A smaller draft that agrees with the target often but not always: the target's first
    `layers` layers (embeddings and head shared by value), their weights perturbed with noise
    from another seed. Two independent random OPTs almost never agree (a useless pair)."""
    draft = OPTForCausalLM(OPTConfig(**{**target.config.to_dict(), "num_hidden_layers": layers}))
    draft.load_state_dict(target.state_dict(), strict=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in draft.named_parameters():
            if ".layers." in name:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return draft.eval()


@pytest.fixture(scope="module")
def opt_pair() -> tuple[OPTForCausalLM, OPTForCausalLM]:
    # Seed 4: greedy paths that change token early on both prompts (most tiny random models
    # repeat one token, which would make the greedy equalities weak).
    # Draft noise seed 6: rounds with rejections and with 3+ accepted tokens on both prompts.
    target = tiny_opt(seed=4)
    return target, opt_draft(target, seed=6)


@pytest.fixture(scope="module")
def opt_law_pair() -> tuple[OPTForCausalLM, OPTForCausalLM]:
    """Float64, as tests/test_dsbd_exact.py's pair (batch and forest logits then agree).
    Seeds 2 and 3: EOS (token 0) is in the joint's top 2, so pooled beams of different lengths
    compete in the EOS case."""
    target = tiny_opt(vocab_size=LAW_VOCAB, seed=2, layers=1, hidden=16).double()
    draft = tiny_opt(vocab_size=LAW_VOCAB, seed=3, layers=1, hidden=16).double()
    return target, draft


def vanilla_greedy(target: torch.nn.Module, prompt: list[int], max_new: int) -> list[int]:
    return decoder_for(target, None, "vanilla", 0.0).generate(prompt, max_new, seed=0)[0].tokens


def test_the_tiny_opt_has_opts_structure_and_a_nontrivial_greedy_path(opt_pair) -> None:
    target, draft = opt_pair
    decoder = target.model.decoder
    assert target.lm_head.weight is decoder.embed_tokens.weight  # tied, as in facebook/opt-*
    assert decoder.embed_positions.offset == 2
    assert decoder.embed_positions.weight.shape[0] == target.config.max_position_embeddings + 2
    assert draft.config.num_hidden_layers < target.config.num_hidden_layers
    # The equalities below mean something only if greedy decoding does not just repeat a token.
    for prompt in (SHORT, LONG):
        assert len(set(vanilla_greedy(target, prompt, 40))) >= 3


@pytest.mark.parametrize("prompt", [SHORT, LONG], ids=["short", "long"])
def test_vanilla_greedy_is_transformers_generate(opt_pair, prompt) -> None:
    target, _ = opt_pair
    max_new = 40
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = target.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new,
            pad_token_id=0, eos_token_id=None,
        )  # fmt: skip
    assert vanilla_greedy(target, prompt, max_new) == out[0, len(prompt) :].tolist()


def test_tree_positions_and_masks_give_each_paths_logits_deep_in_the_sequence(opt_pair) -> None:
    # Tree nodes at explicit positions (prefix length + depth) under a tree mask, after 60
    # cached tokens: each path's logits are those of the path run alone from position 0.
    target, _ = opt_pair
    check_tree_verification(target, LONG[:60], [5, 1, 2, 3, 4, 6, 7], 2)


@pytest.mark.parametrize("prompt", [SHORT, LONG], ids=["short", "long"])
def test_sps_greedy_is_vanilla_greedy(opt_pair, prompt) -> None:
    target, draft = opt_pair
    max_new = 40
    ref = vanilla_greedy(target, prompt, max_new)
    lengths: list[int] = []
    for gamma in (1, 3, 5):
        got, _ = decoder_for(target, draft, "sps", 0.0, gamma=gamma).generate(prompt, max_new, 0)
        assert got.tokens == ref, gamma
        assert sum(got.accept_lengths) == max_new
        lengths += got.accept_lengths
    # Both rejections and multi-token acceptances happened (the caches were cropped and fed).
    assert min(lengths) == 1 and max(lengths) >= 3


def test_beam_and_dsbd_are_undefined_at_t0(opt_pair) -> None:
    # Both sample the joint beam distribution; at T=0 they refuse to run rather than silently
    # becoming greedy decoding (test_beam_and_dsbd_at_width_one_top_one_are_greedy is that).
    target, draft = opt_pair
    for method, model in (("beam", None), ("dsbd", draft)):
        with pytest.raises(MethodError, match="needs T > 0"):
            decoder_for(target, model, method, 0.0).generate(SHORT, 4, seed=0)


@pytest.mark.parametrize("prompt", [SHORT, LONG], ids=["short", "long"])
def test_beam_and_dsbd_at_width_one_top_one_are_greedy(opt_pair, prompt) -> None:
    # Width 1 with top-k 1 on the joint: every draw is a point mass on the target's argmax, so
    # beam sampling is greedy decoding, and so is DSBD (a draft is accepted iff it is the
    # target's argmax; a rejected slot's residual is the point mass on it), at any T and seed.
    target, draft = opt_pair
    max_new = 30
    ref = vanilla_greedy(target, prompt, max_new)
    greedy = dict(width=1, top_k=1, top_p=1.0)
    got, _ = decoder_for(target, None, "beam", 1.0, **greedy).generate(prompt, max_new, seed=0)
    assert got.tokens == ref
    accepted = 0
    for layout in ("rows", "shared_prefix"):
        for gamma, seed in ((1, 0), (3, 1)):
            gen = decoder_for(target, draft, "dsbd", 1.0, gamma=gamma, layout=layout, **greedy)
            got, _ = gen.generate(prompt, max_new, seed=seed)
            assert got.tokens == ref, (layout, gamma)
            accepted += sum(got.extra["rounds"]["accepted"])
    assert accepted > 0  # some drafted levels were accepted, not only corrected


@pytest.mark.parametrize(("temperature", "gamma"), [(1.0, 1)])
def test_sps_samples_the_targets_law(opt_pair, temperature: float, gamma: int) -> None:
    # As tests/test_sps.py on the LLaMA pair: the counts of (x1, x2) over seeds against the
    # target's exact two-token law, with power against the draft's law.
    target, draft = opt_pair
    n = 2000
    exact = exact_two_token_distribution(target, temperature)
    counts, full_rounds = sampled_counts(decoder_for(target, draft, "sps", temperature,
                                                     gamma=gamma), n)  # fmt: skip
    assert chi_square_p(counts, exact) > 1e-3
    assert 0.05 * n < full_rounds < 0.95 * n  # both accepted pairs and rejections mattered
    draft_exact = exact_two_token_distribution(draft, temperature)
    assert 0.5 * np.abs(draft_exact - exact).sum() > 0.2
    assert chi_square_p(counts, draft_exact) < 1e-6


@pytest.mark.parametrize(
    ("settings", "temperature", "max_new", "eos"),
    [case[1:] for case in LOSSLESS],
    ids=[case[0] for case in LOSSLESS],
)
def test_dsbd_output_law_is_beam_samplings_exactly_on_opt(
    opt_law_pair, monkeypatch, settings, temperature, max_new, eos
) -> None:
    check_dsbd_law_is_beam_law(opt_law_pair, monkeypatch, settings, temperature, max_new, eos)


def test_memory_efficient_dsbd_at_width_one_is_multinomial_sampling_on_opt(
    opt_law_pair, monkeypatch
) -> None:
    check_memory_efficient_law(opt_law_pair, monkeypatch)


def test_the_exact_comparison_has_power_on_opt(opt_law_pair, monkeypatch) -> None:
    check_law_test_has_power(opt_law_pair, monkeypatch)


@pytest.mark.parametrize(
    ("method", "temperature", "params"),
    [
        ("vanilla", 0.0, {}),
        ("sps", 1.0, {"gamma": 4}),
        ("beam", 1.0, {"width": 2, "top_k": 4}),
        ("dsbd", 1.0, {"width": 2, "gamma": 3, "top_k": 4, "layout": "rows"}),
        ("dsbd", 1.0, {"width": 2, "gamma": 3, "top_k": 4, "layout": "shared_prefix"}),
    ],
    ids=["vanilla", "sps", "beam", "dsbd-rows", "dsbd-shared"],
)
def test_generation_stops_before_the_position_table_ends(method, temperature, params) -> None:
    # OPT's learned table has no room past max_position_embeddings (a RoPE model would run on
    # silently): the budget leaves room for each round's drafts, so no position is out of it.
    limit = 64
    target = tiny_opt(max_positions=limit)
    draft = opt_draft(target)
    prompt = LONG[:50]
    seen, handles = watch_positions(target, draft)
    try:
        gen = decoder_for(target, draft if method in ("sps", "dsbd") else None, method,
                          temperature, **params)  # fmt: skip
        for seed in range(3):
            result, _ = gen.generate(prompt, 100, seed=seed)
            assert result.stop_reason == "context_limit"
            assert 0 < result.new_tokens < 100
    finally:
        for handle in handles:
            handle.remove()
    assert max(seen) <= limit - 1
