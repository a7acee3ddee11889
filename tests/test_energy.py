"""Energy meter, power sampler and hardware record, against a fake NVML and the real no-GPU path."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from specrepro.energy import (
    SOURCE_COUNTER,
    SOURCE_SAMPLES,
    EnergyMeter,
    EnergyReading,
    PowerSampler,
    git_commit,
    hardware_info,
    trapezoid_joules,
)
from specrepro.energy import hardware as hardware_mod

NUMERIC_FIELDS = (
    "energy_j",
    "energy_net_j",
    "avg_power_w",
    "duration_s",
    "n_samples",
    "peak_power_w",
)


class FakeNVMLError(Exception):
    pass


class FakeNotSupported(FakeNVMLError):
    pass


class FakeNVML:
    """The slice of the pynvml API the meter uses, with a GPU drawing `power_w` watts.

    The energy counter integrates the current power over real elapsed time, piecewise across
    changes of `power_w`, like the driver's counter does.
    """

    NVMLError = FakeNVMLError

    def __init__(
        self,
        power_w: float = 150.0,
        counter_supported: bool = True,
        init_fails: bool = False,
        n_devices: int = 1,
        uuids: tuple[str, ...] = (),
    ) -> None:
        self._power_w = power_w
        self.counter_supported = counter_supported
        self.init_fails = init_fails
        self.n_devices = max(n_devices, len(uuids))
        self.uuids = uuids or tuple(f"GPU-{i:08x}-0000" for i in range(self.n_devices))
        self.init_calls = 0
        self.shutdown_calls = 0
        self.power_calls = 0
        self._energy_mj = 1_000_000.0  # a real counter starts far from zero
        self._since = time.perf_counter()

    @property
    def power_w(self) -> float:
        return self._power_w

    @power_w.setter
    def power_w(self, value: float) -> None:
        self._energy_mj = self._counter_now()
        self._since = time.perf_counter()
        self._power_w = value

    def _counter_now(self) -> float:
        return self._energy_mj + self._power_w * 1000.0 * (time.perf_counter() - self._since)

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_fails:
            raise FakeNVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        if index >= self.n_devices:
            raise FakeNVMLError("Invalid Argument")
        return f"gpu{index}"

    def nvmlDeviceGetCount(self) -> int:
        return self.n_devices

    def nvmlDeviceGetUUID(self, handle: str) -> str:
        return self.uuids[int(handle.removeprefix("gpu"))]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        if not self.counter_supported:
            raise FakeNotSupported("Not Supported")
        return int(self._counter_now())

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        self.power_calls += 1
        return int(self._power_w * 1000)

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"Fake GPU 80GB"  # bytes, as older pynvml returns

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040


def fake_meter(fake: FakeNVML, **kwargs: Any) -> EnergyMeter:
    meter = EnergyMeter.open(nvml=fake, **kwargs)  # type: ignore[arg-type]
    assert meter.available, meter.reason
    return meter


def assert_all_null(reading: EnergyReading) -> None:
    for name in NUMERIC_FIELDS:
        assert getattr(reading, name) is None, name
    assert reading.source is None
    assert isinstance(reading.reason, str) and reading.reason
    json.dumps(reading.to_dict())


def test_trapezoid_by_hand() -> None:
    # 0..1 s: mean 150 W -> 150 J; 1..3 s: flat 200 W -> 400 J.
    assert trapezoid_joules([(0.0, 100.0), (1.0, 200.0), (3.0, 200.0)]) == pytest.approx(550.0)
    assert trapezoid_joules([(5.0, 100.0), (5.5, 100.0)]) == pytest.approx(50.0)
    assert trapezoid_joules([]) == 0.0
    assert trapezoid_joules([(1.0, 300.0)]) == 0.0


def test_sampler_rate_and_bounds() -> None:
    sampler = PowerSampler(lambda: 100.0, sample_hz=20.0)
    sampler.start()
    time.sleep(0.5)
    samples = sampler.stop()
    span = samples[-1][0] - samples[0][0]
    assert span >= 0.5
    assert (len(samples) - 1) / span >= 10.0
    assert [t for t, _ in samples] == sorted(t for t, _ in samples)
    assert trapezoid_joules(samples) == pytest.approx(100.0 * span)
    assert sampler.stop() == samples  # second stop is a no-op


def test_sampler_survives_read_errors() -> None:
    calls = {"n": 0}

    def flaky() -> float:
        calls["n"] += 1
        if calls["n"] % 2 == 0:
            raise RuntimeError("transient")
        return 42.0

    sampler = PowerSampler(flaky, sample_hz=50.0)
    sampler.start()
    time.sleep(0.1)
    samples = sampler.stop()
    assert sampler.n_errors > 0
    assert samples and all(w == 42.0 for _, w in samples)


def test_energy_counter_window() -> None:
    fake = FakeNVML(power_w=150.0)
    with fake_meter(fake) as meter:
        assert meter.counter_supported
        assert meter.device_name == "Fake GPU 80GB"
        assert meter.driver_version == "550.54.15"
        with meter.window() as reading:
            time.sleep(0.2)
    assert reading.source == SOURCE_COUNTER
    assert reading.reason is None
    assert reading.duration_s is not None and reading.duration_s >= 0.2
    assert reading.energy_j == pytest.approx(150.0 * reading.duration_s, rel=0.1)
    assert reading.avg_power_w == pytest.approx(150.0, rel=0.1)
    assert reading.peak_power_w == pytest.approx(150.0)
    assert reading.n_samples is not None and reading.n_samples >= 2
    assert reading.energy_net_j is None  # no idle measured
    assert reading.trace is None
    assert reading.joules_per_token(10) == pytest.approx(reading.energy_j / 10)
    json.dumps(reading.to_dict())
    assert fake.shutdown_calls == 1


def test_idle_subtraction() -> None:
    fake = FakeNVML(power_w=50.0)
    with fake_meter(fake) as meter:
        assert meter.measure_idle(0.2) == pytest.approx(50.0)
        fake.power_w = 150.0
        with meter.window() as reading:
            time.sleep(0.2)
    assert reading.idle_power_w == pytest.approx(50.0)
    assert reading.duration_s is not None
    assert reading.energy_j == pytest.approx(150.0 * reading.duration_s, rel=0.1)
    assert reading.energy_net_j == pytest.approx(100.0 * reading.duration_s, rel=0.1)
    assert reading.joules_per_token(4, net=True) == pytest.approx(reading.energy_net_j / 4)


def test_window_sampler_rate_and_trace() -> None:
    fake = FakeNVML(power_w=150.0)
    with fake_meter(fake, sample_hz=20.0) as meter:
        with meter.window(keep_trace=True) as reading:
            time.sleep(0.5)
    assert reading.duration_s is not None and reading.n_samples is not None
    assert reading.n_samples / reading.duration_s >= 10.0
    assert reading.trace is not None and len(reading.trace) == reading.n_samples
    assert abs(reading.trace[0][0]) < 0.05  # relative to the window start
    assert json.loads(json.dumps(reading.to_dict()))["trace"][0][1] == pytest.approx(150.0)


def test_fallback_to_power_samples_when_counter_unsupported() -> None:
    fake = FakeNVML(power_w=150.0, counter_supported=False)
    with fake_meter(fake) as meter:
        assert not meter.counter_supported
        assert meter.counter_reason and "FakeNotSupported" in meter.counter_reason
        with meter.window() as reading:
            time.sleep(0.2)
    assert reading.source == SOURCE_SAMPLES
    assert reading.reason is None
    assert reading.duration_s is not None
    assert reading.energy_j == pytest.approx(150.0 * reading.duration_s, rel=0.1)
    assert reading.avg_power_w == pytest.approx(150.0, rel=0.1)


def test_no_gpu_on_this_machine() -> None:
    meter = EnergyMeter.open()
    if meter.available:
        meter.close()
        pytest.skip("this machine has a GPU with NVML")
    assert meter.reason and meter.reason.startswith("NVML unavailable")
    assert meter.measure_idle(0.1) is None
    with meter.window(keep_trace=True) as reading:
        pass
    assert_all_null(reading)
    assert reading.trace is None
    assert reading.joules_per_token(10) is None
    meter.close()


def test_pynvml_import_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    with EnergyMeter.open() as meter:
        assert not meter.available
        assert meter.reason and "pynvml" in meter.reason
        with meter.window() as reading:
            time.sleep(0.01)
    assert_all_null(reading)


def test_init_failure_and_missing_device() -> None:
    fake = FakeNVML(init_fails=True)
    meter = EnergyMeter.open(nvml=fake)  # type: ignore[arg-type]
    assert not meter.available and meter.reason and "Driver Not Loaded" in meter.reason
    meter.close()
    assert fake.shutdown_calls == 0  # never initialised, so nothing to shut down

    fake = FakeNVML(n_devices=1)
    meter = EnergyMeter.open(device_index=3, nvml=fake)  # type: ignore[arg-type]
    assert not meter.available and meter.reason and "no CUDA GPU" in meter.reason
    with meter.window() as reading:
        pass
    assert_all_null(reading)
    meter.close()
    assert fake.shutdown_calls == 1


def test_close_is_idempotent_and_final() -> None:
    fake = FakeNVML()
    meter = fake_meter(fake)
    with meter:
        pass
    meter.close()
    assert fake.shutdown_calls == 1
    with meter.window() as reading:
        pass
    assert_all_null(reading)
    assert meter.measure_idle(0.05) is None


def test_hardware_info_with_fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep this test fast: the torch lookup is covered by the real-machine test below.
    monkeypatch.setattr(hardware_mod, "_torch_cuda_version", lambda: "12.4")
    info = hardware_info(nvml=FakeNVML())  # type: ignore[arg-type]
    gpu = info["gpu"]
    assert gpu["name"] == "Fake GPU 80GB"
    assert gpu["driver_version"] == "550.54.15"
    assert gpu["cuda_version"] == "12.4"
    assert gpu["cuda_driver_version"] == "12.4"
    assert gpu["nvml_available"] is True and gpu["nvml_reason"] is None
    json.dumps(info)


def test_hardware_info_this_machine() -> None:
    info = hardware_info()
    for key in ("cpu_model", "cpu_count", "ram_total_bytes", "platform", "python_version"):
        assert key in info
    assert info["cpu_count"] and info["cpu_count"] >= 1
    assert info["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert set(info["packages"]) >= {"torch", "transformers", "numpy"}
    assert set(info["gpu"]) >= {
        "name",
        "driver_version",
        "cuda_version",
        "nvml_available",
        "nvml_reason",
    }
    if not info["gpu"]["nvml_available"]:
        assert info["gpu"]["nvml_reason"]
        assert info["gpu"]["name"] is None
    json.dumps(info)


def test_git_commit(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None  # not a repository

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path), *args],
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git("add", "a.txt")
    git("commit", "-q", "-m", "init")
    clean = git_commit(tmp_path)
    assert clean is not None and len(clean) == 40
    (tmp_path / "a.txt").write_text("changed")
    assert git_commit(tmp_path) == f"{clean}-dirty"


# --- which GPU is measured ---------------------------------------------------------------


def test_meter_finds_the_gpu_torch_runs_on_by_uuid() -> None:
    # Physical GPU 2 is what a job with CUDA_VISIBLE_DEVICES=2 sees as cuda:0; NVML numbers
    # physical GPUs, so index 0 would be another job's GPU. torch reports the UUID unprefixed.
    fake = FakeNVML(uuids=("GPU-aaaa-01", "GPU-bbbb-02", "GPU-cccc-03"))
    with EnergyMeter.open(nvml=fake, gpu_uuid="CCCC-03") as meter:  # type: ignore[arg-type]
        assert meter.available and meter.device_index == 2
        info = hardware_info(meter)
    assert info["gpu"]["device_index"] == 2 and info["gpu"]["uuid"] == "CCCC-03"
    with EnergyMeter.open(nvml=fake, gpu_uuid="MIG-dddd") as meter:  # type: ignore[arg-type]
        assert not meter.available and "UUID MIG-dddd" in meter.reason


def test_run_device_maps_to_its_nvml_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from specrepro.timing_group import open_energy_meter

    fake = FakeNVML(uuids=("GPU-aaaa-01", "GPU-bbbb-02"))
    monkeypatch.setitem(sys.modules, "pynvml", fake)

    class Properties:
        uuid = "bbbb-02"

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Properties())
    with open_energy_meter(torch.device("cuda:0"), 20.0) as meter:
        assert meter.available and meter.device_index == 1
    # A CPU run measures nothing, even with NVML and a GPU present.
    with open_energy_meter(torch.device("cpu"), 20.0) as meter:
        assert not meter.available
        assert meter.reason.startswith("run on device cpu")
        with meter.window() as reading:
            pass
    assert_all_null(reading)
    assert reading.reason.startswith("run on device cpu")
    assert fake.init_calls == 1  # only the CUDA run touched NVML
