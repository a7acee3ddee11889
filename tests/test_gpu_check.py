"""`python -m specrepro.bench gpu-check`: wired, refuses a machine without CUDA with its own exit
code, and its checks, run here on the CPU where they can, pass on the code and fail on the bugs
they are there to catch."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest
import torch

from specrepro.bench import gpu_check as bench
from specrepro.bench import main as bench_main
from specrepro.bench.gpu_check_models import tiny_check_config
from specrepro.engine import host_reads
from specrepro.engine.runner import ModelRunner
from tests.conftest import REPO
from tests.test_ddd_async import slow_copies
from tests.test_host_reads import refusing_reads

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without CUDA")


@pytest.fixture(scope="module")
def small() -> bench.CheckModels:
    config = tiny_check_config(64)
    config.hidden_size, config.intermediate_size = 64, 128
    return bench.check_models(torch.device("cpu"), config=config)


@pytest.fixture
def short_runs(monkeypatch) -> None:
    monkeypatch.setattr(bench, "CHECK_PROMPTS", 1)
    monkeypatch.setattr(bench, "CHECK_NEW_TOKENS", 16)
    monkeypatch.setattr(bench, "ASYNC_THRESHOLDS", (-1.0, -3.0))


@no_cuda
def test_gpu_check_without_cuda_says_so_and_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["gpu-check"])
    assert exit_info.value.code == bench.EXIT_NO_CUDA == 2
    assert bench.NEEDS_CUDA in capsys.readouterr().err
    assert "tests/test_host_reads.py" in bench.NEEDS_CUDA


@no_cuda
def test_the_module_command_is_wired() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "specrepro.bench", "gpu-check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "gpu-check needs a CUDA device; the CPU proxy runs in the test suite" in done.stderr


def test_the_makefile_runs_it() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "gpu-check:" in makefile
    assert "$(BIN)/python -m specrepro.bench gpu-check" in makefile


def test_fp16_head_check_passes_and_catches_a_float16_rope(small, monkeypatch) -> None:
    assert bench.check_head_fp16(small).ok
    build = bench.build_head

    def rounded_rope(config, target, *args):  # the bug: RoPE frequencies cast with the head
        head = build(config, target, *args)
        if target.dtype == torch.float16:
            head.rotary.inv_freq = head.rotary.inv_freq.half().float()
        return head

    monkeypatch.setattr(bench, "build_head", rounded_rope)
    result = bench.check_head_fp16(small)
    assert not result.ok, result.detail


def test_async_check_needs_pending_flags_and_equal_trees(small, short_runs, monkeypatch) -> None:
    # On the CPU nothing is in flight: the check must say the delay did not bite...
    idle = bench.check_async_trees(small, sleep_cycles=0)
    assert not idle.ok and "did not bite" in idle.detail
    # ...with copies that land two polls late it passes (trees equal, levels dropped)...
    monkeypatch.setattr(host_reads, "late_reader", slow_copies(2))
    delayed = bench.check_async_trees(small, sleep_cycles=0)
    assert delayed.ok, delayed.detail
    # ...and a stale read fails it.
    monkeypatch.setattr(host_reads.CopiedRead, "value", lambda self: (0.0, True))
    stale = bench.check_async_trees(small, sleep_cycles=0)
    assert not stale.ok and "differ" in stale.detail


def test_sync_free_check_on_the_cpu_proxy(small, short_runs, monkeypatch) -> None:
    results = bench.check_sync_free(small, region=refusing_reads)
    assert [r.ok for r in results] == [True] * len(results), [r.line() for r in results]
    assert {r.name.split("[")[1].split()[0] for r in results} == {
        "eagle", "eagle2", "ddd", "ddd_async", "dsbd"
    }  # fmt: skip
    forward = ModelRunner.forward

    def reading(self: ModelRunner, *args: object, **kwargs: object) -> object:
        bool(torch.ones(()).sum())  # a host read in every forward
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(ModelRunner, "forward", reading)
    results = bench.check_sync_free(small, region=refusing_reads)
    assert not any(r.ok for r in results)
    assert "host sync" in results[0].detail


def test_a_failing_check_makes_the_exit_code_1(monkeypatch, capsys) -> None:
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench.torch.cuda, "get_device_name", lambda device: "fake")
    monkeypatch.setattr(bench, "check_models", lambda device, path: None)
    ok = bench.CheckResult("fine", True, "ok")
    monkeypatch.setattr(bench, "check_sync_free", lambda models: [ok])
    monkeypatch.setattr(bench, "check_async_trees", lambda models, cycles: ok)
    monkeypatch.setattr(bench, "check_head_fp16", lambda models: ok)

    def broken(models: object) -> bench.CheckResult:
        raise RuntimeError("no NVML")

    monkeypatch.setattr(bench, "check_energy", broken)
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["gpu-check"])
    assert exit_info.value.code == bench.EXIT_FAILED
    out = capsys.readouterr().out
    assert out.count("PASS") == 3 and "FAIL NVML energy: error: RuntimeError: no NVML" in out
    assert "3 passed, 1 failed" in out


def test_checked_levels_restores_the_previous_region() -> None:
    with host_reads.checked_levels(refusing_reads):
        assert host_reads._level_region is refusing_reads
    assert host_reads._level_region is contextlib.nullcontext
