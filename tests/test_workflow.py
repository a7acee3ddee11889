"""The Snakemake workflow as users run it: lint, dry runs of every config, the SLURM profile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import REPO

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
PAPER_CONFIGS = sorted((REPO / "config").glob("paper_*.yaml"))
MODEL_RULES = {"generate", "train_draft"}


def snakemake(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the workflow files, so dry runs see no results of earlier runs."""
    root = tmp_path_factory.mktemp("workflow")
    for name in ("Snakefile", "workflow", "config", "notebooks", "envs"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, symlinks=True)
        else:
            shutil.copy(source, root / name)
    (root / "src").symlink_to(REPO / "src")
    return root


def test_lint_passes() -> None:
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


@pytest.mark.parametrize("config", [None, *PAPER_CONFIGS], ids=lambda c: c.name if c else "default")
def test_dry_run(workdir: Path, config: Path | None) -> None:
    args = ["-n", "--quiet", "rules"] + (["--configfile", str(config)] if config else [])
    result = snakemake(*args, cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "generate" in result.stdout


def profile_jobs() -> dict[str, SimpleNamespace]:
    """Resources each kind of job gets from the SLURM profile (defaults, then per rule)."""
    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    defaults = profile.get("default-resources", {})
    rules = set(profile.get("set-resources", {})) | {"prompts", "tidy", "notebook"}
    return {
        rule: SimpleNamespace(
            resources=SimpleNamespace(**{**defaults, **profile["set-resources"].get(rule, {})})
        )
        for rule in rules
    }


def test_slurm_profile_passes_the_plugins_own_validation() -> None:
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra
    from snakemake_interface_common.exceptions import WorkflowError

    for rule, job in profile_jobs().items():
        validate_slurm_extra(job)
        wants_gpu = bool(getattr(job.resources, "gpu", 0))
        assert wants_gpu == (rule in MODEL_RULES), rule
        partition = job.resources.slurm_partition
        assert (partition == "gpu") == (rule in MODEL_RULES), rule
    # What the profile used to say is what the plugin refuses since 1.9.
    old = SimpleNamespace(resources=SimpleNamespace(slurm_extra="'--gres=gpu:1'"))
    with pytest.raises(WorkflowError, match="not allowed in the 'slurm_extra'"):
        validate_slurm_extra(old)


def test_slurm_profile_dry_run_with_the_plugin(workdir: Path) -> None:
    for config in PAPER_CONFIGS:
        result = snakemake(
            "--workflow-profile", "workflow/profiles/slurm", "--configfile", str(config),
            "-n", "--quiet", "rules", cwd=workdir,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
