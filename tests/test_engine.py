"""The shared runtime: tree masks, masks over cached positions, explicit positions, keeping a
subset of the preallocated cache, hidden states, and the checks that refuse bad input."""

from __future__ import annotations

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from specrepro.engine.kvcache import PreallocatedCache, SlidingWindowUnsupported
from specrepro.engine.runner import CacheNotAdvancedError, ModelRunner, NonFiniteLogitsError
from specrepro.models.loader import ModelError
from tests.conftest import tiny_llama
from tests.helpers import decoder_for
from tests.test_host_reads import counting_blocking_copies

ATTENTION = ["sdpa", "eager"]

# A hand-built tree under the prefix: node -> parent (-1 = attached to the prefix).
TOKENS = [5, 9, 3, 7, 11, 2]
PARENTS = [-1, 0, 0, 1, 1, 2]


def model_with(attention: str, seed: int = 3, vocab_size: int = 16) -> torch.nn.Module:
    model = tiny_llama(vocab_size=vocab_size, seed=seed)
    model.set_attn_implementation(attention)
    return model


def paths_and_depths(parents: list[int]) -> tuple[list[list[int]], list[int]]:
    paths = []
    for i in range(len(parents)):
        path, j = [], i
        while j != -1:
            path.append(j)
            j = parents[j]
        paths.append(path[::-1])
    return paths, [len(p) - 1 for p in paths]


def tree_inputs(prefix_len: int) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    paths, depth = paths_and_depths(PARENTS)
    mask = torch.zeros(len(TOKENS), len(TOKENS), dtype=torch.bool)
    for i, path in enumerate(paths):
        mask[i, path] = True
    return mask, torch.tensor([prefix_len + d for d in depth]), paths


def alone(model: torch.nn.Module, tokens: list[int]) -> torch.Tensor:
    """Logits of running `tokens` as one plain sequence in a fresh cache."""
    return ModelRunner(model).forward(tokens).logits


def check_tree(model: torch.nn.Module, prefix: list[int], atol: float) -> None:
    runner = ModelRunner(model)
    runner.forward(prefix)
    mask, positions, paths = tree_inputs(len(prefix))
    tree_logits = runner.forward(TOKENS, positions=positions, tree_mask=mask).logits
    for node, path in enumerate(paths):
        ref = alone(model, prefix + [TOKENS[j] for j in path])[-1]
        torch.testing.assert_close(tree_logits[node], ref, atol=atol, rtol=0)

    # Keep the path to node 4 (nodes 0, 1, 4): the cache must continue like one built on it.
    kept_nodes = paths[4]
    runner.keep(list(range(len(prefix))) + [len(prefix) + j for j in kept_nodes])
    assert runner.cache_len == len(prefix) + len(kept_nodes)
    continued = runner.forward([4, 8]).logits
    ref = alone(model, prefix + [TOKENS[j] for j in kept_nodes] + [4, 8])[-2:]
    torch.testing.assert_close(continued, ref, atol=atol, rtol=0)


@pytest.mark.parametrize("attention", ATTENTION)
def test_tree_logits_and_keep_on_tiny_model(attention: str) -> None:
    check_tree(model_with(attention), prefix=[1, 2, 3, 4, 5], atol=1e-4)


@pytest.mark.slow
def test_tree_logits_and_keep_on_real_target(smollm) -> None:
    model, tokenizer = smollm
    prefix = tokenizer("The quick brown fox jumps over the lazy dog.")["input_ids"]
    check_tree(model, prefix, atol=2e-4)


def grow_level(
    runner: ModelRunner, prefix_len: int, parents: list[int], level: list[int]
) -> torch.Tensor:
    """Forward the nodes of one tree level; each sees the prefix and its cached ancestors."""
    paths, depth = paths_and_depths(parents)
    past = runner.cache_len
    span = torch.zeros(len(level), past + len(level), dtype=torch.bool)
    span[:, :prefix_len] = True
    for row, node in enumerate(level):
        # Nodes are cached in creation order right after the prefix.
        span[row, [prefix_len + j for j in paths[node]]] = True
    positions = torch.tensor([prefix_len + depth[node] for node in level])
    return runner.forward([TOKENS[n] for n in level], positions=positions, span_mask=span).logits


@pytest.mark.parametrize("attention", ATTENTION)
def test_masks_over_cached_positions_match_each_path_alone(attention: str) -> None:
    model = model_with(attention, seed=7)
    prefix = [1, 2, 3, 4]
    runner = ModelRunner(model)
    runner.forward(prefix)
    paths, _ = paths_and_depths(PARENTS)
    # Level by level, as EAGLE-2 expands its draft tree over the head's own cache.
    for level in ([0], [1, 2], [3, 4, 5]):
        logits = grow_level(runner, len(prefix), PARENTS, level)
        for row, node in enumerate(level):
            ref = alone(model, prefix + [TOKENS[j] for j in paths[node]])[-1]
            torch.testing.assert_close(logits[row], ref, atol=1e-4, rtol=0)

    # keep() the path to node 5 (0, 2, 5), then grow a second tree on top of it.
    kept = paths[5]
    runner.keep(list(range(len(prefix))) + [len(prefix) + j for j in kept])
    new_prefix = prefix + [TOKENS[j] for j in kept]
    runner_len = runner.cache_len
    assert runner_len == len(new_prefix)
    mask, positions, second_paths = tree_inputs(len(new_prefix))
    logits = runner.forward(TOKENS, positions=positions, tree_mask=mask).logits
    for node, path in enumerate(second_paths):
        ref = alone(model, new_prefix + [TOKENS[j] for j in path])[-1]
        torch.testing.assert_close(logits[node], ref, atol=1e-4, rtol=0)


def test_span_mask_must_cover_cache_and_new_tokens() -> None:
    runner = ModelRunner(tiny_llama(seed=1))
    runner.forward([1, 2, 3])
    with pytest.raises(ValueError, match="span_mask must have shape"):
        runner.forward([4, 5], span_mask=torch.ones(2, 2, dtype=torch.bool))


def test_keep_moves_only_the_entries_after_the_kept_prefix_in_one_gather(monkeypatch) -> None:
    moved: list[tuple[int, list[int]]] = []
    original = PreallocatedCache.keep

    def spy(self, start, tail):
        moved.append((start, tail.tolist()))
        original(self, start, tail)

    monkeypatch.setattr(PreallocatedCache, "keep", spy)
    runner = ModelRunner(tiny_llama(seed=2))
    runner.forward(list(range(1, 13)))
    before = [(layer.keys.clone(), layer.values.clone()) for layer in runner.cache.layers]
    kept = list(range(8)) + [9, 11]
    runner.keep(kept)
    # One move for the whole cache (every layer, keys and values): two entries into slots 8
    # and 9; positions 0..7 stayed in place.
    assert moved == [(8, [9, 11])]
    assert runner.cache_len == 10
    for layer, (keys, values) in zip(runner.cache.layers, before, strict=True):
        assert torch.equal(layer.keys, keys[:, :, kept])
        assert torch.equal(layer.values, values[:, :, kept])


def test_keep_and_select_rows_launch_a_bounded_number_of_ops_whatever_the_depth() -> None:
    from torch.profiler import ProfilerActivity, profile

    def ops(layers: int) -> tuple[int, int]:
        runner = ModelRunner(tiny_llama(seed=2, layers=layers))
        runner.forward(list(range(1, 13)))
        with profile(activities=[ProfilerActivity.CPU]) as keep_prof:
            runner.keep(list(range(8)) + [9, 11])
        runner.reset()
        runner.forward(torch.tensor([[1, 2], [3, 4]]))
        with profile(activities=[ProfilerActivity.CPU]) as rows_prof:
            runner.select_rows([1, 0])
        return len(keep_prof.events()), len(rows_prof.events())

    assert ops(2) == ops(8)


@pytest.mark.parametrize("rows", [[0, 1, 2], [2, 0, 1], [1, 1, 0], [2, 2, 2]])
def test_rows_reordered_in_place_equal_a_fresh_copy(rows: list[int]) -> None:
    # The in-place path (same rows, host list given) against the fresh-storage path, with a
    # forest tail per row that reads positions other rows' prefixes do not touch.
    def filled() -> PreallocatedCache:
        cache = PreallocatedCache(num_layers=2, capacity=16)
        torch.manual_seed(0)
        for layer in cache.layers:
            layer.update(torch.randn(3, 2, 9, 4), torch.randn(3, 2, 9, 4))
        return cache

    tail = torch.tensor([[6, 8], [7, 8], [5, 6]])
    fresh, in_place = filled(), filled()
    fresh.select_rows(torch.tensor(rows), 5, tail)
    in_place.select_rows(torch.tensor(rows), 5, tail, host_rows=rows)
    for a, b in zip(fresh.layers, in_place.layers, strict=True):
        assert a.length == b.length == 7
        assert torch.equal(a.keys[:, :, :7], b.keys[:, :, :7])
        assert torch.equal(a.values[:, :, :7], b.values[:, :, :7])


def test_a_model_that_ignores_the_cache_is_caught() -> None:
    model = tiny_llama(seed=3)
    runner = ModelRunner(model)
    forward = model.forward

    def fresh_cache(*args, cache=None, **kwargs):  # as a release that takes another keyword
        return forward(*args, **kwargs)

    model.forward = fresh_cache
    with pytest.raises(CacheNotAdvancedError, match="did not use the engine's cache"):
        runner.forward([1, 2, 3])


def test_host_lists_reach_the_device_through_a_pinned_copy(monkeypatch) -> None:
    # On a GPU a list copied straight to the device blocks (a sync); the runner builds the
    # tensor on the host and hands it to tree.to_device (pinned, non-blocking).
    import specrepro.engine.runner as runner_module

    sent: list[torch.Tensor] = []
    original = runner_module.to_device

    def spy(host, device):
        sent.append(host)
        return original(host, device)

    monkeypatch.setattr(runner_module, "to_device", spy)
    runner = ModelRunner(tiny_llama(seed=2))
    with counting_blocking_copies() as blocking:
        runner.forward([1, 2, 3, 4])
        runner.forward([5, 6], tree_mask=torch.tensor([[True, False], [True, True]]))
        runner.keep([0, 1, 2, 4])
    assert blocking == []
    # The token lists and the kept indices (the tree mask was a device tensor already).
    assert [t.tolist() for t in sent] == [[1, 2, 3, 4], [5, 6], [4]]


def test_cache_grows_past_its_capacity_exactly() -> None:
    model = tiny_llama(seed=4)
    runner = ModelRunner(model)
    runner.reset(capacity=4)
    runner.reset()  # a smaller request never shrinks what is allocated
    runner.forward([1, 2, 3])
    runner.forward([4, 5, 6, 7, 8])  # beyond 4 positions: the buffers grow
    got = runner.forward([9]).logits[-1]
    torch.testing.assert_close(got, alone(model, list(range(1, 10)))[-1], atol=1e-5, rtol=0)
    assert runner.cache_bytes() == 2 * 2 * 9 * 2 * 8 * 4  # layers*kv*positions*heads*dim*fp32


def test_crop_then_continue_matches_fresh_cache() -> None:
    model = tiny_llama(vocab_size=16, seed=4)
    runner = ModelRunner(model)
    runner.forward([1, 2, 3, 4, 5, 6])
    runner.crop(4)
    assert runner.cache_len == 4
    got = runner.forward([9]).logits[-1]
    torch.testing.assert_close(got, alone(model, [1, 2, 3, 4, 9])[-1], atol=1e-5, rtol=0)


def test_logits_from_end_returns_no_logits() -> None:
    runner = ModelRunner(tiny_llama(vocab_size=16, seed=6))
    out = runner.forward([1, 2, 3], logits_from=3, want_hidden=True)
    assert out.logits.shape == (0, 16) and out.hidden.shape[0] == 3
    assert runner.cache_len == 3
    assert runner.forward([4], logits_from=0).logits.shape == (1, 16)
    with pytest.raises(ValueError, match="logits_from"):
        runner.forward([5], logits_from=2)


@pytest.mark.parametrize("attention", ATTENTION)
def test_want_hidden_is_the_final_norm_hidden_state(attention: str) -> None:
    model = model_with(attention, seed=8)
    tokens = [3, 1, 4, 1, 5, 9]
    out = ModelRunner(model).forward(tokens, logits_from=2, want_hidden=True)
    with torch.no_grad():
        # The decoder's last_hidden_state is taken after its final norm.
        ref = model.model(input_ids=torch.tensor([tokens])).last_hidden_state[0]
        torch.testing.assert_close(out.hidden, ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.lm_head(out.hidden[2:]), out.logits, atol=1e-4, rtol=0)
        # The norm changes the last layer's raw output, so a pre-norm state would fail above.
        model.model.norm.weight.mul_(3.0)
        assert not torch.allclose(
            model.model(input_ids=torch.tensor([tokens])).last_hidden_state[0], ref
        )


def nan_model() -> torch.nn.Module:
    model = tiny_llama(vocab_size=16, seed=5)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    return model


def test_nan_logits_are_checked_once_per_round_not_per_forward() -> None:
    runner = ModelRunner(nan_model(), name="target")
    runner.forward([1, 2, 3])  # no host read here: the flag stays on the device
    runner.forward([4])
    with pytest.raises(NonFiniteLogitsError, match=r"target: non-finite logits .* forward 1\.\.2"):
        runner.ensure_finite()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_nan_logits_stop_a_generation_with_a_named_error(temperature: float) -> None:
    decoder = decoder_for(nan_model(), None, "vanilla", temperature)
    with pytest.raises(NonFiniteLogitsError, match="target: non-finite logits"):
        decoder.generate([1, 2, 3], 5, seed=0)
    draft_nan = decoder_for(tiny_llama(vocab_size=16, seed=1), nan_model(), "sps", temperature)
    with pytest.raises(NonFiniteLogitsError, match="draft: non-finite logits"):
        draft_nan.generate([1, 2, 3], 5, seed=0)


@pytest.mark.parametrize("method", ["beam", "dsbd"])
def test_nan_logits_stop_beam_methods_before_a_draw_from_a_nan_joint(method: str) -> None:
    # A NaN joint is drawn as uniform on the device (multinomial would assert on a GPU); the
    # draws' read then names the model whose logits were NaN.
    target, draft = nan_model(), tiny_llama(vocab_size=16, seed=1)
    decoder = decoder_for(target, draft if method == "dsbd" else None, method, 1.0, top_k=0)
    with pytest.raises(NonFiniteLogitsError, match="target: non-finite logits"):
        decoder.generate([1, 2, 3], 5, seed=0)
    draft_nan = decoder_for(tiny_llama(vocab_size=16, seed=1), nan_model(), "dsbd", 1.0)
    with pytest.raises(NonFiniteLogitsError, match="draft: non-finite logits"):
        draft_nan.generate([1, 2, 3], 5, seed=0)


def test_a_joint_with_no_live_beam_raises_instead_of_drawing_uniformly() -> None:
    from types import SimpleNamespace

    from specrepro.decoding import beam
    from specrepro.engine.beams import Beam, BeamPool, make_draws
    from specrepro.engine.level_draws import NonFiniteJointError

    ctx = SimpleNamespace(temperature=1.0, target=ModelRunner(tiny_llama(vocab_size=16)))
    dead = [Beam([1], float("-inf"), 0.0), Beam([2], float("-inf"), 0.0)]
    draws = make_draws(torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteJointError, match="beam: the joint distribution"):
        beam.step(ctx, dead, torch.zeros(2, 16), beam.Params(), BeamPool(None), draws)


def test_sliding_window_models_are_refused_before_generation() -> None:
    config = MistralConfig(
        vocab_size=16,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=8,
    )
    with pytest.raises(SlidingWindowUnsupported, match="sliding_window=8"):
        ModelRunner(MistralForCausalLM(config), name="target")
    config.sliding_window = None
    ModelRunner(MistralForCausalLM(config))  # full attention: accepted


def test_draft_and_target_vocabulary_widths_must_match() -> None:
    target, draft = tiny_llama(vocab_size=16, seed=0), tiny_llama(vocab_size=20, seed=1)
    with pytest.raises(ModelError, match="draft's logits are 20 wide, the target's 16"):
        decoder_for(target, draft, "sps", 1.0)


def test_a_members_memory_peak_starts_without_the_previous_members_cache(monkeypatch) -> None:
    from specrepro.run.question_run import start_memory_peak

    model = tiny_llama(seed=5)
    runners: dict = {}
    beam = decoder_for(model, None, "beam", 1.0, runners=runners, width=4)
    vanilla = decoder_for(model, None, "vanilla", 0.0, runners=runners)
    assert beam.target is vanilla.target  # one runner per model in a timing group
    beam.generate([1, 2, 3], 6, seed=0)
    assert beam.target.cache.storage.shape[2] == 4  # beam's rows stay allocated
    events: list[str] = []
    monkeypatch.setattr(vanilla.target, "device", torch.device("cuda"))
    monkeypatch.setattr(vanilla, "release_buffers", lambda: events.append("release"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: events.append("reset"))
    start_memory_peak(vanilla)
    assert events == ["release", "reset"]
    monkeypatch.undo()
    vanilla.release_buffers()
    assert vanilla.target.cache.storage is None and vanilla.target.cache_bytes() == 0
    vanilla.generate([1, 2, 3], 6, seed=0)
    assert vanilla.target.cache.storage.shape[2] == 1
