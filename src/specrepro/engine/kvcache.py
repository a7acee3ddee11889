"""A KV cache written in place: buffers sized once per generation, no copy per forward.

transformers' `DynamicCache` concatenates every new key/value onto the whole cache (a full copy
per forward, ~1 GB at 7B with 2k tokens of context), and gathering kept positions after a
speculative round copies it all again. Here each layer owns one buffer of `capacity` positions;
a forward writes its new entries at the current length and attention reads a view of the live
prefix (so its cost follows the context, not the capacity). Keeping an accepted path moves only
the entries after the first position that changes. Exceeding the capacity grows the buffers by
doubling (one copy), so a wrong size hint costs time, never correctness.

All layers' keys and values live in one tensor, [layers, 2, rows, heads, capacity, head_dim]:
keeping an accepted path or reordering beams is then one gather for the whole model (a bounded
number of kernel launches, not four per layer), and a layer is a view of its slice.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from specrepro.engine.tree import to_device


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
    """One layer's keys and values: a view of its slice of the cache's shared storage."""

    is_sliding = False
    is_croppable = True

    def __init__(self, owner: PreallocatedCache, index: int) -> None:
        super().__init__()
        self.owner = owner
        self.index = index
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.owner.capacity

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        storage = self.owner.storage_for(self.index, key_states)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        end = self.length + n
        if end > self.owner.capacity:
            storage = self.owner.grow(end)
        storage[self.index, 0, :, :, self.length : end] = key_states
        storage[self.index, 1, :, :, self.length : end] = value_states
        self.length = end
        return self.keys, self.values

    def _live(self, kind: int) -> torch.Tensor | None:
        storage = self.owner.storage
        return None if storage is None else storage[self.index, kind, :, :, : self.length]

    @property
    def keys(self) -> torch.Tensor | None:
        return self._live(0)

    @keys.setter
    def keys(self, value: torch.Tensor | None) -> None:
        # CacheLayerMixin.__init__ assigns None; the storage is the state.
        if value is not None:
            raise AttributeError("PreallocatedLayer keys are written through update()")

    @property
    def values(self) -> torch.Tensor | None:
        return self._live(1)

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

    def reset(self) -> None:
        self.length = 0


class PreallocatedCache(Cache):
    """One PreallocatedLayer per attention layer over one storage tensor of `capacity`
    positions, allocated at the first forward (when the rows, heads, dtype and device are known).
    """

    def __init__(self, num_layers: int, capacity: int) -> None:
        self.capacity = capacity
        self.storage: torch.Tensor | None = None
        super().__init__(layers=[PreallocatedLayer(self, i) for i in range(num_layers)])

    def storage_for(self, index: int, key_states: torch.Tensor) -> torch.Tensor:
        """The storage, allocated (or reallocated for a new number of rows) when empty."""
        b, h, _, d = key_states.shape
        empty = all(layer.length == 0 for layer in self.layers)
        storage = self.storage
        if storage is None or (empty and storage.shape[2] != b):
            # A new generation may start with a different number of rows (beams).
            shape = (len(self.layers), 2, b, h, self.capacity, d)
            storage = torch.empty(shape, dtype=key_states.dtype, device=key_states.device)
            self.storage = storage
        if (storage.shape[2], storage.shape[3], storage.shape[5]) != (b, h, d):
            if storage.shape[2] != b:
                raise ValueError(
                    f"cache holds {storage.shape[2]} rows, a forward brought {b}; reorder "
                    "the rows first (select_rows)"
                )
            raise ValueError(
                f"layer {index} brings keys of {h} heads x {d}, the cache holds "
                f"{storage.shape[3]} x {storage.shape[5]}: the engine's cache needs every "
                "layer's keys and values of one shape"
            )
        return storage

    def grow(self, needed: int) -> torch.Tensor:
        """Double the capacity (at least to `needed`), copying the live entries once."""
        assert self.storage is not None
        self.capacity = max(needed, 2 * self.capacity)
        old = self.storage
        shape = (*old.shape[:4], self.capacity, old.shape[5])
        self.storage = old.new_empty(shape)
        longest = max(layer.length for layer in self.layers)
        self.storage[:, :, :, :, :longest] = old[:, :, :, :, :longest]
        return self.storage

    def truncate(self, length: int) -> None:
        for layer in self.layers:
            layer.truncate(length)

    def keep(self, start: int, tail: torch.Tensor) -> None:
        """Keep positions [0, start) and then `tail` (ascending indices >= start, a device
        tensor), contiguous, in every layer: one gather and one copy for the whole cache."""
        if tail.numel() and self.storage is not None:
            moved = self.storage.index_select(4, tail)
            self.storage[:, :, :, :, start : start + tail.numel()] = moved
        for layer in self.layers:
            layer.length = start + tail.numel()

    def select_rows(
        self,
        rows: torch.Tensor,
        start: int,
        tail: torch.Tensor,
        host_rows: list[int] | None = None,
    ) -> None:
        """Row r becomes old row rows[r]'s positions [0, start) followed by its positions
        tail[r] (ascending, >= start); every row keeps start + tail.shape[1] positions.

        This is the beam reorder (tail empty) and the forest keep (tail = an accepted path).
        With the same number of rows and `host_rows` (rows as a host list), it works in place
        and copies only the prefixes of the rows that move (a beam step often keeps most rows
        where they are); otherwise the live entries are copied into a fresh storage of the
        same capacity. Either way only positions that were written are read.
        """
        width = tail.shape[1]
        old = self.storage
        if old is not None:
            layers, _, batch, h, _, d = old.shape
            length = max(layer.length for layer in self.layers)
            picked = None
            if width:  # read before any write: a row's tail may lie where another row writes
                index = (tail - start).view(1, 1, len(rows), 1, width, 1)
                index = index.expand(layers, 2, -1, h, -1, d)
                picked = old[:, :, :, :, start:length].index_select(2, rows).gather(4, index)
            if host_rows is not None and len(host_rows) == batch:
                moved = [r for r, source in enumerate(host_rows) if source != r]
                if moved:
                    # Index tensors by pinned copies (a list index would be a blocking copy on
                    # a GPU); the sources' prefixes are read whole before any row is written.
                    sources = to_device(torch.tensor([host_rows[r] for r in moved]), old.device)
                    targets = to_device(torch.tensor(moved), old.device)
                    copied = old[:, :, :, :, :start].index_select(2, sources)
                    old[:, :, :, :, :start].index_copy_(2, targets, copied)
                new = old
            else:
                new = old.new_empty(layers, 2, len(rows), h, self.capacity, d)
                # Straight into the new storage: `new[...] = old[:, :, rows]` copies twice.
                torch.index_select(
                    old[:, :, :, :, :start], 2, rows, out=new[:, :, :, :, :start]
                )  # fmt: skip
            if picked is not None:
                new[:, :, :, :, start : start + width] = picked
            self.storage = new
        for layer in self.layers:
            layer.length = start + width

    def release(self) -> None:
        """Free the storage (the next forward allocates it again)."""
        self.storage = None
        for layer in self.layers:
            layer.length = 0

    def nbytes(self) -> int:
        """Bytes of the live entries (what a cache of exactly this context would hold)."""
        if self.storage is None:
            return 0
        per_position = 2 * self.storage[0, 0, :, :, :1].numel() * self.storage.element_size()
        return per_position * sum(layer.length for layer in self.layers)
