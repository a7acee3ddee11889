"""What every `gpu-check` check shares: its result and the context it runs in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from specrepro.bench.gpu_check_models import (
    CheckModels,
    Family,
    Shapes,
    cast,
    check_models,
    family,
)

T = TypeVar("T")
# The configs the memory preflight plans (gpu_check_memory), from the repository root.
PAPER_CONFIGS = (
    "config/paper_ddd.yaml",
    "config/paper_dsbd.yaml",
    "config/paper_draft_design.yaml",
)
SLEEP_CYCLES = 5_000_000  # a few ms on a current GPU: longer than a draft level's host work


@dataclass
class CheckResult:
    ok: bool
    detail: str  # on a failure: what broke, named
    skipped: bool = False

    @property
    def verdict(self) -> str:
        return "SKIP" if self.skipped else "PASS" if self.ok else "FAIL"


@dataclass
class CheckContext:
    """The device and options of one `gpu-check` run, and the models its checks share (built
    once, on first use)."""

    device: torch.device
    model_path: str | None = None
    sleep_cycles: int = SLEEP_CYCLES
    shapes: Shapes = field(default_factory=Shapes)
    gpu_memory_bytes: int | None = None  # the GPU's total memory; None on the CPU
    paper_configs: tuple[str, ...] = PAPER_CONFIGS
    _built: dict = field(default_factory=dict, repr=False)

    @property
    def dtypes(self) -> tuple[torch.dtype, ...]:
        # Float16 matmuls on the CPU are slow and not what the paper configs run.
        if self.device.type == "cuda":
            return (torch.float32, torch.float16)
        return (torch.float32,)

    def cached(self, key: tuple, build: Callable[[], T]) -> T:
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def family(self, name: str, dtype: torch.dtype) -> Family:
        """The exactness checks' "llama" or "opt" family in `dtype` (gpu_check_models.family)."""
        base = self.cached(("family", name), lambda: family(name, self.shapes, self.device))
        if dtype == torch.float32:
            return base
        return self.cached(("family", name, dtype), lambda: cast(base, dtype))

    def models(self) -> CheckModels:
        """The sync and stream checks' models (gpu_check_models.check_models)."""
        return self.cached(("models",), lambda: check_models(self.device, self.model_path))


def failed(failures: list[str], shown: int = 4) -> CheckResult:
    """A FAIL naming the first `shown` failures and counting the rest."""
    more = f" (+{len(failures) - shown} more)" if len(failures) > shown else ""
    return CheckResult(False, "; ".join(failures[:shown]) + more)
