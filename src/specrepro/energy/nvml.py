"""GPU energy measurement with NVML (the `nvidia-ml-py` package, module `pynvml`).

Protocol (docs/measurement.md#energy): the energy of a timed window is the difference of the NVML
total energy counter (Volta and newer); a background power sampler runs during every window as a
trace and as the fallback when the counter is unsupported. All of it is the GPU board's energy, not
the whole machine's. The sampler reads NVML's instantaneous power field where the driver has it:
nvmlDeviceGetPowerUsage is a 1 s average on Ampere and newer GPUs, which smooths traces and peaks.
Net energy subtracts the active idle power (the GPU idle right after warm work, clocks still
raised), not the deep idle of a GPU at rest. Without NVML every energy field is None with a reason
-- never zero and never estimated. The caller synchronises CUDA around the window; this module must
not import torch.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType, TracebackType
from typing import Any

from specrepro.energy.nvml_values import (
    VALUE_MEMBERS,
    as_str,
    cuda_driver_version,
    describe,
    normalize_uuid,
)
from specrepro.energy.readings import (
    IDLE_BEFORE,
    IDLE_KINDS,
    IDLE_SUBTRACTED,
    NOT_YET,
    POWER_AVERAGE,
    POWER_INSTANT,
    SOURCE_COUNTER,
    SOURCE_SAMPLES,
    EnergyReading,
    GpuState,
    IdlePower,
)
from specrepro.energy.sampler import PowerSampler, Sample, trapezoid_joules


class EnergyMeter:
    """Measures GPU energy over windows of code on one device.

    Construction never raises: when NVML cannot be loaded or initialised, or the device is
    missing, the meter has `available = False` and `reason` says why, and its windows yield
    readings whose numeric fields are all None.
    """

    def __init__(
        self,
        device_index: int = 0,
        sample_hz: float = 20.0,
        nvml: ModuleType | None = None,
        gpu_uuid: str | None = None,
        not_measured: str | None = None,
    ) -> None:
        if sample_hz <= 0:
            raise ValueError(f"sample_hz must be positive, got {sample_hz}")
        self.device_index = device_index
        self.gpu_uuid = gpu_uuid
        self.sample_hz = sample_hz
        self.available = False
        self.reason: str | None = None
        self.device_name: str | None = None
        self.driver_version: str | None = None
        self.cuda_driver_version: str | None = None
        self.counter_supported = False
        self.counter_reason: str | None = None
        self.power_source: str | None = None
        self.power_source_reason: str | None = None
        self.idles: dict[str, IdlePower] = {}
        self._nvml: Any = None
        self._handle: Any = None
        self._initialised = False
        self._closed = False
        self._lock = threading.Lock()
        self._samplers: set[PowerSampler] = set()
        if not_measured is not None:
            self.reason = not_measured
        else:
            self._probe(nvml)
        if not self.available:
            self.power_source_reason = self.reason

    @classmethod
    def open(
        cls,
        device_index: int = 0,
        sample_hz: float = 20.0,
        nvml: ModuleType | None = None,
        gpu_uuid: str | None = None,
    ) -> EnergyMeter:
        """Preferred constructor. A missing NVML, driver or GPU never raises: check `available`
        and `reason`. Only a caller bug (sample_hz <= 0) raises ValueError.

        With `gpu_uuid` (what torch reports for the device it runs on) the meter measures the
        NVML device of that UUID: NVML numbers physical GPUs and ignores CUDA_VISIBLE_DEVICES,
        so an index can name another job's GPU. Without it, `device_index` is used.
        """
        return cls(device_index=device_index, sample_hz=sample_hz, nvml=nvml, gpu_uuid=gpu_uuid)

    @classmethod
    def not_measured(cls, reason: str) -> EnergyMeter:
        """A meter that measures nothing (the run is not on a GPU); its readings carry `reason`."""
        return cls(not_measured=reason)

    def _probe(self, nvml: ModuleType | None) -> None:
        if nvml is None:
            try:
                nvml = importlib.import_module("pynvml")
            except Exception as exc:  # ImportError, or OSError from a broken install
                self.reason = f"NVML unavailable: cannot import pynvml ({describe(exc)})"
                return
        self._nvml = nvml
        # Broad excepts below are deliberate: a missing driver or GPU surfaces as many different
        # exception types across pynvml versions, and measuring must never crash a run.
        try:
            nvml.nvmlInit()
        except Exception as exc:
            self.reason = f"NVML unavailable: {describe(exc)} (no CUDA GPU or NVIDIA driver)"
            return
        self._initialised = True
        try:
            self._handle = self._find_handle(nvml)
        except Exception as exc:
            where = f"UUID {self.gpu_uuid}" if self.gpu_uuid else f"index {self.device_index}"
            self.reason = f"no CUDA GPU at {where}: {describe(exc)}"
            self._shutdown()
            return
        self.available = True
        try:
            self.device_name = as_str(nvml.nvmlDeviceGetName(self._handle))
        except Exception:
            self.device_name = None
        try:
            self.driver_version = as_str(nvml.nvmlSystemGetDriverVersion())
        except Exception:
            self.driver_version = None
        self.cuda_driver_version = cuda_driver_version(nvml)
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.counter_supported = True
        except Exception as exc:
            # Pre-Volta GPUs: fall back to integrating the power samples.
            self.counter_reason = f"energy counter unsupported: {describe(exc)}"
        try:
            self._read_instant_w()
            self.power_source = POWER_INSTANT
        except Exception as exc:
            self.power_source = POWER_AVERAGE
            self.power_source_reason = (
                f"instantaneous power field unavailable ({describe(exc)}): samples are "
                "nvmlDeviceGetPowerUsage, a 1 s average on Ampere and newer GPUs"
            )

    def _find_handle(self, nvml: Any) -> Any:
        if self.gpu_uuid is None:
            return nvml.nvmlDeviceGetHandleByIndex(self.device_index)
        wanted = normalize_uuid(self.gpu_uuid)
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            if normalize_uuid(as_str(nvml.nvmlDeviceGetUUID(handle))) == wanted:
                self.device_index = index
                return handle
        # MIG slices have their own UUIDs and no energy counter of their own.
        raise LookupError("NVML lists no such device (a MIG slice cannot be measured)")

    def _read_instant_w(self) -> float:
        # Field scope 0 (NVML_POWER_SCOPE_GPU): the board power nvmlDeviceGetPowerUsage reports,
        # undelayed by its 1 s averaging.
        nvml = self._nvml
        entry = nvml.nvmlDeviceGetFieldValues(self._handle, [nvml.NVML_FI_DEV_POWER_INSTANT])[0]
        if entry.nvmlReturn != nvml.NVML_SUCCESS:
            # An unsupported field fails in its own entry, not in the call.
            raise RuntimeError(f"NVML_FI_DEV_POWER_INSTANT: NVML error {entry.nvmlReturn}")
        return float(getattr(entry.value, VALUE_MEMBERS[entry.valueType])) / 1000.0

    def _read_power_w(self) -> float:
        if self.power_source == POWER_INSTANT:
            return self._read_instant_w()
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0

    def _read_energy_j(self) -> float | None:
        try:
            return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0
        except Exception:
            return None

    def _new_sampler(self) -> PowerSampler:
        sampler = PowerSampler(self._read_power_w, self.sample_hz)
        with self._lock:
            self._samplers.add(sampler)
        return sampler

    def _finish_sampler(self, sampler: PowerSampler) -> list[Sample]:
        samples = sampler.stop()
        with self._lock:
            self._samplers.discard(sampler)
        return samples

    def _unusable_reason(self) -> str | None:
        if self._closed:
            return "energy meter is closed"
        if not self.available:
            return self.reason or "NVML unavailable"
        return None

    def measure_idle(self, seconds: float = 2.0, kind: str = IDLE_BEFORE) -> float | None:
        """Sample power for `seconds` while the GPU is idle; store it as idle `kind` (one of
        IDLE_KINDS) and return the mean watts. Net energy subtracts the IDLE_SUBTRACTED one."""
        if seconds <= 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        if kind not in IDLE_KINDS:
            raise ValueError(f"idle kind must be one of {IDLE_KINDS}, got {kind!r}")
        if self._unusable_reason() is not None:
            return None
        start_clock, start_reason = self._query(self._sm_clock)
        sampler = self._new_sampler()
        sampler.start()
        t0 = time.perf_counter()
        try:
            time.sleep(seconds)
        finally:
            samples = self._finish_sampler(sampler)
            duration = time.perf_counter() - t0
        end_clock, end_reason = self._query(self._sm_clock)
        idle = IdlePower(kind, duration_s=duration, n_samples=len(samples))
        idle.sm_clock_start_mhz, idle.sm_clock_end_mhz = start_clock, end_clock
        reasons = {"sm_clock_start_mhz": start_reason, "sm_clock_end_mhz": end_reason}
        if samples:
            idle.power_w = sum(w for _, w in samples) / len(samples)
            idle.power_source = self.power_source
        else:
            reasons["power_w"] = f"no power sample in {duration:.2f} s of idle"
            reasons["power_source"] = reasons["power_w"]
        idle.reasons = {name: why for name, why in reasons.items() if why is not None}
        self.idles[kind] = idle
        return idle.power_w

    def idle(self, kind: str) -> IdlePower:
        """Idle `kind` as measured, or all None with the reason it is not."""
        if kind in self.idles:
            return self.idles[kind]
        unusable = self._unusable_reason()
        if unusable is not None:
            return IdlePower.missing(kind, unusable)
        return IdlePower.missing(kind, NOT_YET)

    def _sm_clock(self) -> int:
        return int(self._nvml.nvmlDeviceGetClockInfo(self._handle, self._nvml.NVML_CLOCK_SM))

    @staticmethod
    def _query(read: Callable[[], Any]) -> tuple[Any, str | None]:
        # Any NVML query may be missing from the binding or unsupported by the driver or GPU:
        # that is a None with its reason, never a crash and never a guess.
        try:
            return read(), None
        except Exception as exc:
            return None, describe(exc)

    def gpu_state(self) -> GpuState:
        """The GPU's name, enforced power limit, clocks (now and max) and temperature now."""
        unusable = self._unusable_reason()
        if unusable is not None:
            return GpuState.missing(unusable)
        nvml, handle = self._nvml, self._handle
        reads: dict[str, Callable[[], Any]] = {
            "name": lambda: as_str(nvml.nvmlDeviceGetName(handle)),
            "power_limit_w": lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
            "sm_clock_mhz": self._sm_clock,
            "mem_clock_mhz": lambda: int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
            "sm_clock_max_mhz": lambda: int(
                nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)
            ),
            "mem_clock_max_mhz": lambda: int(
                nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_MEM)
            ),
            "temperature_c": lambda: int(
                nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
            ),
        }
        state = GpuState()
        for name, read in reads.items():
            value, reason = self._query(read)
            setattr(state, name, value)
            if reason is not None:
                state.reasons[name] = reason
        return state

    def group_record(self, gpu_start: GpuState, gpu_end: GpuState | None = None) -> dict[str, Any]:
        """A timing group's energy facts for its metadata: the three idle powers, which one net
        energy subtracts, the power source, and the GPU's state at the group's start and end
        (None: not read yet)."""
        if gpu_end is None:
            gpu_end = GpuState.missing(self._unusable_reason() or NOT_YET)
        return {
            "net_subtracts": IDLE_SUBTRACTED,
            "power_source": self.power_source,
            "power_source_reason": self.power_source_reason,
            **{kind: self.idle(kind).to_dict() for kind in IDLE_KINDS},
            "gpu_start": gpu_start.to_dict(),
            "gpu_end": gpu_end.to_dict(),
        }

    @contextmanager
    def window(self, keep_trace: bool = False) -> Iterator[EnergyReading]:
        """Measure the enclosed block; the yielded reading is filled in when the block exits."""
        reading = EnergyReading()
        unusable = self._unusable_reason()
        if unusable is not None:
            reading.reason = unusable
            yield reading
            return

        sampler = self._new_sampler()
        e0 = self._read_energy_j() if self.counter_supported else None
        sampler.start()
        t0 = time.perf_counter()
        try:
            yield reading
        finally:
            t1 = time.perf_counter()
            samples = self._finish_sampler(sampler)
            e1 = self._read_energy_j() if e0 is not None else None
            self._fill(reading, t0, t1, e0, e1, samples, keep_trace)

    def _fill(
        self,
        reading: EnergyReading,
        t0: float,
        t1: float,
        e0: float | None,
        e1: float | None,
        samples: list[Sample],
        keep_trace: bool,
    ) -> None:
        duration = t1 - t0
        reading.duration_s = duration
        reading.n_samples = len(samples)
        reading.peak_power_w = max((w for _, w in samples), default=None)
        reading.power_source = self.power_source
        idle = self.idle(IDLE_SUBTRACTED)
        reading.idle_power_w = idle.power_w
        if idle.power_w is not None:
            reading.idle_subtracted = IDLE_SUBTRACTED
        if keep_trace:
            reading.trace = [(t - t0, w) for t, w in samples]

        if e0 is not None and e1 is not None and e1 >= e0:
            reading.energy_j = e1 - e0
            reading.source = SOURCE_COUNTER
        elif len(samples) >= 2:
            reading.energy_j = trapezoid_joules(samples)
            reading.source = SOURCE_SAMPLES
        else:
            reading.reason = "no usable energy counter reading and fewer than 2 power samples"
            return

        if duration > 0:
            reading.avg_power_w = reading.energy_j / duration
        if idle.power_w is None:
            reading.net_reason = (
                f"no {IDLE_SUBTRACTED} power to subtract: {idle.reasons['power_w']}"
            )
        else:
            # Not clamped at zero: a negative net value is data (idle drift), not an error.
            reading.energy_net_j = reading.energy_j - idle.power_w * duration

    def close(self) -> None:
        """Stop running samplers and shut NVML down; idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            samplers = list(self._samplers)
            self._samplers.clear()
        for sampler in samplers:
            sampler.stop()
        self._shutdown()

    def _shutdown(self) -> None:
        if not self._initialised:
            return
        self._initialised = False
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass  # Nothing useful to do about a failed shutdown at teardown.

    def __enter__(self) -> EnergyMeter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
