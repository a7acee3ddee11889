"""One model plus its KV cache: the runtime every decoding method drives.

Positions are explicit so that trees and forests plug in: a forward takes the new tokens, their
position ids and a mask saying what each new token sees, either among the new tokens only
(`tree_mask`, the cached prefix fully visible) or over the whole cached + new span
(`span_mask`, for trees grown level by level over a cache that holds earlier levels). After
verification a method keeps a chosen subset of cached positions.

The cache is preallocated per generation and written in place (see kvcache.py). Nothing here
reads a device value on the host during a forward: non-finite logits are recorded on the device
and raised by `ensure_finite()`, which a method calls once per round, where it reads its
decision anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from specrepro.engine.kvcache import (
    PreallocatedCache,
    SlidingWindowUnsupported,
    sliding_window_layers,
)
from specrepro.engine.packed import pack_linears
from specrepro.engine.tree import to_device

DEFAULT_CAPACITY = 1024


class NonFiniteLogitsError(RuntimeError):
    """The model produced NaN or inf logits; continuing would sample garbage."""


class CacheNotAdvancedError(RuntimeError):
    """A model call did not write its new tokens into the engine's cache: the model ignored
    the `cache=` it was given (a transformers release that takes another keyword, or a model
    class that builds its own cache), so every later forward would see no context."""


@dataclass
class ForwardOutput:
    logits: torch.Tensor  # [N - logits_from, V] float32, one row per requested token
    # ([B, N - logits_from, V] for a batch of rows)
    hidden: torch.Tensor | None  # [N, H] every new token's last hidden state (final-norm
    # output for a causal LM; an EAGLE head's predicted feature); [B, N, H] for rows


class ModelRunner:
    """A causal LM with its KV cache: one sequence, or a batch of rows (beams) of equal length.

    Rows share the cache length; `select_rows` reorders them (each beam's history follows it)
    and keeps a per-row accepted path after a forest verification.
    """

    def __init__(self, model: PreTrainedModel, name: str = "model", pack: bool = True) -> None:
        reasons = sliding_window_layers(model.config)
        if reasons:
            raise SlidingWindowUnsupported(
                f"{name} ({model.config.model_type}): attention that is not full attention over "
                f"the whole context ({'; '.join(reasons)}); the engine's cache keeps and crops "
                "positions by index, which such layers would silently break"
            )
        # Every forward of every method goes through the same prepacked weights (packed.py);
        # pack=False is for the bench that measures what packing changes.
        if pack:
            pack_linears(model)
        self.model = model
        self.name = name
        self.device = next(model.parameters()).device
        output = model.get_output_embeddings()
        # A head over a draft vocabulary says how wide its (target-vocabulary) logits are.
        self.vocab_size = int(getattr(output, "vocab_size", None) or output.weight.shape[0])
        self.num_layers = int(model.config.get_text_config().num_hidden_layers)
        self.forwards = 0
        self.cache = PreallocatedCache(self.num_layers, DEFAULT_CAPACITY)
        self.reset()

    def reset(self, capacity: int | None = None) -> None:
        """Empty the cache for a new generation; `capacity` positions are allocated up front."""
        if capacity is not None and capacity > self.cache.capacity:
            self.cache = PreallocatedCache(self.num_layers, capacity)
        self.cache.truncate(0)
        self.forwards = 0
        self.peak_cache_bytes = 0
        self._finite = torch.ones((), dtype=torch.bool, device=self.device)
        self._finite_landed: FiniteCopy | None = None
        self._checked_forwards = 0

    def release(self) -> None:
        """Free the cache's buffers (before another method's memory peak is measured)."""
        self.cache.release()
        self.peak_cache_bytes = 0

    @property
    def cache_len(self) -> int:
        return self.cache.get_seq_length()

    @property
    def max_positions(self) -> int | None:
        """The model's position limit (`max_position_embeddings`); None when it has none."""
        limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        return int(limit) if limit is not None else None

    @torch.inference_mode()
    def forward(
        self,
        tokens: list[int] | torch.Tensor,
        positions: torch.Tensor | None = None,
        tree_mask: torch.Tensor | None = None,
        span_mask: torch.Tensor | None = None,
        logits_from: int = 0,
        want_hidden: bool = False,
        features: torch.Tensor | None = None,
        hidden_layers: tuple[int, ...] | None = None,
    ) -> ForwardOutput:
        """Append `tokens` to the cache and return logits for tokens[logits_from:].

        positions: [N] absolute position ids (default: contiguous after the cache).
        tree_mask: [N, N] bool, True where new token i may attend to new token j; the cached
          prefix stays fully visible. None (and no span_mask) means plain causal.
        span_mask: [N, cache_len + N] bool over the cached and new positions together, for
          tokens that must not see every cached position (tree levels, forests).
        A 2-D `tokens` [B, N] runs B rows at once (one per cache row): positions are then
          [N] or [B, N], span_mask [N, ...] or [B, N, ...], and logits / hidden gain a
          leading B.
        logits_from == N returns no logits (an empty [0, V] tensor); hidden states, when
          wanted, cover all N new tokens.
        features: [N, H] input features, for a model that reads them (an EAGLE head).
        hidden_layers: with want_hidden, the inputs of these decoder layers concatenated
          ([N, len * H], what an EAGLE-3 head reads) instead of the final-norm hidden state.
        """
        ids = self._on_device(tokens, torch.long)
        rows = ids.dim() == 2
        ids = ids if rows else ids.view(1, -1)
        b, n = ids.shape
        if not 0 <= logits_from <= n:
            raise ValueError(f"logits_from must be in [0, {n}], got {logits_from}")
        past = self.cache_len
        if positions is None:
            positions = torch.arange(past, past + n, device=self.device)
        kwargs: dict = {} if features is None else {"features": features}
        if tree_mask is not None and span_mask is not None:
            raise ValueError("give tree_mask or span_mask, not both")
        if tree_mask is not None:
            span_mask = self._span_from_tree(tree_mask, past)
        if span_mask is not None:
            if tuple(span_mask.shape[-2:]) != (n, past + n) or span_mask.dim() > 2 + rows:
                raise ValueError(
                    f"span_mask must have shape [{n}, {past + n}]"
                    f"{' (or with a leading row dimension)' if rows else ''}, "
                    f"got {list(span_mask.shape)}"
                )
            kwargs["attention_mask"] = self._additive(span_mask)
        keep = n - logits_from
        # transformers reads logits_to_keep=0 as "all": ask for one row and slice it away.
        out = self.model(
            input_ids=ids,
            position_ids=self._on_device(positions, torch.long).expand(b, n),
            cache=self.cache,
            use_cache=True,
            output_hidden_states=want_hidden,
            logits_to_keep=max(keep, 1),
            **kwargs,
        )
        self.forwards += 1
        if self.cache_len != past + n:
            raise CacheNotAdvancedError(
                f"{self.name} ({type(self.model).__name__}): the cache holds {self.cache_len} "
                f"positions after a forward of {n} new tokens over {past}, not {past + n}: the "
                "model did not use the engine's cache (transformers >= 5.24 takes it as "
                "`cache=`; see specrepro.compat)"
            )
        # The cache is at its largest right after a forward (before a crop or keep).
        self.peak_cache_bytes = max(self.peak_cache_bytes, self.cache.nbytes())
        logits = out.logits[:, out.logits.shape[1] - keep :].float()
        # Recorded on the device; read by ensure_finite() once per round, not per forward.
        # A vocabulary-subset head (models/vocab_subset.py) gives -inf outside its subset, a
        # valid zero probability. The row maximum is NaN if the row holds a NaN (max propagates
        # it), +inf if it holds +inf and -inf if the row has no finite logit: one reduction
        # still catches all three.
        if keep:
            self._finite &= torch.isfinite(logits.amax(dim=-1)).all()
            if self.device.type == "cuda":
                self._finite_landed = FiniteCopy.start(self._finite, self._finite_landed)
        hidden = None
        if want_hidden:
            # hidden_states[i] is decoder layer i's input (0: the embeddings); the last entry is
            # the final-norm output.
            states = out.hidden_states
            hidden = (
                states[-1]
                if hidden_layers is None
                else torch.cat([states[i] for i in hidden_layers], dim=-1)
            )
        if not rows:
            logits, hidden = logits[0], None if hidden is None else hidden[0]
        return ForwardOutput(logits=logits, hidden=hidden)

    def ensure_finite(self) -> None:
        """Raise NonFiniteLogitsError if any forward since the last check gave NaN/inf logits.

        Methods call it once per round, before committing that round's tokens. On a GPU it
        reads the flag's pinned copy, queued after the round's last forward: the method's own
        read of its decision has waited for the stream, so the copy has landed and this costs no
        sync. On the CPU it is one host read.
        """
        landed = self._finite_landed
        finite = landed.value() if landed is not None else bool(self._finite)
        if not finite:
            raise NonFiniteLogitsError(
                f"{self.name}: non-finite logits (NaN/inf) in forward "
                f"{self._checked_forwards + 1}..{self.forwards} of this generation (cache length "
                f"{self.cache_len}); check the model weights and dtype"
            )
        self._checked_forwards = self.forwards

    def _span_from_tree(self, tree_mask: torch.Tensor, past: int) -> torch.Tensor:
        n = tree_mask.shape[0]
        span = torch.ones(n, past + n, dtype=torch.bool, device=self.device)
        span[:, past:] = self._on_device(tree_mask, torch.bool)
        return span

    def _on_device(self, values: list | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`values` as a tensor on this runner's device, copied without a host sync (pinned
        and non-blocking on a GPU) when they come from the host."""
        if isinstance(values, torch.Tensor) and values.device == self.device:
            return values.to(dtype)
        host = values if isinstance(values, torch.Tensor) else torch.tensor(values)
        return to_device(host.to(dtype), self.device)

    def _additive(self, span_mask: torch.Tensor) -> torch.Tensor:
        n, width = span_mask.shape[-2:]
        dtype = self.model.dtype
        mask = torch.zeros(span_mask.shape, dtype=dtype, device=self.device)
        mask.masked_fill_(~self._on_device(span_mask, torch.bool), torch.finfo(dtype).min)
        return mask.view(-1, 1, n, width)

    def crop(self, length: int) -> None:
        """Drop every cached position at index >= length."""
        self.cache.truncate(length)

    @torch.inference_mode()
    def keep(self, indices: list[int] | torch.Tensor) -> None:
        """Keep only the cached positions `indices` (ascending), gathered to be contiguous.

        Only the entries after the first position that moves are copied.
        """
        if isinstance(indices, torch.Tensor):
            indices = indices.tolist()
        start = 0
        while start < len(indices) and indices[start] == start:
            start += 1
        self.cache.keep(start, self._on_device(indices[start:], torch.long))

    @torch.inference_mode()
    def select_rows(
        self,
        rows: list[int] | torch.Tensor,
        prefix: int | None = None,
        tail: list[list[int]] | torch.Tensor | None = None,
    ) -> None:
        """Reorder the cache rows: new row r is old row rows[r] (a beam's history follows it).

        With `prefix` and `tail` ([R, t] ascending cache positions >= prefix), row r keeps
        old row rows[r]'s first `prefix` positions and then its positions tail[r]: the
        accepted path of a forest verification.
        """
        # Which rows stay in place is known on the host only from a host list (reading a
        # device tensor would be a sync): the cache then copies just the rows that move.
        host_rows = rows if isinstance(rows, list) else None
        rows = self._on_device(rows, torch.long)
        if tail is None:
            tail = torch.empty(len(rows), 0, dtype=torch.long, device=self.device)
        tail = self._on_device(tail, torch.long).view(len(rows), -1)
        if prefix is None:
            if tail.numel():
                raise ValueError("select_rows: a tail needs the prefix length it follows")
            prefix = self.cache_len
        self.cache.select_rows(rows, prefix, tail, host_rows)

    def cache_bytes(self) -> int:
        """Bytes held by the live cache entries (not the preallocated headroom)."""
        return self.cache.nbytes()


class FiniteCopy:
    """The finite flag's copy in pinned host memory, queued on the stream after a forward, with
    an event recorded after it."""

    def __init__(self, host: torch.Tensor, event: torch.cuda.Event) -> None:
        self.host = host
        self.event = event

    @classmethod
    def start(cls, flag: torch.Tensor, previous: FiniteCopy | None) -> FiniteCopy:
        # The flag only ever goes from True to False, so the newest copy is the one to read and
        # one buffer serves every forward.
        host = (
            previous.host
            if previous is not None
            else torch.ones((), dtype=torch.bool, pin_memory=True)
        )
        host.copy_(flag, non_blocking=True)
        event = previous.event if previous is not None else torch.cuda.Event()
        event.record()
        return cls(host, event)

    def value(self) -> bool:
        if not self.event.query():
            # Nothing read the device since the forward: wait for the copy (a sync).
            self.event.synchronize()
        return bool(self.host)
