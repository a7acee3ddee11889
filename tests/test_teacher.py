"""The teacher corpus: batched generation whose own forwards give the features, prompt
truncation, and the alignment of the stored top-k with what an EAGLE head is trained on."""

from __future__ import annotations

import copy

import pytest
import torch

from specrepro.engine.runner import ModelRunner
from specrepro.models.eagle_head import build_head, head_config_for
from specrepro.training import teacher as teacher_mod
from specrepro.training.teacher import CorpusConfig, generate_batch, truncated_prompts
from specrepro.training.train_head import _batch, _losses
from tests.conftest import tiny_llama

PROMPTS = [[3, 5, 7, 9, 11, 2, 4], [6, 1], [8, 8, 3, 12, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
STOP = {0}


@pytest.fixture
def float32_features(monkeypatch: pytest.MonkeyPatch) -> None:
    """Store features in float32 so that comparisons test the arithmetic, not bf16 rounding."""
    monkeypatch.setattr(teacher_mod, "FEATURE_DTYPE", torch.float32)


def add_features(model: torch.nn.Module, samples: list) -> None:
    """The reference: one unpadded forward per sequence, its final-norm state per position."""
    runner = ModelRunner(model, "teacher")
    for sample in samples:
        runner.reset(len(sample.ids))
        out = runner.forward(sample.ids, logits_from=len(sample.ids), want_hidden=True)
        sample.features = out.hidden.to("cpu", teacher_mod.FEATURE_DTYPE)


def _generate(model: torch.nn.Module, temperature: float, gen_tokens: int = 12) -> list:
    torch.manual_seed(0)
    cfg = CorpusConfig(gen_tokens=gen_tokens, gen_temperature=temperature, top_k=4)
    return generate_batch(ModelRunner(model), PROMPTS, cfg, STOP, pad=0)


@pytest.mark.usefixtures("float32_features")
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_batched_generation_features_equal_one_unpadded_forward_per_sample(
    temperature: float,
) -> None:
    """Left-padded rows with their own positions and masks compute what each sequence computes
    alone: features within float32 matmul noise of the unbatched pass (add_features), and the
    stored top-k equal to the top-k of that pass's logits at every response position."""
    model = tiny_llama(vocab_size=32, seed=1, layers=2)
    samples = _generate(model, temperature)
    assert [s.ids[: s.n_prompt] for s in samples] == PROMPTS
    reference = copy.deepcopy(samples)
    add_features(model, reference)
    runner = ModelRunner(model)
    for got, ref in zip(samples, reference, strict=True):
        assert got.features.shape == (len(got.ids), 32)
        torch.testing.assert_close(got.features, ref.features, atol=1e-5, rtol=1e-4)
        n_response = len(got.ids) - got.n_prompt
        assert got.top_ids.shape == got.top_logp.shape == (n_response, 4)
        runner.reset(len(got.ids))
        logits = runner.forward(got.ids, logits_from=got.n_prompt - 1).logits[:n_response]
        logp, ids = torch.log_softmax(logits, -1).topk(4, dim=-1)
        assert torch.equal(ids[:, 0], got.top_ids[:, 0])
        torch.testing.assert_close(got.top_logp, logp, atol=1e-4, rtol=1e-4)
        # A response ends at its first stop token or after gen_tokens.
        response = got.ids[got.n_prompt :]
        assert all(t not in STOP for t in response[:-1])
        assert response[-1] in STOP or n_response == 12


def test_greedy_generation_follows_the_argmax() -> None:
    model = tiny_llama(vocab_size=32, seed=1, layers=2)
    for sample in _generate(model, 0.0):
        response = sample.ids[sample.n_prompt :]
        assert response == sample.top_ids[:, 0].tolist()


def test_long_prompts_keep_their_last_tokens() -> None:
    cfg = CorpusConfig(max_prompt_tokens=4, gen_tokens=8, max_seq_len=64)
    assert truncated_prompts([[1, 2, 3, 4, 5, 6], [7, 8]], cfg) == [[3, 4, 5, 6], [7, 8]]
    # The response must still fit in max_seq_len.
    tight = CorpusConfig(max_prompt_tokens=100, gen_tokens=60, max_seq_len=64)
    assert truncated_prompts([list(range(10))], tight) == [[6, 7, 8, 9]]


@pytest.mark.usefixtures("float32_features")
def test_head_token_targets_are_the_stored_top_k_of_the_predicted_feature() -> None:
    """The head's prediction at t is f_{t+1}, whose lm_head gives x_{t+2}: the stored top-k
    the loss takes at the chosen positions is the top-k of lm_head(stored feature there)."""
    model = tiny_llama(vocab_size=32, seed=1, layers=2)
    samples = _generate(model, 0.7)
    batch = _batch(samples, torch.device("cpu"))
    wanted = batch.features[:, 1:][batch.response]
    assert (
        batch.top_ids.shape[0]
        == wanted.shape[0]
        == sum(len(s.ids) - 2 for s in samples) - sum(max(s.n_prompt - 2, 0) for s in samples)
    )
    with torch.no_grad():
        logp, ids = torch.log_softmax(model.lm_head(wanted), -1).topk(4, dim=-1)
    assert torch.equal(ids[:, 0], batch.top_ids[:, 0])
    torch.testing.assert_close(logp, batch.top_logp, atol=1e-4, rtol=1e-4)
    # A one-token prompt: its first response token has no position (nothing before it).
    one = copy.deepcopy(samples[1])
    one.ids, one.n_prompt = one.ids[1:], 1
    one.features = one.features[1:]
    single = _batch([one], torch.device("cpu"))
    assert torch.equal(single.top_ids, one.top_ids[1:])
    # The metrics compare with the target's argmax.
    head = build_head(head_config_for(model), model)
    losses = _losses(head, batch, noise=0.0)
    assert losses["n"] == wanted.shape[0]
    assert torch.isfinite(losses["token_loss"])


def test_head_training_context_keeps_the_response_and_its_targets() -> None:
    from specrepro.training.train_head import trimmed

    model = tiny_llama(vocab_size=32, seed=1, layers=2)
    sample = _generate(model, 0.7)[3]  # an 11-token prompt
    short = trimmed(sample, 3)
    assert short.n_prompt == 3 and short.ids == sample.ids[8:]
    assert torch.equal(short.features, sample.features[8:])
    assert short.top_ids is sample.top_ids
    # At least two prompt tokens stay, so the first response token is still predicted.
    assert trimmed(sample, 0).n_prompt == 2
    assert trimmed(sample, None) is sample
