"""The draft family of the depth/width study: equal size by construction, at both scales."""

from __future__ import annotations

from dataclasses import replace

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from specrepro.models.family import (
    SHEARED_LLAMA_1_3B,
    WIDE_SHEARED_LLAMA_1_3B,
    Shape,
    equal_size_family,
    paper_equal_size_pairs,
    paper_shapes,
    size_spread,
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
