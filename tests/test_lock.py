"""The install's constraints: requirements.lock pins every package but torch (which the Makefile
pins, CPU or CUDA build) and this project, at versions an index serves."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO


def pins() -> dict[str, str]:
    lines = (REPO / "requirements.lock").read_text().splitlines()
    entries = [line for line in lines if line and not line.startswith("#")]
    out = {}
    for line in entries:
        name, sep, version = line.partition("==")
        assert sep, f"requirements.lock: {line!r} is not NAME==VERSION"
        out[name.lower()] = version
    return out


def test_the_lock_pins_everything_but_torch_and_the_project() -> None:
    locked = pins()
    assert "torch" not in locked and "specrepro" not in locked
    assert {"transformers", "snakemake", "pytest", "numpy", "pandas"} <= set(locked)
    local = [f"{n}=={v}" for n, v in locked.items() if not re.fullmatch(r"[0-9][0-9A-Za-z.!]*", v)]
    assert not local, f"local or odd versions no index serves: {local}"


def test_make_install_uses_the_lock() -> None:
    plan = subprocess.run(
        ["make", "-n", "-B", "install"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "pip install -c requirements.lock -e" in plan
