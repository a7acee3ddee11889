"""The EAGLE family on the shared engine: tree machinery, exactness at T=0, the target
distribution at T>0, DDD's depth rule, and the published head format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from specrepro.decoding.base import MethodError, make_params
from specrepro.engine import tree as tree_module
from specrepro.engine.runner import ModelRunner
from specrepro.engine.tree import (
    DraftTree,
    accept_greedy,
    ancestor_mask,
    paths,
    positions,
)
from specrepro.models.eagle_head import build_head, head_config_for, load_head, save_head
from specrepro.models.loader import ModelError
from tests.conftest import tiny_llama
from tests.helpers import decoder_for
from tests.test_sps import PROMPT, VOCAB, chi_square_p

TREE_METHODS = {
    "eagle": {"tree": [[0], [1], [2], [0, 0], [0, 1], [1, 0], [0, 0, 0]]},
    "eagle2": {"top_k": 3, "depth": 3, "total_tokens": 8},
    "ddd": {"top_k": 3, "total_tokens": 8, "check_levels": [2], "threshold": -0.4, "max_levels": 4},
    "ddd_async": {
        "top_k": 3, "total_tokens": 8, "check_levels": [2], "threshold": -0.4, "max_levels": 4
    },
}  # fmt: skip


def alone(model: torch.nn.Module, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0]


@pytest.fixture(scope="module")
def tiny_target() -> torch.nn.Module:
    return tiny_llama(vocab_size=VOCAB, seed=0)


@pytest.fixture(scope="module")
def tiny_head(tiny_target) -> torch.nn.Module:
    torch.manual_seed(11)
    return build_head(head_config_for(tiny_target), tiny_target)


# -- tree machinery ----------------------------------------------------------------------------

HAND_TREE = [-1, 0, 0, 1, 1, 2, 3]  # root; two children; a grandchild chain


def test_tree_mask_positions_and_paths_on_a_hand_built_tree() -> None:
    mask = ancestor_mask(HAND_TREE)
    assert mask[6].nonzero().flatten().tolist() == [0, 1, 3, 6]
    assert mask[5].nonzero().flatten().tolist() == [0, 2, 5]
    assert positions(HAND_TREE, 10).tolist() == [10, 11, 11, 12, 12, 12, 13]
    assert paths(HAND_TREE) == [[0, 1, 4], [0, 2, 5], [0, 1, 3, 6]]


def check_tree_verification(model, prefix: list[int], tokens: list[int], next_token: int) -> None:
    """HAND_TREE's nodes (`tokens`) at explicit positions under its mask after a cached
    `prefix`: each path's logits are those of the path run alone; keeping the path 0-1-3-6 and
    continuing with `next_token` equals a cache built on that path alone."""
    runner = ModelRunner(model)
    runner.forward(prefix)
    out = runner.forward(
        tokens, positions=positions(HAND_TREE, len(prefix)), tree_mask=ancestor_mask(HAND_TREE)
    )
    for path in paths(HAND_TREE):
        ref = alone(model, prefix + [tokens[i] for i in path])[len(prefix) :]
        torch.testing.assert_close(out.logits[path], ref, atol=1e-4, rtol=0)
    kept = [0, 1, 3, 6]
    runner.keep(list(range(len(prefix))) + [len(prefix) + i for i in kept])
    got = runner.forward([next_token]).logits[-1]
    ref = alone(model, prefix + [tokens[i] for i in kept] + [next_token])[-1]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


def test_tree_verification_and_kept_path_match_running_the_path_alone() -> None:
    model = tiny_llama(vocab_size=32, seed=3)
    check_tree_verification(model, [5, 6, 7, 8], [9, 1, 2, 3, 4, 10, 11], 12)


def test_greedy_acceptance_follows_the_argmax_child() -> None:
    tree = DraftTree(torch.tensor([0, 4, 5, 6, 7, 2, 3]), HAND_TREE)
    logits = torch.full((7, 8), -5.0)
    logits[0, 4] = logits[1, 6] = logits[3, 3] = 0.0  # root->4 (node 1) -> 6 (node 3) -> 3 (6)
    logits[6, 1] = 0.0  # bonus after node 6
    assert accept_greedy(tree, logits) == ([1, 3, 6], 1)
    logits[1, 6], logits[1, 2] = -5.0, 0.0  # node 1's argmax is no child: stop there
    assert accept_greedy(tree, logits) == ([1], 2)


# -- T=0: exactly vanilla ----------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(TREE_METHODS))
def test_greedy_equals_vanilla_on_a_tiny_model(tiny_target, tiny_head, method: str) -> None:
    for prompt, max_new in [(PROMPT, 25), ([4, 4, 1], 9), ([7], 14)]:
        ref, _ = decoder_for(tiny_target, None, "vanilla", 0.0).generate(prompt, max_new, seed=0)
        gen = decoder_for(tiny_target, None, method, 0.0, head=tiny_head, **TREE_METHODS[method])
        got, _ = gen.generate(prompt, max_new, seed=0)
        assert got.tokens == ref.tokens
        assert sum(got.accept_lengths) == got.new_tokens
        assert got.target_forwards == len(got.accept_lengths)


# -- T>0: the target's distribution ------------------------------------------------------------

N_SAMPLES = 1500


def exact_three_token_distribution(target: torch.nn.Module, temperature: float) -> np.ndarray:
    """P(x1, x2, x3 | prompt) by enumeration: x1 comes from the prefill, x2 and x3 from the
    first tree round (an accepted node, then the next node or the bonus)."""
    joint = np.zeros((VOCAB,) * 3)
    with torch.no_grad():
        p1 = torch.softmax(alone(target, PROMPT)[-1] / temperature, -1)
        for x1 in range(VOCAB):
            p2 = torch.softmax(alone(target, PROMPT + [x1])[-1] / temperature, -1)
            for x2 in range(VOCAB):
                p3 = torch.softmax(alone(target, PROMPT + [x1, x2])[-1] / temperature, -1)
                joint[x1, x2] = (p1[x1] * p2[x2] * p3).numpy()
    return joint


def sampled_counts(gen, n: int) -> tuple[np.ndarray, int]:
    """Counts of (x1, x2, x3) over n seeds, and how many first tree rounds accepted a node."""
    counts = np.zeros((VOCAB,) * 3)
    accepted = 0
    for seed in range(n):
        result, _ = gen.generate(PROMPT, 3, seed=seed)
        counts[tuple(result.tokens)] += 1
        accepted += int(result.accept_lengths[1] >= 2)
    return counts, accepted


@pytest.fixture(scope="module")
def exact(tiny_target) -> np.ndarray:
    return exact_three_token_distribution(tiny_target, 1.0)


@pytest.mark.parametrize("method", sorted(TREE_METHODS))
def test_tree_methods_sample_from_the_target_distribution(
    tiny_target, tiny_head, exact, method: str
) -> None:
    gen = decoder_for(tiny_target, None, method, 1.0, head=tiny_head, **TREE_METHODS[method])
    counts, accepted = sampled_counts(gen, N_SAMPLES)
    assert chi_square_p(counts, exact) > 1e-3
    # Drafted nodes were accepted often enough, and rejected often enough, to matter.
    assert 0.05 * N_SAMPLES < accepted < 0.95 * N_SAMPLES


@pytest.mark.parametrize("method", ["eagle", "eagle2"])
def test_the_distribution_test_rejects_a_rule_without_the_residual_update(
    tiny_target, tiny_head, exact, method: str, monkeypatch
) -> None:
    # Power check: keep p unchanged after a rejected sibling (no residual, no removal).
    monkeypatch.setattr(tree_module, "residual", lambda p, q: p)
    monkeypatch.setattr(tree_module, "_without", lambda p, x: p)
    gen = decoder_for(tiny_target, None, method, 1.0, head=tiny_head, **TREE_METHODS[method])
    counts, _ = sampled_counts(gen, N_SAMPLES)
    assert chi_square_p(counts, exact) < 1e-4


# -- DDD's depth rule --------------------------------------------------------------------------

DDD = {"top_k": 3, "total_tokens": 12, "check_levels": [2, 3], "max_levels": 5}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_ddd_with_a_very_low_threshold_is_eagle2_at_depth_n(
    tiny_target, tiny_head, temperature: float
) -> None:
    ddd = decoder_for(tiny_target, None, "ddd", temperature, head=tiny_head, threshold=-1e9, **DDD)
    eagle2 = decoder_for(
        tiny_target, None, "eagle2", temperature, head=tiny_head, top_k=3, depth=5, total_tokens=12
    )
    for seed in range(3):
        got, _ = ddd.generate(PROMPT, 20, seed=seed)
        ref, _ = eagle2.generate(PROMPT, 20, seed=seed)
        assert got.tokens == ref.tokens
        rounds = got.extra["rounds"]
        assert set(rounds["levels"]) == {5}
        for key in ("levels", "tree_size", "accepted"):
            assert rounds[key] == ref.extra["rounds"][key]
        assert all([level for level, _ in checks] == [2, 3] for checks in rounds["checks"])


def test_ddd_with_a_very_high_threshold_stops_at_the_first_check(tiny_target, tiny_head) -> None:
    gen = decoder_for(tiny_target, None, "ddd", 0.0, head=tiny_head, threshold=1e9, **DDD)
    got, _ = gen.generate(PROMPT, 20, seed=0)
    rounds = got.extra["rounds"]
    assert set(rounds["levels"]) == {2}
    assert all(len(checks) == 1 and checks[0][0] == 2 for checks in rounds["checks"])
    # Two levels of width 3 draft 3 + 9 candidates; total_tokens 12 counts the root, so 11 of
    # them are kept and the target verifies 12 tokens every round.
    assert set(rounds["tree_size"]) == {12}


@pytest.mark.parametrize("total_tokens", [2, 7, 12])
def test_total_tokens_counts_the_root_as_the_reference_does(
    tiny_target, tiny_head, total_tokens: int, monkeypatch
) -> None:
    """The reference's total_tokens = 60 verifies 60 tokens, the root among them."""
    verified: list[int] = []
    gen = decoder_for(
        tiny_target, None, "eagle2", 0.0, head=tiny_head, top_k=3, depth=4,
        total_tokens=total_tokens,
    )  # fmt: skip
    forward = gen.target.forward

    def counting(tokens, *args, **kwargs):
        if kwargs.get("tree_mask") is not None:
            verified.append(len(tokens))
        return forward(tokens, *args, **kwargs)

    monkeypatch.setattr(gen.target, "forward", counting)
    got, _ = gen.generate(PROMPT, 12, seed=0)
    # Depth 4 at top-k 3 drafts 3 + 3 * 9 candidates: always enough to fill the tree.
    assert verified and set(verified) == {total_tokens}
    assert got.extra["rounds"]["tree_size"] == verified


def test_a_tree_of_one_token_is_refused() -> None:
    from specrepro.decoding.base import MethodError, make_params

    for algorithm in ("eagle2", "ddd", "ddd_async"):
        with pytest.raises(MethodError, match="total_tokens counts the root"):
            make_params(algorithm, {"total_tokens": 1})


def test_ddd_async_gives_the_tokens_and_trees_of_ddd(tiny_target, tiny_head) -> None:
    # A threshold between the typical H values, so some rounds stop early and some do not.
    for threshold in (-0.3, -1.0, -3.0):
        runs = [
            decoder_for(
                tiny_target, None, m, 0.0, head=tiny_head, threshold=threshold, **DDD
            ).generate(PROMPT, 24, seed=0)[0]
            for m in ("ddd", "ddd_async")
        ]
        assert runs[0].tokens == runs[1].tokens
        assert runs[0].extra["rounds"]["levels"] == runs[1].extra["rounds"]["levels"]
        assert runs[0].extra["rounds"]["tree_size"] == runs[1].extra["rounds"]["tree_size"]


def test_ddd_rejects_check_levels_beyond_its_depth() -> None:
    with pytest.raises(MethodError, match="check_levels"):
        make_params("ddd", {"check_levels": [12], "max_levels": 11})
    with pytest.raises(MethodError, match="top_k"):
        make_params("eagle2", {"top_k": 0})


# -- the published head format -----------------------------------------------------------------


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_a_head_in_the_published_format_loads_with_the_same_logits(
    tiny_target, tiny_head, tmp_path, weights: str
) -> None:
    save_head(tiny_head, tmp_path)
    if weights == "pytorch_model.bin":
        state = load_file(str(tmp_path / "model.safetensors"))
        state["embed_tokens.weight"] = tiny_target.get_input_embeddings().weight.detach().clone()
        torch.save(state, tmp_path / weights)
        (tmp_path / "model.safetensors").unlink()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["bias"] is True
    loaded = load_head(tmp_path, tiny_target)
    tokens, feats = [1, 2, 3, 4], torch.randn(4, tiny_target.config.hidden_size)
    a = ModelRunner(tiny_head).forward(tokens, features=feats, want_hidden=True)
    b = ModelRunner(loaded).forward(tokens, features=feats, want_hidden=True)
    torch.testing.assert_close(a.logits, b.logits, atol=0, rtol=0)
    torch.testing.assert_close(a.hidden, b.hidden, atol=0, rtol=0)


def test_the_head_cache_continues_like_a_fresh_forward(tiny_target, tiny_head) -> None:
    tokens, feats = [1, 2, 3, 4, 5], torch.randn(5, tiny_target.config.hidden_size)
    whole = ModelRunner(tiny_head).forward(tokens, features=feats).logits
    runner = ModelRunner(tiny_head)
    runner.forward(tokens[:3], features=feats[:3])
    part = runner.forward(tokens[3:], features=feats[3:]).logits
    torch.testing.assert_close(part, whole[3:], atol=1e-5, rtol=0)


class NotATensor:
    pass


def test_a_pickle_holding_more_than_tensors_is_refused(tiny_target, tiny_head, tmp_path) -> None:
    save_head(tiny_head, tmp_path)
    state: dict = dict(load_file(str(tmp_path / "model.safetensors")))
    state["extra"] = NotATensor()
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="refused"):
        load_head(tmp_path, tiny_target)


def test_a_head_with_wrong_weights_or_shape_is_refused(tiny_target, tiny_head, tmp_path) -> None:
    save_head(tiny_head, tmp_path)
    state = dict(load_file(str(tmp_path / "model.safetensors")))
    del state["fc.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelError, match=r"missing \['fc.weight'\]"):
        load_head(tmp_path, tiny_target)
    other = tiny_llama(vocab_size=VOCAB * 2, seed=0)
    save_head(tiny_head, tmp_path)
    with pytest.raises(ModelError, match="vocab_size"):
        load_head(tmp_path, other)
