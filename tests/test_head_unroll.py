"""The unrolled head (training/head_unroll.py) computes, at every position at once, what the head
computes when it drafts a chain from its own features through its cache."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from specrepro.models.eagle_head import build_head, head_config_for
from specrepro.training.head_unroll import unroll_mask, unrolled_features
from tests.conftest import tiny_llama


def tiny_head(seed: int = 0):
    target = tiny_llama(vocab_size=16, seed=seed)
    torch.manual_seed(seed + 1)
    head = build_head(head_config_for(target), target).eval()
    return target, head


def test_the_mask_is_the_chain_each_query_drafts() -> None:
    mask = unroll_mask(4, 2, torch.float32, torch.device("cpu"))[0, 0] == 0
    # Step 2, position 3: anchor a = 1; step 0 keys at 0..1, step 1 at 2, step 2 at 3.
    assert mask[3].nonzero().flatten().tolist() == [0, 1, 4 + 2, 8 + 3]
    # Position 1 < step: no anchor (no step 0 key), never an empty row (dropped by callers).
    assert mask[1].nonzero().flatten().tolist() == [4 + 0, 8 + 1]


@torch.no_grad()
def test_every_unrolled_step_equals_drafting_the_chain_through_the_cache() -> None:
    _, head = tiny_head()
    torch.manual_seed(3)
    ids = torch.randint(0, 16, (2, 9))
    features = torch.randn(2, 9, head.config.hidden_size)
    steps = unrolled_features(head, ids, features, steps=4)
    length = ids.shape[1] - 1
    for row in range(2):
        for anchor in range(length - 3):
            # Inference: cache the target's features up to the anchor, then draft three levels,
            # each reading the previous level's own feature and the next (teacher) token.
            cache = DynamicCache()
            prefix = slice(0, anchor + 1)
            out = head(
                ids[row : row + 1, 1:][:, prefix], features[row : row + 1, :-1][:, prefix],
                torch.arange(anchor + 1)[None], cache=cache, logits_to_keep=0,
            )  # fmt: skip
            own = out.hidden_states[-1][:, -1:]
            torch.testing.assert_close(own[0, 0], steps[0][row, anchor], atol=1e-5, rtol=0)
            for level in range(1, 4):
                t = anchor + level
                out = head(
                    ids[row : row + 1, t + 1 : t + 2], own, torch.tensor([[t]]), cache=cache,
                    logits_to_keep=0,
                )  # fmt: skip
                own = out.hidden_states[-1]
                torch.testing.assert_close(own[0, 0], steps[level][row, t], atol=1e-5, rtol=0)


def test_gradients_reach_the_head_through_every_step() -> None:
    _, head = tiny_head()
    ids = torch.randint(0, 16, (1, 6))
    features = torch.randn(1, 6, head.config.hidden_size)
    head.fc.weight.requires_grad_(True)
    last = unrolled_features(head, ids, features, steps=3)[-1]
    last[:, 2:].sum().backward()
    assert head.fc.weight.grad is not None and head.fc.weight.grad.abs().sum() > 0


def test_a_head_trained_on_its_own_rollouts_agrees_more_two_and_three_tokens_ahead() -> None:
    """A tiny target's sampled continuations; the same head trained teacher-forced (1 step) and
    unrolled on its own features (3 steps), same seed and updates. Teacher-forced, the head
    never sees its own feature errors, and its agreement falls off after one token."""
    import random

    from specrepro.engine.runner import ModelRunner
    from specrepro.training.teacher import CorpusConfig, generate_batch
    from specrepro.training.train_head import HeadTrainConfig, train_head

    target = tiny_llama(vocab_size=32, seed=1, layers=2)
    rng = random.Random(0)
    prompts = [[rng.randrange(1, 32) for _ in range(rng.randrange(2, 8))] for _ in range(96)]
    torch.manual_seed(0)
    corpus = CorpusConfig(gen_tokens=24, gen_temperature=0.7, top_k=4)
    samples = []
    for i in range(0, len(prompts), 16):
        samples += generate_batch(ModelRunner(target), prompts[i : i + 16], corpus, set(), pad=0)
    ahead = {}
    for unroll in (1, 3):
        torch.manual_seed(5)
        head = build_head(head_config_for(target), target)
        cfg = HeadTrainConfig(steps=120, batch_size=8, lr=3e-3, noise=0.0, unroll_steps=unroll)
        ahead[unroll] = train_head(head, samples, cfg)[-1]["holdout_top1_ahead"]
    assert len(ahead[1]) == 6
    # Measured: k=2 0.42 vs 0.56, k=3 0.36 vs 0.53 (k=1: 0.66 vs 0.60).
    for k in (2, 3):
        assert ahead[3][k - 1] > ahead[1][k - 1] + 0.05, (k, ahead)
