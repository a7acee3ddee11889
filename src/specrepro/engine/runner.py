"""One model plus its KV cache: the runtime every decoding method drives.

Positions are explicit so that trees and forests plug in: a forward takes the new tokens, their
position ids and (optionally) a tree mask over them; the prefix already in the cache is always
fully visible. After verification a method keeps a chosen subset of cached positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel


class NonFiniteLogitsError(RuntimeError):
    """The model produced NaN or inf logits; continuing would sample garbage."""


@dataclass
class ForwardOutput:
    logits: torch.Tensor  # [N, V] float32, one row per input token
    hidden: torch.Tensor | None  # [N, H] last hidden state after the final norm, if requested


class ModelRunner:
    """A causal LM with one sequence's KV cache (batch size 1)."""

    def __init__(self, model: PreTrainedModel, name: str = "model") -> None:
        self.model = model
        self.name = name
        self.device = next(model.parameters()).device
        self.forwards = 0
        self.reset()

    def reset(self) -> None:
        self.cache = DynamicCache(config=self.model.config)
        self.forwards = 0

    @property
    def cache_len(self) -> int:
        return self.cache.get_seq_length()

    @torch.inference_mode()
    def forward(
        self,
        tokens: list[int] | torch.Tensor,
        positions: torch.Tensor | None = None,
        tree_mask: torch.Tensor | None = None,
        logits_from: int = 0,
        want_hidden: bool = False,
    ) -> ForwardOutput:
        """Append `tokens` to the cache and return logits for tokens[logits_from:].

        positions: [N] absolute position ids (default: contiguous after the cache).
        tree_mask: [N, N] bool, True where token i may attend to new token j (each node sees
        its ancestors and itself); None means plain causal.
        """
        ids = torch.as_tensor(tokens, dtype=torch.long, device=self.device).view(1, -1)
        n = ids.shape[1]
        past = self.cache_len
        if positions is None:
            positions = torch.arange(past, past + n, device=self.device)
        kwargs: dict = {}
        if tree_mask is not None:
            kwargs["attention_mask"] = self._additive_mask(tree_mask, past)
        out = self.model(
            input_ids=ids,
            position_ids=positions.view(1, -1).to(self.device),
            past_key_values=self.cache,
            use_cache=True,
            output_hidden_states=want_hidden,
            logits_to_keep=n - logits_from,
            **kwargs,
        )
        self.forwards += 1
        logits = out.logits[0].float()
        if not torch.isfinite(logits).all():
            raise NonFiniteLogitsError(
                f"{self.name}: non-finite logits (NaN/inf) at cache length {past}; "
                "check the model weights and dtype"
            )
        hidden = out.hidden_states[-1][0, logits_from:] if want_hidden else None
        return ForwardOutput(logits=logits, hidden=hidden)

    def _additive_mask(self, tree_mask: torch.Tensor, past: int) -> torch.Tensor:
        n = tree_mask.shape[0]
        dtype = self.model.dtype
        allowed = torch.ones(n, past + n, dtype=torch.bool, device=self.device)
        allowed[:, past:] = tree_mask.to(self.device)
        mask = torch.zeros(n, past + n, dtype=dtype, device=self.device)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask.view(1, 1, n, past + n)

    def crop(self, length: int) -> None:
        """Drop every cached position at index >= length."""
        excess = self.cache_len - length
        if excess > 0:
            self.cache.crop(-excess)

    def keep(self, indices: list[int] | torch.Tensor) -> None:
        """Keep only the cached positions `indices` (ascending), gathered to be contiguous."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.device)
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(-2, idx)
            layer.values = layer.values.index_select(-2, idx)

    def cache_bytes(self) -> int:
        total = 0
        for layer in self.cache.layers:
            for t in (layer.keys, layer.values):
                if t is not None and hasattr(t, "numel"):
                    total += t.numel() * t.element_size()
        return total
