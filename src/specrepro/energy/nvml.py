"""GPU energy measurement with NVML (the `nvidia-ml-py` package, module `pynvml`).

Protocol (SPEC section 6): the energy of a timed window is the difference of the NVML total
energy counter (Volta and newer); a background power sampler runs during every window as a trace
and as the fallback when the counter is unsupported. Without NVML every energy field is None with
a reason -- never zero and never estimated. The caller synchronises CUDA around the window; this
module must not import torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any

from specrepro.energy.sampler import PowerSampler, Sample, trapezoid_joules

SOURCE_COUNTER = "nvml_energy_counter"
SOURCE_SAMPLES = "nvml_power_samples"


@dataclass
class EnergyReading:
    """Energy of one measured window. Numeric fields are None, with `reason`, when unmeasured."""

    energy_j: float | None = None
    energy_net_j: float | None = None
    avg_power_w: float | None = None
    duration_s: float | None = None
    n_samples: int | None = None
    peak_power_w: float | None = None
    idle_power_w: float | None = None
    source: str | None = None
    reason: str | None = None
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


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _as_str(value: Any) -> str:
    # Older pynvml releases return bytes for names and versions.
    return value.decode() if isinstance(value, bytes) else str(value)


def normalize_uuid(uuid: str) -> str:
    """'GPU-58e3...' (NVML) and '58e3...' (torch) name the same device."""
    text = uuid.strip().lower()
    for prefix in ("gpu-", "mig-"):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _cuda_driver_version(nvml: Any) -> str | None:
    # The newest CUDA the driver supports, which differs from torch's runtime CUDA version.
    getter = getattr(nvml, "nvmlSystemGetCudaDriverVersion", None)
    if getter is None:
        return None
    try:
        raw = int(getter())
    except Exception:
        return None
    return f"{raw // 1000}.{(raw % 1000) // 10}"


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
        self.idle_w: float | None = None
        self._nvml: Any = None
        self._handle: Any = None
        self._initialised = False
        self._closed = False
        self._lock = threading.Lock()
        self._samplers: set[PowerSampler] = set()
        if not_measured is not None:
            self.reason = not_measured
            return
        self._probe(nvml)

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
                self.reason = f"NVML unavailable: cannot import pynvml ({_describe(exc)})"
                return
        self._nvml = nvml
        # Broad excepts below are deliberate: a missing driver or GPU surfaces as many different
        # exception types across pynvml versions, and measuring must never crash a run.
        try:
            nvml.nvmlInit()
        except Exception as exc:
            self.reason = f"NVML unavailable: {_describe(exc)} (no CUDA GPU or NVIDIA driver)"
            return
        self._initialised = True
        try:
            self._handle = self._find_handle(nvml)
        except Exception as exc:
            where = f"UUID {self.gpu_uuid}" if self.gpu_uuid else f"index {self.device_index}"
            self.reason = f"no CUDA GPU at {where}: {_describe(exc)}"
            self._shutdown()
            return
        self.available = True
        try:
            self.device_name = _as_str(nvml.nvmlDeviceGetName(self._handle))
        except Exception:
            self.device_name = None
        try:
            self.driver_version = _as_str(nvml.nvmlSystemGetDriverVersion())
        except Exception:
            self.driver_version = None
        self.cuda_driver_version = _cuda_driver_version(nvml)
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.counter_supported = True
        except Exception as exc:
            # Pre-Volta GPUs: fall back to integrating the power samples.
            self.counter_reason = f"energy counter unsupported: {_describe(exc)}"

    def _find_handle(self, nvml: Any) -> Any:
        if self.gpu_uuid is None:
            return nvml.nvmlDeviceGetHandleByIndex(self.device_index)
        wanted = normalize_uuid(self.gpu_uuid)
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            if normalize_uuid(_as_str(nvml.nvmlDeviceGetUUID(handle))) == wanted:
                self.device_index = index
                return handle
        # MIG slices have their own UUIDs and no energy counter of their own.
        raise LookupError("NVML lists no such device (a MIG slice cannot be measured)")

    def _read_power_w(self) -> float:
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

    def measure_idle(self, seconds: float = 2.0) -> float | None:
        """Sample power for `seconds` while the GPU is idle; store and return the mean watts."""
        if seconds <= 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        if self._unusable_reason() is not None:
            return None
        sampler = self._new_sampler()
        sampler.start()
        try:
            time.sleep(seconds)
        finally:
            samples = self._finish_sampler(sampler)
        if not samples:
            return None
        self.idle_w = sum(w for _, w in samples) / len(samples)
        return self.idle_w

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
        reading.idle_power_w = self.idle_w
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
        if self.idle_w is not None:
            # Not clamped at zero: a negative net value is data (idle drift), not an error.
            reading.energy_net_j = reading.energy_j - self.idle_w * duration

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
