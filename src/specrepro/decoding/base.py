"""What every method shares: its inputs, its result and how methods are found."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from types import ModuleType

import torch

from specrepro.engine.runner import ModelRunner
from specrepro.engine.stopping import StopRule
from specrepro.engine.timing import StepTimer
from specrepro.planning.methods import MethodError, method_spec


@dataclass
class DecodingContext:
    """Everything one generation needs besides the prompt and the method's parameters."""

    target: ModelRunner
    stop: StopRule
    temperature: float
    generator: torch.Generator
    timer: StepTimer
    draft: ModelRunner | None = None
    head: ModelRunner | None = None  # an EAGLE draft head (models/eagle_head.py)


@dataclass
class GenerationResult:
    tokens: list[int]  # new tokens, trimmed by the stop rule
    target_forwards: int
    draft_forwards: int = 0
    accept_lengths: list[int] = field(default_factory=list)  # tokens committed per target forward
    extra: dict = field(default_factory=dict)  # method-specific per-round statistics
    # Target forwards that only read the prompt and chose one token (no draft to verify): the
    # first of accept_lengths. Tau leaves them out, as EAGLE's evaluation does
    # (docs/measurement.md).
    prefill_forwards: int = 0
    # Peak bytes of every model's live KV cache (each model at its own peak), set by the harness.
    kv_bytes_peak: int | None = None
    # Why generation stopped (engine/stopping.py STOP_REASONS), set by the harness.
    stop_reason: str | None = None

    @property
    def new_tokens(self) -> int:
        return len(self.tokens)

    @property
    def verify_forwards(self) -> int:
        return self.target_forwards - self.prefill_forwards

    @property
    def verified_tokens(self) -> int:
        """Tokens committed by verification forwards (bonus tokens included)."""
        return sum(self.accept_lengths[self.prefill_forwards :])


def commit(
    ctx: DecodingContext, generated: list[int], new: list[int], result: GenerationResult
) -> bool:
    """Append one target forward's worth of tokens under the stop rule; True when finished."""
    before = len(generated)
    kept, done = ctx.stop.trim(generated + new)
    generated[:] = kept
    result.accept_lengths.append(len(kept) - before)
    return done


def lookahead(params: object) -> int:
    """The most positions past the committed sequence that one round may write (its drafts
    under verification, or a draft model's own proposals), as the method's `Params.lookahead()`
    declares it: a static tree's depth (eagle), the most draft levels (ddd: max_levels, eagle2:
    depth), the draft length (sps, dsbd: gamma), 0 without drafts (vanilla, beam). Tree nodes
    sit at position root + depth, so depth, not tree size, is what reaches further. Declared,
    not guessed from parameter names: a method without it is refused before it runs."""
    declared = getattr(params, "lookahead", None)
    if not callable(declared):
        raise MethodError(
            f"{type(params).__module__}.Params must define lookahead() -> int: the most "
            "positions past the committed sequence one round may write (0 without drafts)"
        )
    value = declared()
    if not isinstance(value, int) or value < 0:
        raise MethodError(f"{type(params).__module__}.Params.lookahead() gave {value!r}")
    return value


def get_method(algorithm: str) -> ModuleType:
    """The method's module: one of this package's, or a dotted module path (registry.py)."""
    return importlib.import_module(method_spec(algorithm).module)


def make_params(algorithm: str, values: dict | None) -> object:
    """Build the method's Params from a config mapping, rejecting unknown keys by name."""
    module = get_method(algorithm)
    # A method may name keys it renamed, so an old config gets what the key became.
    for key, message in getattr(module, "RENAMED_KEYS", {}).items():
        if key in (values or {}):
            raise MethodError(f"{algorithm}: {key} is gone: {message} (got {key}: {values[key]!r})")
    allowed = {f.name for f in dataclasses.fields(module.Params)}
    unknown = set(values or {}) - allowed
    if unknown:
        raise MethodError(
            f"method {algorithm!r}: unknown parameter(s) {sorted(unknown)}; "
            f"allowed: {sorted(allowed) or 'none'}"
        )
    params = module.Params(**(values or {}))
    if hasattr(params, "validate"):
        params.validate()
    return params
