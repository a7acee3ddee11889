"""A KV cache written in place: buffers sized once per generation, no copy per forward.

transformers' `DynamicCache` concatenates every new key/value onto the whole cache (a full copy
per forward, ~1 GB at 7B with 2k tokens of context), and gathering kept positions after a
speculative round copies it all again. Here each layer owns one buffer of `capacity` positions;
a forward writes its new entries at the current length and attention reads a view of the live
prefix (so its cost follows the context, not the capacity). Keeping an accepted path moves only
the entries after the first position that changes. Exceeding the capacity grows the buffers by
doubling (one copy), so a wrong size hint costs time, never correctness.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class SlidingWindowUnsupported(ValueError):
    """The model attends through a sliding window or chunks, which this cache does not model."""


def sliding_window_layers(config: object) -> list[str]:
    """Why a model's attention is not plain full attention over the whole cache (empty if it is).

    Sliding-window and chunked layers drop old positions, so cropping and keeping positions by
    index would silently leave the cache wrong; such models are refused before generation.
    """
    text = getattr(config, "get_text_config", lambda: config)()
    reasons = []
    layer_types = getattr(text, "layer_types", None) or []
    other = sorted({t for t in layer_types if t != "full_attention"})
    if other:
        reasons.append(f"layer_types {other}")
    window = getattr(text, "sliding_window", None)
    if window is not None and getattr(text, "use_sliding_window", True) and not layer_types:
        reasons.append(f"sliding_window={window}")
    if getattr(text, "attention_chunk_size", None) is not None:
        reasons.append(f"attention_chunk_size={text.attention_chunk_size}")
    return reasons


class PreallocatedLayer(CacheLayerMixin):
    """One layer's keys and values in a [batch, heads, capacity, head_dim] buffer."""

    is_sliding = False
    is_croppable = True

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._keys = self._empty_like(key_states, self.capacity)
        self._values = self._empty_like(value_states, self.capacity)
        self.is_initialized = True

    @staticmethod
    def _empty_like(states: torch.Tensor, capacity: int) -> torch.Tensor:
        b, h, _, d = states.shape
        return torch.empty(b, h, capacity, d, dtype=states.dtype, device=states.device)

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * self.capacity)
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            new = self._empty_like(old, capacity)
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)
        self.capacity = capacity

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized or (
            self.length == 0 and key_states.shape[0] != self._keys.shape[0]
        ):
            # A new generation may start with a different number of rows (beams).
            self.lazy_initialization(key_states, value_states)
        if key_states.shape[0] != self._keys.shape[0]:
            raise ValueError(
                f"cache holds {self._keys.shape[0]} rows, a forward brought "
                f"{key_states.shape[0]}; reorder the rows first (select_rows)"
            )
        n = key_states.shape[-2]
        end = self.length + n
        if end > self.capacity:
            self._grow(end)
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        return self.keys, self.values

    @property
    def keys(self) -> torch.Tensor | None:
        return None if self._keys is None else self._keys[:, :, : self.length]

    @keys.setter
    def keys(self, value: torch.Tensor | None) -> None:
        # CacheLayerMixin.__init__ assigns None; the buffers are the state.
        if value is not None:
            raise AttributeError("PreallocatedLayer keys are written through update()")

    @property
    def values(self) -> torch.Tensor | None:
        return None if self._values is None else self._values[:, :, : self.length]

    @values.setter
    def values(self, value: torch.Tensor | None) -> None:
        if value is not None:
            raise AttributeError("PreallocatedLayer values are written through update()")

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    def crop(self, tokens_to_remove: int) -> None:
        # transformers' convention: a negative count of trailing tokens to drop.
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        self.length = max(self.length + tokens_to_remove, 0)

    def truncate(self, length: int) -> None:
        self.length = min(self.length, max(length, 0))

    def keep(self, start: int, tail: torch.Tensor) -> None:
        """Keep positions [0, start) and then `tail` (ascending indices >= start), contiguous."""
        if tail.numel():
            for buf in (self._keys, self._values):
                buf[:, :, start : start + tail.numel()] = buf.index_select(2, tail)
        self.length = start + tail.numel()

    def select_rows(self, rows: torch.Tensor, start: int, tail: torch.Tensor) -> None:
        """Row r becomes old row rows[r]'s positions [0, start) followed by its positions
        tail[r] (ascending, >= start); every row keeps start + tail.shape[1] positions.

        This is the beam reorder (tail empty) and the forest keep (tail = an accepted path).
        Only the live entries are copied, into fresh buffers of the same capacity.
        """
        if self._keys is None:
            return
        width = tail.shape[1]
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            _, h, _, d = old.shape
            new = old.new_empty(len(rows), h, self.capacity, d)
            # Straight into the new buffer: `new[...] = old[rows]` would copy twice.
            torch.index_select(old[:, :, :start], 0, rows, out=new[:, :, :start])
            if width:
                index = (tail - start).view(len(rows), 1, width, 1).expand(-1, h, -1, d)
                new[:, :, start : start + width] = old[:, :, start : self.length][rows].gather(
                    2, index
                )
            setattr(self, name, new)
        self.length = start + width

    def reset(self) -> None:
        self.length = 0

    def nbytes(self) -> int:
        """Bytes of the live entries (what a cache of exactly this context would hold)."""
        if self._keys is None:
            return 0
        per_position = self._keys[:, :, :1].numel() * self._keys.element_size()
        return 2 * per_position * self.length


class PreallocatedCache(Cache):
    """A cache of PreallocatedLayer, one per attention layer, sized by `capacity`."""

    def __init__(self, num_layers: int, capacity: int) -> None:
        super().__init__(layers=[PreallocatedLayer(capacity) for _ in range(num_layers)])

    def truncate(self, length: int) -> None:
        for layer in self.layers:
            layer.truncate(length)

    def select_rows(self, rows: torch.Tensor, start: int, tail: torch.Tensor) -> None:
        for layer in self.layers:
            layer.select_rows(rows, start, tail)

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)
