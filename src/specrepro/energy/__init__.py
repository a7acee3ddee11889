"""GPU energy measurement (NVML counter + power sampler) and environment/hardware records."""

from specrepro.energy.hardware import git_commit, hardware_info
from specrepro.energy.nvml import EnergyMeter
from specrepro.energy.readings import (
    IDLE_ACTIVE,
    IDLE_AFTER,
    IDLE_BEFORE,
    IDLE_KINDS,
    IDLE_SUBTRACTED,
    POWER_AVERAGE,
    POWER_INSTANT,
    SOURCE_COUNTER,
    SOURCE_SAMPLES,
    EnergyReading,
    GpuState,
    IdlePower,
)
from specrepro.energy.sampler import PowerSampler, Sample, trapezoid_joules

__all__ = [
    "IDLE_ACTIVE",
    "IDLE_AFTER",
    "IDLE_BEFORE",
    "IDLE_KINDS",
    "IDLE_SUBTRACTED",
    "POWER_AVERAGE",
    "POWER_INSTANT",
    "SOURCE_COUNTER",
    "SOURCE_SAMPLES",
    "EnergyMeter",
    "EnergyReading",
    "GpuState",
    "IdlePower",
    "PowerSampler",
    "Sample",
    "git_commit",
    "hardware_info",
    "trapezoid_joules",
]
