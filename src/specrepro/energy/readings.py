"""What the energy meter records: a window's reading, an idle power, the GPU's state, and the
names of their sources and kinds. Plain data: no NVML, no torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SOURCE_COUNTER = "nvml_energy_counter"
SOURCE_SAMPLES = "nvml_power_samples"

# Where the sampler's watts come from.
POWER_INSTANT = "nvml_field_power_instant"  # nvmlDeviceGetFieldValues(NVML_FI_DEV_POWER_INSTANT)
POWER_AVERAGE = "nvml_power_usage"  # nvmlDeviceGetPowerUsage: a 1 s average since Ampere

# The idle powers of a timing group: at rest before it, right after warm work, at rest after it.
IDLE_BEFORE = "idle_before"
IDLE_ACTIVE = "active_idle"
IDLE_AFTER = "idle_after"
IDLE_KINDS = (IDLE_BEFORE, IDLE_ACTIVE, IDLE_AFTER)
# A CPU-bound step of a run leaves the GPU idle at the clocks the work raised, so that is the
# idle a run's net energy leaves out; the deep idle before warm-up would overstate the net.
IDLE_SUBTRACTED = IDLE_ACTIVE

# What a record says of a measure taken later (a timing group completes its metadata when it
# finishes) or never.
NOT_YET = "not measured when this was recorded"


@dataclass
class EnergyReading:
    """Energy of one measured window. Numeric fields are None, with `reason`, when unmeasured."""

    energy_j: float | None = None
    energy_net_j: float | None = None
    avg_power_w: float | None = None
    duration_s: float | None = None
    n_samples: int | None = None
    peak_power_w: float | None = None
    # The idle power subtracted for energy_net_j, and which idle it is (IDLE_SUBTRACTED).
    idle_power_w: float | None = None
    idle_subtracted: str | None = None
    source: str | None = None
    power_source: str | None = None
    reason: str | None = None
    # Why energy_net_j is None while energy_j is measured.
    net_reason: str | None = None
    # (seconds since window start, watts); only filled when the window asked for it.
    trace: list[tuple[float, float]] | None = None

    def joules_per_token(self, n_tokens: int, net: bool = False) -> float | None:
        energy = self.energy_net_j if net else self.energy_j
        if energy is None or n_tokens <= 0:
            return None
        return energy / n_tokens

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.trace is not None:
            data["trace"] = [[t, w] for t, w in self.trace]
        return data


@dataclass
class IdlePower:
    """Mean power of the idle GPU over a while. A None field has its reason in `reasons`."""

    kind: str
    power_w: float | None = None
    duration_s: float | None = None
    n_samples: int | None = None
    power_source: str | None = None
    # The SM clock when the idle began and ended: shows whether the clocks were still raised.
    sm_clock_start_mhz: int | None = None
    sm_clock_end_mhz: int | None = None
    reasons: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def missing(cls, kind: str, reason: str) -> IdlePower:
        fields = ("power_w", "duration_s", "n_samples", "power_source")
        clocks = ("sm_clock_start_mhz", "sm_clock_end_mhz")
        return cls(kind, reasons=dict.fromkeys(fields + clocks, reason))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class GpuState:
    """What the GPU reports at one moment. A None field has its reason in `reasons`."""

    name: str | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    temperature_c: int | None = None
    reasons: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def missing(cls, reason: str) -> GpuState:
        names = [f.name for f in dataclasses.fields(cls) if f.name != "reasons"]
        return cls(reasons=dict.fromkeys(names, reason))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
