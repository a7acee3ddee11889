"""The wheel folder for a GPU node without a package index: gpu/wheels.lock, its check
(specrepro.gpu_wheels), the Makefile targets and gpu/preflight.sh. No network: the folders here
hold stand-in wheels named for the lock's entries."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from specrepro.gpu_wheels import (
    MAX_BYTES,
    WheelFolderError,
    check_folder,
    logical_lines,
    read_lock,
)
from tests.conftest import REPO

LOCK = REPO / "gpu" / "wheels.lock"
SCRIPT = REPO / "gpu" / "preflight.sh"
CHECKER = REPO / "src" / "specrepro" / "gpu_wheels.py"
STAND_IN = b"stand-in"


def stand_in_folder(folder: Path, lock: Path = LOCK) -> Path:
    """One small file per lock entry, named as pip names the wheel, and one of specrepro."""
    folder.mkdir(parents=True)
    names = [(p.name.replace("-", "_"), p.version) for p in read_lock(lock)]
    for name, version in [*names, ("specrepro", "0.1.0")]:
        (folder / f"{name}-{version}-py3-none-any.whl").write_bytes(STAND_IN)
    return folder


def test_lock_pins_every_entry_exactly_with_hashes() -> None:
    entries = [line for line in logical_lines(LOCK.read_text()) if re.match(r"[A-Za-z0-9]", line)]
    pins = read_lock(LOCK)
    assert len(pins) == len(entries) > 0
    for entry in entries:
        requirement, *options = entry.split()
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][^\s=]*", requirement)
        assert options and all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", o) for o in options)
    assert ("transformers", "5.25.0") in [(p.name, p.version) for p in pins]


def test_lock_sizes_total_under_limit_without_torch() -> None:
    pins = read_lock(LOCK)
    assert sum(p.size for p in pins) < MAX_BYTES
    assert all(p.size > 0 for p in pins)
    names = [p.name for p in pins]
    assert not [n for n in names if n == "torch" or n.startswith(("nvidia-", "torch"))]


def test_lock_refuses_an_unpinned_entry(tmp_path: Path) -> None:
    lock = tmp_path / "wheels.lock"
    lock.write_text("# wheel: tomlkit-0.15.3-py3-none-any.whl, 55467 bytes\ntomlkit>=0.15\n")
    with pytest.raises(WheelFolderError, match="'tomlkit>=0.15' is not pinned"):
        read_lock(lock)


def test_folder_check_passes_on_the_lock_entries(tmp_path: Path) -> None:
    folder = stand_in_folder(tmp_path / "wheels")
    assert check_folder(LOCK, folder) == (len(read_lock(LOCK)) + 1) * len(STAND_IN)


def drop_transformers(folder: Path) -> None:
    (folder / "transformers-5.25.0-py3-none-any.whl").unlink()


def add_torch(folder: Path) -> None:
    (folder / "torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"x")


def older_transformers(folder: Path) -> None:
    drop_transformers(folder)
    (folder / "transformers-5.17.0-py3-none-any.whl").write_bytes(b"x")


def drop_specrepro(folder: Path) -> None:
    (folder / "specrepro-0.1.0-py3-none-any.whl").unlink()


def oversize(folder: Path) -> None:
    with open(folder / "transformers-5.25.0-py3-none-any.whl", "wb") as wheel:
        wheel.truncate(MAX_BYTES + 1)  # sparse: takes no disk


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (drop_transformers, "missing: no wheel of transformers==5.25.0"),
        (add_torch, "not in wheels.lock: torch-2.11.0-"),
        (older_transformers, "transformers-5.17.0-py3-none-any.whl: the lock pins transformers"),
        (drop_specrepro, "missing: no wheel of specrepro"),
        (oversize, "over the 60 MB limit (largest: transformers-5.25.0-py3-none-any.whl"),
    ],
)
def test_folder_check_names_what_is_wrong(
    tmp_path: Path, spoil: Callable[[Path], None], message: str
) -> None:
    folder = stand_in_folder(tmp_path / "wheels")
    spoil(folder)
    with pytest.raises(WheelFolderError) as error:
        check_folder(LOCK, folder)
    assert message in str(error.value)


def test_checker_runs_as_a_file_on_a_bare_python(tmp_path: Path) -> None:
    # As gpu/preflight.sh runs it with the node's python: no site-packages, no package import.
    folder = stand_in_folder(tmp_path / "wheels")
    bare = [sys.executable, "-I", "-S", str(CHECKER), str(LOCK)]
    ok = subprocess.run([*bare, str(folder)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"OK {folder}: {len(read_lock(LOCK)) + 1} wheels")
    missing = subprocess.run([*bare, str(tmp_path / "none")], capture_output=True, text=True)
    assert missing.returncode == 1
    assert "make gpu-wheels" in missing.stderr


def make_dry_run(target: str) -> str:
    # -o: the install step's stamp counts as made, so nothing about the venv is shown or run.
    # --no-print-directory: under `make test` this make is nested and would print its folder.
    command = ["make", "-n", "--no-print-directory", "-o", ".venv/.installed", target]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout


def test_makefile_gpu_wheels_downloads_the_lock_and_checks_the_folder() -> None:
    recipe = " ".join(make_dry_run("gpu-wheels").split())
    assert "pip download --no-deps --only-binary=:all: --python-version 3.12" in recipe
    assert "--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64" in recipe
    assert "-d gpu/wheels -r gpu/wheels.lock" in recipe
    assert "pip wheel --no-deps -w gpu/wheels ." in recipe
    assert recipe.endswith("-m specrepro.gpu_wheels gpu/wheels.lock gpu/wheels")


def test_makefile_gpu_preflight_runs_the_script_without_installing() -> None:
    recipe = make_dry_run("gpu-preflight").strip()
    assert recipe.splitlines() == [recipe]
    assert 'GPU_WHEELS="gpu/wheels" bash gpu/preflight.sh' in recipe


def run_preflight(checkout: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("GPU_WHEELS", None)
    return subprocess.run(
        ["bash", "gpu/preflight.sh"], cwd=checkout, env=env, capture_output=True, text=True
    )


def test_preflight_refuses_a_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "gpu").mkdir()
    shutil.copy(SCRIPT, tmp_path / "gpu")
    result = run_preflight(tmp_path)
    assert result.returncode == 1
    assert "no wheels in gpu/wheels/" in result.stderr
    assert "make gpu-wheels" in result.stderr
    assert not (tmp_path / "gpu" / ".venv").exists()


def test_preflight_refuses_a_folder_that_does_not_match_the_lock(tmp_path: Path) -> None:
    (tmp_path / "src" / "specrepro").mkdir(parents=True)
    shutil.copy(CHECKER, tmp_path / "src" / "specrepro")
    shutil.copytree(REPO / "gpu", tmp_path / "gpu", ignore=shutil.ignore_patterns("wheels", ".*"))
    drop_transformers(stand_in_folder(tmp_path / "gpu" / "wheels"))
    result = run_preflight(tmp_path)
    assert result.returncode == 1
    assert "missing: no wheel of transformers==5.25.0" in result.stderr
    assert not (tmp_path / "gpu" / ".venv").exists()


def test_pyproject_takes_the_node_torch() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    torch = [d for d in project["dependencies"] if re.match(r"torch\b", d)]
    assert torch == ["torch>=2.11"]
    assert "transformers>=5.24,<5.40" in project["dependencies"]
