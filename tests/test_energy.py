"""Energy meter, power sampler and hardware record, against a fake NVML and the real no-GPU path."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from specrepro.energy import (
    IDLE_ACTIVE,
    IDLE_AFTER,
    IDLE_BEFORE,
    POWER_AVERAGE,
    POWER_INSTANT,
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
from tests.conftest import write_prompts, write_tiny_config

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


class FakeField:
    """One entry of nvmlDeviceGetFieldValues' answer, shaped like pynvml's c_nvmlFieldValue_t."""

    def __init__(self, field_id: int, milliwatts: int, nvml_return: int) -> None:
        self.fieldId = field_id
        self.scopeId = 0
        self.nvmlReturn = nvml_return
        self.valueType = 1  # NVML_VALUE_TYPE_UNSIGNED_INT, as the driver gives power
        self.value = type("Value", (), {"uiVal": milliwatts})()


class FakeNVML:
    """The slice of the pynvml API the meter uses, with a GPU drawing `power_w` watts.

    The energy counter integrates the current power over real elapsed time, piecewise across
    changes of `power_w`, like the driver's counter does. The instantaneous power field reads
    `power_w`; nvmlDeviceGetPowerUsage reads `average_w` (its 1 s average) when set. `instant`
    is how the field behaves: "ok", "raises" (the call fails), "entry" (the entry carries
    NVML_ERROR_NOT_SUPPORTED, as a driver without the field answers). Calls named in `fails`
    raise Not Supported; names in `missing` do not exist (an older pynvml).
    """

    NVMLError = FakeNVMLError
    NVML_SUCCESS = 0
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    def __init__(
        self,
        power_w: float = 150.0,
        counter_supported: bool = True,
        init_fails: bool = False,
        n_devices: int = 1,
        uuids: tuple[str, ...] = (),
        instant: str = "ok",
        average_w: float | None = None,
        fails: tuple[str, ...] = (),
        missing: tuple[str, ...] = (),
    ) -> None:
        self.missing = set(missing)
        self._power_w = power_w
        self.average_w = average_w
        self.instant = instant
        self.fails = set(fails)
        self.sm_clock_mhz = 1980
        self.counter_supported = counter_supported
        self.init_fails = init_fails
        self.n_devices = max(n_devices, len(uuids))
        self.uuids = uuids or tuple(f"GPU-{i:08x}-0000" for i in range(self.n_devices))
        self.init_calls = 0
        self.shutdown_calls = 0
        self.power_calls = 0
        self.field_calls = 0
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
        return int((self._power_w if self.average_w is None else self.average_w) * 1000)

    def nvmlDeviceGetFieldValues(self, handle: str, field_ids: list[int]) -> list[FakeField]:
        self.field_calls += 1
        if self.instant == "raises":
            raise FakeNVMLError("Function Not Found")
        ok = self.instant == "ok"
        code = self.NVML_SUCCESS if ok else self.NVML_ERROR_NOT_SUPPORTED
        milliwatts = int(self._power_w * 1000) if ok else 0
        return [FakeField(field_id, milliwatts, code) for field_id in field_ids]

    def __getattribute__(self, name: str) -> Any:
        # An older pynvml or driver lacks some names altogether.
        if name in object.__getattribute__(self, "__dict__").get("missing", ()):
            raise AttributeError(f"module 'pynvml' has no attribute {name!r}")
        return object.__getattribute__(self, name)

    def _check(self, call: str) -> None:
        if call in self.fails:
            raise FakeNotSupported("Not Supported")

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: str) -> int:
        self._check("nvmlDeviceGetEnforcedPowerLimit")
        return 700_000  # mW

    def nvmlDeviceGetClockInfo(self, handle: str, clock: int) -> int:
        self._check("nvmlDeviceGetClockInfo")
        return self.sm_clock_mhz if clock == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetMaxClockInfo(self, handle: str, clock: int) -> int:
        self._check("nvmlDeviceGetMaxClockInfo")
        return 1980 if clock == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetTemperature(self, handle: str, sensor: int) -> int:
        self._check("nvmlDeviceGetTemperature")
        assert sensor == self.NVML_TEMPERATURE_GPU
        return 41

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        self._check("nvmlDeviceGetName")
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


def test_idles_recorded_and_net_subtracts_the_active_idle() -> None:
    # Deep idle at rest 50 W, 80 W idle with the clocks still raised, 60 W at rest after.
    fake = FakeNVML(power_w=50.0)
    with fake_meter(fake) as meter:
        fake.sm_clock_mhz = 345
        assert meter.measure_idle(0.2) == pytest.approx(50.0)  # IDLE_BEFORE by default
        fake.power_w, fake.sm_clock_mhz = 80.0, 1980
        assert meter.measure_idle(0.2, IDLE_ACTIVE) == pytest.approx(80.0)
        fake.power_w = 150.0
        with meter.window() as reading:
            time.sleep(0.2)
        fake.power_w, fake.sm_clock_mhz = 60.0, 345
        assert meter.measure_idle(0.2, IDLE_AFTER) == pytest.approx(60.0)
        group = meter.group_record(meter.gpu_state(), meter.gpu_state())
    assert reading.idle_subtracted == IDLE_ACTIVE == "active_idle"
    assert reading.idle_power_w == pytest.approx(80.0)
    assert reading.net_reason is None
    assert reading.duration_s is not None
    assert reading.energy_j == pytest.approx(150.0 * reading.duration_s, rel=0.1)
    # 150 - 80 W, not 150 - 50 W: the active idle is subtracted, not the deep one.
    assert reading.energy_net_j == pytest.approx(70.0 * reading.duration_s, rel=0.1)
    assert reading.joules_per_token(4, net=True) == pytest.approx(reading.energy_net_j / 4)
    assert reading.to_dict()["idle_subtracted"] == "active_idle"

    assert group["net_subtracts"] == "active_idle"
    watts = {kind: group[kind]["power_w"] for kind in (IDLE_BEFORE, IDLE_ACTIVE, IDLE_AFTER)}
    assert watts == pytest.approx({"idle_before": 50.0, "active_idle": 80.0, "idle_after": 60.0})
    for kind in (IDLE_BEFORE, IDLE_ACTIVE, IDLE_AFTER):
        assert group[kind]["kind"] == kind and group[kind]["reasons"] == {}
        assert group[kind]["duration_s"] >= 0.2 and group[kind]["n_samples"] >= 2
        assert group[kind]["power_source"] == POWER_INSTANT
    assert group[IDLE_BEFORE]["sm_clock_start_mhz"] == 345
    assert group[IDLE_ACTIVE]["sm_clock_start_mhz"] == 1980
    json.dumps(group)


def test_net_is_none_with_a_reason_without_an_active_idle() -> None:
    fake = FakeNVML(power_w=50.0)
    with fake_meter(fake) as meter:
        meter.measure_idle(0.1, IDLE_BEFORE)  # deep idle only: never subtracted
        fake.power_w = 150.0
        with meter.window() as reading:
            time.sleep(0.1)
        group = meter.group_record(meter.gpu_state())
    assert reading.energy_j is not None and reading.energy_j > 0
    assert reading.energy_net_j is None and reading.idle_power_w is None
    assert reading.idle_subtracted is None
    assert (
        reading.net_reason
        == "no active_idle power to subtract: not measured when this was recorded"
    )
    assert group[IDLE_BEFORE]["power_w"] == pytest.approx(50.0)
    assert group[IDLE_ACTIVE]["power_w"] is None
    assert "not measured" in group[IDLE_ACTIVE]["reasons"]["power_w"]
    # The end of the group is not read yet: every field None with the reason.
    assert group["gpu_end"]["temperature_c"] is None
    assert "not measured" in group["gpu_end"]["reasons"]["temperature_c"]
    with pytest.raises(ValueError, match="idle kind"):
        meter.measure_idle(0.1, "deep")


def test_instant_power_field_is_sampled_when_the_driver_has_it() -> None:
    # The 1 s average lags at 100 W while the board draws 150 W now.
    fake = FakeNVML(power_w=150.0, average_w=100.0, counter_supported=False)
    with fake_meter(fake) as meter:
        assert meter.power_source == POWER_INSTANT and meter.power_source_reason is None
        calls = fake.power_calls
        with meter.window(keep_trace=True) as reading:
            time.sleep(0.1)
        info = hardware_info(meter)
    assert fake.power_calls == calls  # the averaged reading is never sampled
    assert reading.power_source == POWER_INSTANT
    assert reading.peak_power_w == pytest.approx(150.0)
    assert reading.trace is not None and all(w == pytest.approx(150.0) for _, w in reading.trace)
    assert reading.avg_power_w == pytest.approx(150.0, rel=0.05)
    assert info["gpu"]["power_source"] == POWER_INSTANT


@pytest.mark.parametrize(
    ("instant", "missing"),
    [
        ("raises", ()),  # the call fails
        ("entry", ()),  # the field's own entry says Not Supported
        ("ok", ("NVML_FI_DEV_POWER_INSTANT",)),  # a pynvml too old to name the field
    ],
)
def test_power_usage_is_the_fallback_when_the_instant_field_fails(
    instant: str, missing: tuple[str, ...]
) -> None:
    fake = FakeNVML(
        power_w=150.0, average_w=100.0, counter_supported=False, instant=instant, missing=missing
    )
    with fake_meter(fake) as meter:
        with meter.window() as reading:
            time.sleep(0.1)
        info = hardware_info(meter)
    assert meter.power_source == POWER_AVERAGE == reading.power_source
    assert meter.power_source_reason and "instantaneous power field unavailable" in (
        meter.power_source_reason
    )
    expected = {"raises": "Function Not Found", "entry": "NVML error 3", "ok": "AttributeError"}
    assert expected[instant] in meter.power_source_reason
    assert reading.peak_power_w == pytest.approx(100.0)  # what nvmlDeviceGetPowerUsage says
    assert reading.source == SOURCE_SAMPLES and reading.energy_j is not None
    assert info["gpu"]["power_source"] == POWER_AVERAGE
    assert info["gpu"]["power_source_reason"] == meter.power_source_reason


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


def test_gpu_state_names_the_gpu_its_power_limit_clocks_and_temperature() -> None:
    with fake_meter(FakeNVML()) as meter:
        state = meter.gpu_state().to_dict()
    assert state == {
        "name": "Fake GPU 80GB",
        "power_limit_w": 700.0,
        "sm_clock_mhz": 1980,
        "mem_clock_mhz": 2619,
        "sm_clock_max_mhz": 1980,
        "mem_clock_max_mhz": 2619,
        "temperature_c": 41,
        "reasons": {},
    }


def test_gpu_state_is_none_with_a_reason_where_nvml_fails() -> None:
    fails = ("nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetTemperature", "nvmlDeviceGetName")
    fake = FakeNVML(fails=fails, missing=("nvmlDeviceGetMaxClockInfo",))
    with fake_meter(fake) as meter:
        state = meter.gpu_state()
        fake.fails.add("nvmlDeviceGetClockInfo")
        idle_w = meter.measure_idle(0.1, IDLE_ACTIVE)
        idle = meter.idle(IDLE_ACTIVE)
    assert state.sm_clock_mhz == 1980 and state.mem_clock_mhz == 2619  # the rest still read
    for name in ("power_limit_w", "temperature_c", "name"):
        assert getattr(state, name) is None
        assert state.reasons[name] == "FakeNotSupported: Not Supported"
    for name in ("sm_clock_max_mhz", "mem_clock_max_mhz"):
        assert getattr(state, name) is None
        assert "AttributeError" in state.reasons[name]
    assert set(state.reasons) == {
        "power_limit_w", "temperature_c", "name", "sm_clock_max_mhz", "mem_clock_max_mhz"
    }  # fmt: skip
    # An idle whose clocks cannot be read still has its power, and the clocks their reason.
    assert idle_w == pytest.approx(150.0) and idle.power_w == idle_w
    assert idle.sm_clock_start_mhz is None and idle.sm_clock_end_mhz is None
    assert idle.reasons == {
        "sm_clock_start_mhz": "FakeNotSupported: Not Supported",
        "sm_clock_end_mhz": "FakeNotSupported: Not Supported",
    }


def test_gpu_state_and_idles_of_a_meter_that_measures_nothing() -> None:
    meter = EnergyMeter.not_measured("run on device cpu: no GPU")
    state = meter.gpu_state()
    assert all(getattr(state, name) is None for name in ("name", "power_limit_w", "temperature_c"))
    assert set(state.reasons.values()) == {"run on device cpu: no GPU"}
    assert meter.measure_idle(0.05, IDLE_ACTIVE) is None
    group = meter.group_record(state)
    assert group["power_source"] is None
    assert group["power_source_reason"] == "run on device cpu: no GPU"
    for kind in (IDLE_BEFORE, IDLE_ACTIVE, IDLE_AFTER):
        assert group[kind]["power_w"] is None
        assert group[kind]["reasons"]["power_w"] == "run on device cpu: no GPU"
    assert group["gpu_end"]["reasons"]["name"] == "run on device cpu: no GPU"


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

    from specrepro.run.timing_group import open_energy_meter

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


# --- a timing group's energy record ------------------------------------------------------


def test_a_timing_group_records_three_idles_and_the_gpu_and_nets_the_active_idle(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from specrepro import cli
    from specrepro.records import read_records
    from specrepro.run import timing_group

    # The fake board draws 150 W while generating and these watts in each idle.
    idle_w = {IDLE_BEFORE: 50.0, IDLE_ACTIVE: 80.0, IDLE_AFTER: 60.0}
    fake = FakeNVML(power_w=150.0)
    meter = fake_meter(fake)
    events: list[str] = []
    measure_idle, window, warm_up = meter.measure_idle, meter.window, timing_group._warm_up

    def idle(seconds: float, kind: str = IDLE_BEFORE) -> float | None:
        events.append(kind)
        fake.power_w = idle_w[kind]
        try:
            return measure_idle(seconds, kind)
        finally:
            fake.power_w = 150.0

    @contextmanager
    def timed(keep_trace: bool = False) -> Iterator[EnergyReading]:
        events.append("window")
        with window(keep_trace) as reading:
            yield reading

    def warm(*args: Any) -> None:
        events.append("warm")
        warm_up(*args)

    monkeypatch.setattr(meter, "measure_idle", idle)
    monkeypatch.setattr(meter, "window", timed)
    monkeypatch.setattr(timing_group, "_warm_up", warm)
    monkeypatch.setattr(timing_group, "open_energy_meter", lambda device, hz: meter)
    config = write_tiny_config(tmp_path, tiny_model_dir, energy={"idle_seconds": 0.1})
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=2, turns=1)
    out = tmp_path / "group.jsonl"
    argv = ["generate", "--config", str(config), "--member", "tiny/vanilla"]
    argv += ["--member", "tiny/sps", "--prompts", str(prompts), "--max-new-tokens", "4"]
    argv += ["--temperature", "0.0", "--seed", "0", "--out", str(out), "--no-progress"]
    assert cli.main([*argv, "--warmup", "1"]) == 0

    # At rest before anything, active idle right after the first warm-up and before any timed
    # window, at rest again after the last one.
    assert events[:3] == [IDLE_BEFORE, "warm", IDLE_ACTIVE]
    assert events[-1] == IDLE_AFTER and events.count(IDLE_ACTIVE) == 1
    assert events.count("window") == 4 and "window" not in events[:3]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("group")) == [
        "group.jsonl"
    ]  # no .part or .tmp left behind

    metas, records = read_records(out)
    assert len(metas) == 2
    for meta in metas.values():
        energy = meta["energy"]
        assert energy["net_subtracts"] == "active_idle"
        assert energy["power_source"] == POWER_INSTANT
        for kind, watts in idle_w.items():
            assert energy[kind]["power_w"] == pytest.approx(watts), kind
            assert energy[kind]["duration_s"] >= 0.1 and energy[kind]["reasons"] == {}
        for moment in ("gpu_start", "gpu_end"):
            assert energy[moment]["name"] == "Fake GPU 80GB"
            assert energy[moment]["power_limit_w"] == 700.0
            assert energy[moment]["sm_clock_max_mhz"] == 1980
            assert energy[moment]["temperature_c"] == 41 and energy[moment]["reasons"] == {}
        assert meta["hardware"]["gpu"]["power_source"] == POWER_INSTANT
    assert len(records) == 4
    for record in records:
        (turn,) = record["turns"]
        reading = turn["energy"]
        assert reading["idle_subtracted"] == "active_idle" and reading["net_reason"] is None
        assert reading["idle_power_w"] == pytest.approx(80.0)
        assert reading["power_source"] == POWER_INSTANT
        expected_net = reading["energy_j"] - 80.0 * reading["duration_s"]
        assert reading["energy_net_j"] == pytest.approx(expected_net)


# --- how the report names it -------------------------------------------------------------


def test_tables_say_the_energy_is_the_gpu_boards(tmp_path: Path) -> None:
    from specrepro.report.aggregate import summarise
    from specrepro.report.dsbd import _header
    from specrepro.report.tables import write_dataset_tables
    from tests.test_report import _cells_by_column, make_tidy

    write_dataset_tables(summarise(make_tidy()), tmp_path)
    squad_md = (tmp_path / "table_squad.md").read_text()
    squad = _cells_by_column(squad_md)
    # make_tidy's vanilla spends 2 J per token and sps 1 J, on SQuAD only.
    assert squad["vanilla"]["GPU board J/token"] == "2.000"
    assert squad["sps"]["GPU board J/token"] == "1.000"
    header = next(line for line in squad_md.splitlines() if line.startswith("| "))
    labels = [c.strip() for c in header.split("|")]
    assert "GPU board J/token" in labels and "J/token" not in labels
    assert "GPU board J/token: the energy NVML reports for the GPU board" in squad_md
    assert "not the whole machine" in squad_md
    mt_md = (tmp_path / "table_mtbench.md").read_text()
    assert "GPU board J/token n/a: energy not measured" in mt_md
    assert "GPU board J/token" in (tmp_path / "table_squad.tex").read_text()
    assert "GPU board J/token" in _header("squad") and "J/token" not in _header("squad")
