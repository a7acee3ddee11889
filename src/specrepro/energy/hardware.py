"""Environment facts recorded in every result file (docs/outputs.md): hardware, versions, commit."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

from specrepro.energy.nvml import EnergyMeter

_PACKAGES = ("torch", "transformers", "numpy", "nvidia-ml-py")


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _ram_total_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None  # os.sysconf is POSIX-only


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_cuda_version() -> str | None:
    try:
        torch = importlib.import_module("torch")
    except Exception:  # absent, or a broken install: the record must still be written
        return None
    version = getattr(getattr(torch, "version", None), "cuda", None)
    return str(version) if version is not None else None


def hardware_info(
    meter: EnergyMeter | None = None, nvml: ModuleType | None = None, device_index: int = 0
) -> dict[str, Any]:
    """JSON-serialisable description of this machine, its GPU and the key package versions.

    `meter` is the run's own energy meter, so the GPU described is the one measured (none for
    a CPU run); without it, NVML device `device_index` is described.
    """
    if meter is None:
        with EnergyMeter.open(device_index=device_index, nvml=nvml) as own:
            return hardware_info(own)
    gpu = {
        "device_index": meter.device_index if meter.available else None,
        "uuid": meter.gpu_uuid,
        "name": meter.device_name,
        "driver_version": meter.driver_version,
        "cuda_version": _torch_cuda_version(),
        "cuda_driver_version": meter.cuda_driver_version,
        "nvml_available": meter.available,
        "nvml_reason": meter.reason,
        "energy_counter_supported": meter.counter_supported if meter.available else None,
        "power_source": meter.power_source,
        "power_source_reason": meter.power_source_reason,
    }
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_total_bytes": _ram_total_bytes(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "packages": {name: _package_version(name) for name in _PACKAGES},
        "gpu": gpu,
    }


def _git(repo_dir: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            # --no-optional-locks: `git status` must not take index.lock and race a real commit.
            ["git", "--no-optional-locks", "-C", str(repo_dir), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_commit(repo_dir: Path | None = None) -> str | None:
    """HEAD commit of `repo_dir` (default: this package's checkout), "-dirty" if modified.

    None when git is missing or the directory is not inside a git work tree.
    """
    where = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parent
    head = _git(where, "rev-parse", "HEAD")
    if not head or not head.strip():
        return None
    commit = head.strip()
    status = _git(where, "status", "--porcelain")
    if status is None:
        return commit  # HEAD is known; only the dirty check failed
    return f"{commit}-dirty" if status.strip() else commit
