"""GPU energy measurement (NVML counter + power sampler) and environment/hardware records."""

from specrepro.energy.hardware import git_commit, hardware_info
from specrepro.energy.nvml import SOURCE_COUNTER, SOURCE_SAMPLES, EnergyMeter, EnergyReading
from specrepro.energy.sampler import PowerSampler, Sample, trapezoid_joules

__all__ = [
    "SOURCE_COUNTER",
    "SOURCE_SAMPLES",
    "EnergyMeter",
    "EnergyReading",
    "PowerSampler",
    "Sample",
    "git_commit",
    "hardware_info",
    "trapezoid_joules",
]
