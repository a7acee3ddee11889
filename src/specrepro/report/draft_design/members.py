"""The draft-design study's drafts: each draft's pair, role and quality record (shape, counted
size, held-out perplexity, task accuracy), the figures derived from its shape, and the order
the report lists drafts in."""

from __future__ import annotations

from dataclasses import dataclass

# The task score a dataset's accuracy is read as (the draft alone), in the order reported.
ACCURACY_METRIC = {"squad": "f1", "spider": "exec_match"}
ROLE_ORDER = {"existing": 0, "depth": 1, "wide": 2, "other": 3}


@dataclass(frozen=True)
class Member:
    """One draft of the study: the pair that runs it, its quality record (the `draft-quality`
    JSON: shape, counted size, held-out perplexity and agreement, task accuracy, training) and
    its role (existing, depth, wide, other)."""

    pair: str
    draft: str
    quality: dict
    role: str = "existing"

    @property
    def shape(self) -> dict:
        return self.quality["shape"]

    @property
    def depth(self) -> int:
        return int(self.shape["num_layers"])

    @property
    def hidden(self) -> int:
        return int(self.shape.get("hidden_size", 0))

    def kv_bytes_per_token(self, dtype_bytes: int = 4) -> int:
        s = self.shape
        heads = s.get("num_key_value_heads") or s.get("num_attention_heads") or 0
        head_dim = s.get("head_dim") or (s.get("hidden_size", 0) // max(1, heads))
        return 2 * self.depth * heads * head_dim * dtype_bytes

    def embedding_parameters(self) -> int:
        s = self.shape
        tied = s.get("tie_word_embeddings", False)
        return int(s.get("vocab_size", 0) * s.get("hidden_size", 0) * (1 if tied else 2))

    def accuracy(self, dataset: str) -> dict:
        return (self.quality.get("accuracy") or {}).get(dataset) or {}


def order_members(members: list[Member]) -> list[Member]:
    """Existing draft first, then the depth, wide and other families, narrow and shallow first."""
    return sorted(members, key=lambda m: (ROLE_ORDER.get(m.role, 9), m.hidden, m.depth, m.draft))
