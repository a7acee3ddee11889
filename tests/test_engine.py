"""The shared runtime: tree masks, explicit positions and keeping a subset of the cache."""

from __future__ import annotations

import pytest
import torch

from specrepro.engine.runner import ModelRunner, NonFiniteLogitsError
from tests.conftest import tiny_llama

# A hand-built tree under the prefix: node -> parent (-1 = attached to the prefix).
TOKENS = [5, 9, 3, 7, 11, 2]
PARENTS = [-1, 0, 0, 1, 1, 2]


def tree_inputs(prefix_len: int) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    n = len(TOKENS)
    mask = torch.zeros(n, n, dtype=torch.bool)
    paths, depth = [], []
    for i in range(n):
        path, j = [], i
        while j != -1:
            mask[i, j] = True
            path.append(j)
            j = PARENTS[j]
        paths.append(path[::-1])
        depth.append(len(path) - 1)
    positions = torch.tensor([prefix_len + d for d in depth])
    return mask, positions, paths


def check_tree(model: torch.nn.Module, prefix: list[int], atol: float) -> None:
    runner = ModelRunner(model)
    runner.forward(prefix)
    mask, positions, paths = tree_inputs(len(prefix))
    tree_logits = runner.forward(TOKENS, positions=positions, tree_mask=mask).logits
    for node, path in enumerate(paths):
        alone = ModelRunner(model)
        ref = alone.forward(prefix + [TOKENS[j] for j in path]).logits[-1]
        torch.testing.assert_close(tree_logits[node], ref, atol=atol, rtol=0)

    # Keep the path to node 4 (nodes 0, 1, 4): the cache must continue like one built on it.
    kept_nodes = paths[4]
    runner.keep(list(range(len(prefix))) + [len(prefix) + j for j in kept_nodes])
    assert runner.cache_len == len(prefix) + len(kept_nodes)
    continued = runner.forward([4, 8]).logits
    fresh = ModelRunner(model)
    ref = fresh.forward(prefix + [TOKENS[j] for j in kept_nodes] + [4, 8]).logits[-2:]
    torch.testing.assert_close(continued, ref, atol=atol, rtol=0)


def test_tree_logits_and_keep_on_tiny_model() -> None:
    check_tree(tiny_llama(vocab_size=16, seed=3), prefix=[1, 2, 3, 4, 5], atol=1e-4)


@pytest.mark.slow
def test_tree_logits_and_keep_on_real_target(smollm) -> None:
    model, tokenizer = smollm
    prefix = tokenizer("The quick brown fox jumps over the lazy dog.")["input_ids"]
    check_tree(model, prefix, atol=2e-4)


def test_crop_then_continue_matches_fresh_cache() -> None:
    model = tiny_llama(vocab_size=16, seed=4)
    runner = ModelRunner(model)
    runner.forward([1, 2, 3, 4, 5, 6])
    runner.crop(4)
    assert runner.cache_len == 4
    got = runner.forward([9]).logits[-1]
    ref = ModelRunner(model).forward([1, 2, 3, 4, 9]).logits[-1]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_nan_logits_raise_a_named_error() -> None:
    model = tiny_llama(vocab_size=16, seed=5)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLogitsError, match="non-finite logits"):
        ModelRunner(model, name="target").forward([1, 2, 3])
