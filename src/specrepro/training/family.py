"""Draft shapes of equal size and different depth ("Decoding Speculative Decoding";
docs/methods.md).

"Size" counts the non-embedding parameters: the decoder layers and the final norm, for every
family alike; the embedding and LM head (vocabulary x hidden size, tied or not) are reported
beside it, never counted in it. Two families are built:
- the depth family keeps the target's hidden size and shares its frozen embedding and lm_head
  (the same tensors in every member); it trades depth for the widths of each layer (attention
  heads and feed-forward size, scaled together);
- the wide family widens the hidden size itself (as the paper's wide drafts do, 2048 -> 2560):
  each member has its own embedding and LM head at that width over the target's vocabulary
  (speculative sampling needs equal logits widths), its heads and feed-forward size scaled from
  the target's layer to the wider model and then solved for the same counted size.
At our vocabulary (49152) the embedding is several times the counted size, so counting it would
leave a wider draft no layers at all; the paper's drafts (32000 x 2048-2560) are over 85%
layers, where both counts agree within a few percent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

# Feed-forward sizes are multiples of this (hardware-friendly, as in the published shapes), or of
# a sixteenth of the base's for tiny test models.
FFN_MULTIPLE = 64


@dataclass(frozen=True)
class Shape:
    """A Llama-style decoder's shape."""

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False

    @classmethod
    def of(cls, config: object) -> Shape:
        """The shape of a transformers config (LlamaConfig and its relatives)."""
        heads = config.num_attention_heads
        return cls(
            num_layers=config.num_hidden_layers,
            hidden_size=config.hidden_size,
            num_attention_heads=heads,
            num_key_value_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            intermediate_size=config.intermediate_size,
            vocab_size=config.vocab_size,
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )

    def attention_parameters(self) -> int:
        q_and_o = 2 * self.hidden_size * self.num_attention_heads * self.head_dim
        return q_and_o + 2 * self.hidden_size * self.num_key_value_heads * self.head_dim

    def layer_parameters(self) -> int:
        mlp = 3 * self.hidden_size * self.intermediate_size
        return self.attention_parameters() + mlp + 2 * self.hidden_size

    def counted_parameters(self) -> int:
        """Non-embedding parameters: the layers and the final norm."""
        return self.num_layers * self.layer_parameters() + self.hidden_size

    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def kv_bytes_per_token(self, dtype_bytes: int = 4) -> int:
        """KV-cache bytes one context token costs: keys and values of every layer."""
        return 2 * self.num_layers * self.num_key_value_heads * self.head_dim * dtype_bytes

    def config_overrides(self) -> dict:
        """The fields to set on a copy of the target's config to build this shape."""
        return {
            "num_hidden_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
        }

    def as_dict(self) -> dict:
        return asdict(self)


def head_groups(hidden_size: int, group: int, wanted: float) -> int:
    """The key/value head count nearest `wanted` (at least 1) whose query heads (x `group`)
    divide the hidden size, as transformers' configs require."""
    valid = [g for g in range(1, hidden_size // group + 1) if hidden_size % (g * group) == 0]
    if not valid:
        raise ValueError(
            f"no head count of {group} query heads per key/value head divides the hidden size "
            f"{hidden_size}: pick a multiple of {group}"
        )
    return min(valid, key=lambda g: (abs(g - wanted), g))


def equal_size_shape(base: Shape, depth: int, budget: int) -> Shape:
    """`depth` layers of the base's hidden size whose counted parameters come closest to
    `budget`: attention heads and feed-forward size scale together by the budget per layer over
    the base layer's, keeping the base's query-to-key/value head grouping (GQA)."""
    if depth < 1:
        raise ValueError(f"a draft needs at least one layer, not {depth}")
    per_layer = (budget - base.hidden_size) / depth
    scale = per_layer / base.layer_parameters()
    group = base.num_attention_heads // base.num_key_value_heads
    groups = head_groups(base.hidden_size, group, max(1, round(base.num_key_value_heads * scale)))
    shape = replace(
        base, num_layers=depth, num_attention_heads=groups * group, num_key_value_heads=groups
    )
    mlp_budget = per_layer - shape.attention_parameters() - 2 * base.hidden_size
    multiple = max(1, min(FFN_MULTIPLE, base.intermediate_size // 16))
    units = round(mlp_budget / (3 * base.hidden_size) / multiple)
    return replace(shape, intermediate_size=max(1, units) * multiple)


def widened(base: Shape, hidden_size: int) -> Shape:
    """The base's layer at another hidden size: heads (head size kept, the query-to-key/value
    grouping kept) and feed-forward size scaled with the hidden size; the vocabulary stays."""
    if hidden_size == base.hidden_size:
        return base
    ratio = hidden_size / base.hidden_size
    group = base.num_attention_heads // base.num_key_value_heads
    groups = head_groups(hidden_size, group, base.num_key_value_heads * ratio)
    multiple = max(1, min(FFN_MULTIPLE, base.intermediate_size // 16))
    ffn = max(1, round(base.intermediate_size * ratio / multiple)) * multiple
    return replace(
        base,
        hidden_size=hidden_size,
        num_attention_heads=groups * group,
        num_key_value_heads=groups,
        intermediate_size=ffn,
    )


def family_budget(base: Shape, budget_layers: int) -> int:
    """The counted size of `budget_layers` of the base's layers (and its final norm)."""
    return replace(base, num_layers=budget_layers).counted_parameters()


def equal_size_family(
    base: Shape, depths: list[int], budget_layers: int, hidden_size: int | None = None
) -> list[Shape]:
    """One shape per depth, each about as large as `budget_layers` of the base's layers; with
    `hidden_size`, at that model width (the wide family: its own embedding and LM head)."""
    budget = family_budget(base, budget_layers)
    start = widened(base, hidden_size or base.hidden_size)
    return [equal_size_shape(start, depth, budget) for depth in depths]


def size_spread(shapes: list[Shape]) -> float:
    """(largest - smallest) / smallest counted parameters."""
    counts = [s.counted_parameters() for s in shapes]
    return (max(counts) - min(counts)) / min(counts)


# The paper's draft shapes (arXiv 2402.01528, Table 1 and the released drafts), LLaMA vocabulary.
LLAMA_VOCAB = 32000
SHEARED_LLAMA_1_3B = Shape(24, 2048, 16, 16, 128, 5504, LLAMA_VOCAB)
WIDE_SHEARED_LLAMA_1_3B = Shape(12, 2560, 20, 20, 128, 9280, LLAMA_VOCAB)
LLAMA_7B_LAYER = Shape(1, 4096, 32, 32, 128, 11008, LLAMA_VOCAB)


def paper_shapes() -> dict[str, Shape]:
    """Latency profile at the paper scale: the two 1.3B drafts of equal size (24 layers against
    12 wider ones), then LLaMA-7B-shaped layers (the shape of the released wide drafts, which
    keep 7B's layer and cut its depth) at 1, 2, 4 and 8 layers."""
    shapes = {
        "sheared-1.3b (24 L)": SHEARED_LLAMA_1_3B,
        "wide-1.3b (12 L)": WIDE_SHEARED_LLAMA_1_3B,
    }
    for depth in (1, 2, 4, 8):
        shapes[f"llama-7b layers x{depth}"] = replace(LLAMA_7B_LAYER, num_layers=depth)
    return shapes


def paper_equal_size_pairs() -> list[tuple[str, str]]:
    """The members of paper_shapes() that are meant to be of equal size."""
    return [("sheared-1.3b (24 L)", "wide-1.3b (12 L)")]
