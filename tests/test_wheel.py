"""A plain wheel build (`pip install .`) carries everything the CLI needs, the schema included."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO, write_tiny_config


def test_wheel_runs_help_and_check(
    tmp_path: Path, tiny_model_dir: Path, real_data_mirror: Path
) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("specrepro-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "specrepro" / "config.schema.yaml").is_file()
    assert not (site / "specrepro" / "config.schema.yaml").is_symlink()

    # Run from an empty folder with only the wheel's package importable as specrepro.
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        code = "import sys, specrepro.cli; sys.exit(specrepro.cli.main(sys.argv[1:]))"
        return subprocess.run(
            [sys.executable, "-c", code, *args], cwd=work, env=env, capture_output=True, text=True
        )

    where = subprocess.run(
        [sys.executable, "-c", "import specrepro; print(specrepro.__file__)"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(site))
    assert cli("--help").returncode == 0
    config = write_tiny_config(
        work, tiny_model_dir, datasets={"mtbench": {"n": 2, "max_new_tokens": 4}}
    )
    mirror = real_data_mirror  # fetch-data checks the official hashes
    fetched = cli(
        "fetch-data", "--config", str(config), "--dataset", "mtbench", "--mirror", str(mirror)
    )
    assert fetched.returncode == 0, fetched.stderr
    checked = cli("check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "OK" in checked.stdout
