"""The draft family of the depth/width study: equal size by construction, at both scales."""

from __future__ import annotations

from dataclasses import replace

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from specrepro.training.family import (
    SHEARED_LLAMA_1_3B,
    WIDE_SHEARED_LLAMA_1_3B,
    Shape,
    equal_size_family,
    family_budget,
    paper_equal_size_pairs,
    paper_shapes,
    size_spread,
    widened,
)

# SmolLM2-135M's shape (the default target), written out so this test needs no model files.
SMOLLM2 = Shape(30, 576, 9, 3, 64, 1536, 49152, tie_word_embeddings=True)


def _real_count(shape: Shape) -> int:
    config = LlamaConfig(vocab_size=64, max_position_embeddings=64, **shape.config_overrides())
    model = LlamaForCausalLM(config)
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if "embed" not in name and "lm_head" not in name
    )


def test_the_counted_parameters_are_those_of_the_built_model() -> None:
    for shape in (replace(SMOLLM2, num_layers=2), *equal_size_family(SMOLLM2, [1, 3], 2)):
        assert shape.counted_parameters() == _real_count(shape)


@pytest.mark.parametrize("depths", [[1, 2, 4, 8], [1, 3, 6, 12]])
def test_the_default_family_is_of_equal_size_within_ten_percent(depths: list[int]) -> None:
    family = equal_size_family(SMOLLM2, depths, budget_layers=2)
    assert [s.num_layers for s in family] == depths
    assert size_spread(family) < 0.10
    assert all(s.hidden_size == SMOLLM2.hidden_size for s in family)  # shares the embedding
    # Depth is traded for width: fewer layers, wider layers.
    widths = [s.intermediate_size for s in family]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]
    assert all(s.num_attention_heads % s.num_key_value_heads == 0 for s in family)


def test_the_paper_scale_shapes_are_of_equal_size_within_ten_percent() -> None:
    shapes = paper_shapes()
    for a, b in paper_equal_size_pairs():
        assert size_spread([shapes[a], shapes[b]]) < 0.10
    assert size_spread([SHEARED_LLAMA_1_3B, WIDE_SHEARED_LLAMA_1_3B]) < 0.05
    paper_family = equal_size_family(SHEARED_LLAMA_1_3B, [6, 12, 24], budget_layers=24)
    assert size_spread(paper_family) < 0.10
    assert paper_family[-1] == SHEARED_LLAMA_1_3B  # its own depth gives back its own shape


@pytest.mark.parametrize(("hidden", "depths"), [(768, [1, 2, 4]), (960, [1, 2])])
def test_the_wide_family_widens_the_model_at_the_same_counted_size(hidden, depths) -> None:
    budget = family_budget(SMOLLM2, 2)
    depth_family = equal_size_family(SMOLLM2, depths, budget_layers=2)
    wide = equal_size_family(SMOLLM2, depths, budget_layers=2, hidden_size=hidden)
    # The same count for both families (non-embedding), each within 10% of the budget.
    for shape in (*depth_family, *wide):
        assert abs(shape.counted_parameters() / budget - 1) < 0.10
        assert shape.counted_parameters() == _real_count(shape)
    assert size_spread([*depth_family, *wide]) < 0.15
    for shape in wide:
        assert shape.hidden_size == hidden > SMOLLM2.hidden_size
        assert shape.vocab_size == SMOLLM2.vocab_size  # the target's logits width
        assert shape.head_dim == SMOLLM2.head_dim
        assert shape.num_attention_heads % shape.num_key_value_heads == 0
        # its own embedding is wider than the shared one, and is not counted
        assert shape.embedding_parameters() > SMOLLM2.embedding_parameters()


def test_widening_scales_heads_and_feed_forward_with_the_hidden_size() -> None:
    with pytest.raises(ValueError, match="multiple of 3"):
        widened(SMOLLM2, 640)  # 3 query heads per key/value head cannot divide 640
    wide = widened(SMOLLM2, 768)
    assert (wide.num_attention_heads, wide.num_key_value_heads) == (12, 4)
    assert wide.intermediate_size == 2048
    assert widened(SMOLLM2, 576) == SMOLLM2
    # The paper's wide 1.3B widens Sheared-LLaMA-1.3B's 2048 to 2560 with 20 heads.
    assert widened(SHEARED_LLAMA_1_3B, 2560).num_attention_heads == 20


def test_kv_bytes_count_keys_and_values_of_every_layer() -> None:
    shape = replace(SMOLLM2, num_layers=2)
    assert shape.kv_bytes_per_token(4) == 2 * 2 * 3 * 64 * 4
    deep, shallow = equal_size_family(SMOLLM2, [8, 1], budget_layers=2)
    assert shallow.kv_bytes_per_token() != deep.kv_bytes_per_token()
    # The paper's wide 1.3B halves the depth: its KV cache per token is 37.5% smaller.
    ratio = WIDE_SHEARED_LLAMA_1_3B.kv_bytes_per_token() / SHEARED_LLAMA_1_3B.kv_bytes_per_token()
    assert ratio == pytest.approx(12 * 20 / (24 * 16))
