"""The EAGLE family on the real default target: exactly vanilla's greedy tokens in float32.

The head is trained here on the target's own greedy continuations of the test prompts until it
predicts them well, so that rounds accept long paths (including one that max_new_tokens cuts
inside an accepted path, and one that ends on EOS). How good the head is does not change what
the methods must output; it only makes the test exercise the long-path code.
"""

from __future__ import annotations

import pytest
import torch

from specrepro.engine.runner import ModelRunner
from specrepro.models.eagle_head import build_head, head_config_for
from specrepro.training.teacher import Sample
from specrepro.training.train_head import HeadTrainConfig, train_head
from tests.helpers import chat_ids, decoder_for

PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about autumn leaves.",
    "Answer with one word: is the sky blue?",
    "List four prime numbers.",
]
CPU_SIZED = {
    "eagle": {},
    "eagle2": {"top_k": 4, "depth": 5, "total_tokens": 16},
    "ddd": {"top_k": 4, "total_tokens": 16, "check_levels": [3, 5], "threshold": -0.3,
            "max_levels": 6},
    "ddd_async": {"top_k": 4, "total_tokens": 16, "check_levels": [3, 5], "threshold": -0.3,
                  "max_levels": 6},
}  # fmt: skip
MAX_NEW = 40


@pytest.fixture(scope="module")
def real_setup(smollm):
    model, tokenizer = smollm
    eos = {tokenizer.eos_token_id}
    vanilla = decoder_for(model, None, "vanilla", 0.0, eos=eos)
    prompts = [chat_ids(tokenizer, text) for text in PROMPTS]
    refs = [vanilla.generate(ids, MAX_NEW, seed=0)[0].tokens for ids in prompts]
    samples = []
    for ids, ref in zip(prompts, refs, strict=True):
        runner = ModelRunner(model)
        out = runner.forward(ids + ref, logits_from=len(ids) - 1, want_hidden=True)
        # The head's token loss reads the target's top-k at every response token, as a corpus
        # stores it (the logits at position t are the distribution of token t + 1).
        top_logp, top_ids = torch.log_softmax(out.logits[: len(ref)], -1).topk(8, dim=-1)
        samples.append(Sample(ids + ref, len(ids), top_ids, top_logp, out.hidden.detach()))
    torch.manual_seed(0)
    head = build_head(head_config_for(model), model)
    log = train_head(
        head, samples, HeadTrainConfig(steps=60, batch_size=4, lr=2e-3, noise=0.0,
                                       holdout_fraction=0.0)
    )  # fmt: skip
    return model, tokenizer, head, prompts, refs, log


def test_the_overfit_head_learned_the_continuations(real_setup) -> None:
    *_, log = real_setup
    assert log[-1]["feature_loss"] < 0.5 * log[0]["feature_loss"]
    assert log[-1]["train_top1"] > 0.7


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(CPU_SIZED))
def test_tree_methods_equal_vanilla_greedy_on_the_real_target(real_setup, method: str) -> None:
    model, tokenizer, head, prompts, refs, _ = real_setup
    eos = {tokenizer.eos_token_id}
    assert any(ref[-1] in eos for ref in refs), "one reference should end on EOS"
    gen = decoder_for(model, None, method, 0.0, eos=eos, head=head, **CPU_SIZED[method])
    cut_inside_a_path = False
    long_paths = 0
    for ids, ref in zip(prompts, refs, strict=True):
        for max_new in (MAX_NEW, 23):
            got, _ = gen.generate(ids, max_new, seed=0)
            assert got.tokens == ref[:max_new], (method, max_new)
            rounds = got.extra["rounds"]
            long_paths += sum(a >= 2 for a in rounds["accepted"])
            # The stop rule trimmed the last round: it committed less than it accepted + bonus.
            cut_inside_a_path |= got.accept_lengths[-1] < rounds["accepted"][-1] + 1
    assert long_paths >= 5
    assert cut_inside_a_path
