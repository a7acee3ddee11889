"""The plan (src/specrepro/planning) is the workflow's only source of names, runs and jobs."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from specrepro.config import ConfigError, load_config, validate_config
from specrepro.planning import (
    PlanError,
    make_plan,
    run_name,
    switch_off,
)
from tests.conftest import REPO, copy_workflow
from tests.test_workflow import snakemake

SHIPPED_CONFIGS = sorted((REPO / "config").glob("*.yaml"))
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
PAPER_CONFIGS = sorted((REPO / "config").glob("paper_*.yaml"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("planning"))


def planned_by_snakemake(output: str) -> set[tuple[str, tuple[str, ...]]]:
    """(rule, sorted outputs) of every job in a `snakemake --forceall --dry-run` listing."""
    jobs = set()
    for match in re.finditer(r"^(?:local)?rule (\w+):\n((?:    .*\n)*)", output, re.M):
        files = re.search(r"^    output: (.*)$", match.group(2), re.M)
        # Flags print after the name: "results/.../T0.0-s0.jsonl (update)".
        names = [re.sub(r" \(\w+\)$", "", f) for f in files.group(1).split(", ")] if files else []
        jobs.add((match.group(1), tuple(sorted(names))))
    return jobs


@pytest.mark.parametrize("config", SHIPPED_CONFIGS, ids=lambda c: c.name)
def test_the_plan_lists_the_jobs_snakemake_plans(workdir: Path, config: Path) -> None:
    # The workflow copy's own file: Snakemake merges it over that copy's default config.
    given = workdir / "config" / config.name
    result = snakemake("--configfile", str(given), "--forceall", "-n", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    planned = make_plan(load_config(config)).jobs()
    ours = {(job.rule, tuple(sorted(job.outputs))) for job in planned}
    assert len(ours) == len(planned), "the plan lists a job twice"
    assert ours == planned_by_snakemake(result.stdout)
    # No wildcard holds a path: log and benchmark files are named by names, not folders.
    values = re.findall(r"^    wildcards: (.*)$", result.stdout, re.M)
    assert values and not [v for v in values if "/" in v], values


def inherited(merged: object, alone: object, where: str = "") -> list[str]:
    """The dotted paths at which the merged config differs from the config alone."""
    if isinstance(merged, dict) and isinstance(alone, dict):
        return [
            path
            for key in merged.keys() | alone.keys()
            for path in inherited(merged.get(key), alone.get(key), f"{where}{key}.")
        ]
    return [] if merged == alone else [where.rstrip(".")]


# Sections of named definitions: a config may inherit whole entries it never uses.
DEFINITIONS = ("models.registry", "teachers", "drafts", "heads", "pairs", "methods", "datasets")


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=lambda c: c.name)
def test_a_paper_config_merged_over_the_default_plans_what_it_plans_alone(config: Path) -> None:
    from snakemake.utils import update_config

    # As Snakemake merges --configfile over the Snakefile's configfile (a nested dict update).
    merged = yaml.safe_load(DEFAULT_CONFIG.read_text())
    update_config(merged, yaml.safe_load(config.read_text()))
    merged.setdefault("run", run_name([str(config)], str(DEFAULT_CONFIG)))
    validate_config(merged, source=f"config.yaml + {config.name}")
    alone = load_config(config)
    assert merged["run"] == alone["run"] == config.stem
    ours, theirs = make_plan(alone), make_plan(merged)
    assert theirs.jobs() == ours.jobs()
    assert theirs.timing_groups == ours.timing_groups
    for key in ours.timing_groups:
        w = type("W", (), {"target": key[0], "dataset": key[1], "group": ours.group_name(key)})
        assert theirs.entries("generate")(w) == ours.entries("generate")(w), key
    # Everything the paper config sets is kept as it says; the default adds only whole named
    # definitions (models, methods, datasets, ...) that none of its jobs uses.
    for path in inherited(switch_off(merged), switch_off(alone)):
        section, _, name = path.rpartition(".")
        assert path in DEFINITIONS or (section in DEFINITIONS and "." not in name), path


def test_run_names() -> None:
    default = str(DEFAULT_CONFIG)
    assert run_name([], default) == run_name([default], default) == "default"
    assert run_name([default, "config/mine.yaml", "more.yml"], default) == "mine"
    assert run_name(["somewhere/paper_ddd.yaml"], default) == "paper_ddd"
    assert load_config(DEFAULT_CONFIG)["run"] == "default"
    assert load_config([DEFAULT_CONFIG, REPO / "config" / "paper_dsbd.yaml"])["run"] == "paper_dsbd"


def test_the_a_a_control_runs_beside_the_baseline_at_every_dataset_and_temperature(
    tmp_path: Path,
) -> None:
    # A user's config over the default: T=0.7 only (MT-bench, the tree methods and the beams
    # are kept to other temperatures by the default, so vanilla and sps run on SQuAD and Spider).
    mine = tmp_path / "warm.yaml"
    mine.write_text(yaml.safe_dump({"runs": {"temperatures": [0.7]}}))
    plan = make_plan(load_config([DEFAULT_CONFIG, mine]))
    assert plan.run == "warm" and plan.control == "vanilla-aa"
    assert plan.config["methods"]["vanilla-aa"] == plan.config["methods"]["vanilla"]
    warm = {key[:2] for key in plan.timing_groups if key[2] == 0.7}
    assert warm == {("smollm2-135m-instruct", "squad"), ("smollm2-135m-instruct", "spider")}
    for key, specs in plan.timing_groups.items():
        members = [spec.partition("@")[0] for spec in specs]
        baselines = [m for m in members if m.endswith("/vanilla")]
        # Every group with the baseline has its control, right after it; none other has one.
        assert [m for m in members if m.endswith("/vanilla-aa")] == [
            m.replace("/vanilla", "/vanilla-aa") for m in baselines
        ], key
        for baseline in baselines:
            assert members[members.index(baseline) + 1] == baseline + "-aa", key
    assert any(key[2] == 0.7 for key in plan.timing_groups)


def test_a_configured_control_must_be_the_baseline_again(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"methods": {"vanilla-aa": {"algorithm": "sps", "gamma": 2}}}))
    with pytest.raises(ConfigError, match="methods.vanilla-aa is generated"):
        load_config([DEFAULT_CONFIG, mine])


def test_a_built_model_is_written_to_its_folder_in_the_model_cache() -> None:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["models"]["registry"]["smollm2-draft-2l"]["path"] = "elsewhere/smollm2-draft-2l"
    with pytest.raises(PlanError, match="set its `path` to resources/models/smollm2-draft-2l"):
        make_plan(config)


def test_the_workflow_holds_no_naming_or_expansion_logic() -> None:
    patterns = [
        r"check_levels",  # the DDD sweep's points
        r"-draft-",  # the study's draft names
        r"-d\{",  # the study's pair names
        r"-g\{",  # the lookahead sweep's entries
        r"ALGORITHMS|NEEDS_",  # which algorithms load a draft or a head
        r"itertools|expand\(",  # products of runs or files
        r"config\[",  # every config lookup goes through the plan
    ]
    for path in [REPO / "workflow" / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]:
        text = path.read_text()
        for pattern in patterns:
            assert not re.search(pattern, text), f"{path.name} matches {pattern!r}"


def test_the_planning_package_loads_by_path_without_the_library() -> None:
    # As the Snakefile loads it under --use-conda, where this package is not installed.
    package = REPO / "src" / "specrepro" / "planning"
    code = f"""
import importlib.util, sys
init, folder = {str(package / "__init__.py")!r}, {str(package)!r}
spec = importlib.util.spec_from_file_location(
    "somewhere_else", init, submodule_search_locations=[folder]
)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
methods = module.method_names()  # read from the methods' source, without importing them
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("specrepro", "torch", "transformers"))
print(heavy if "sps" in methods else methods)
"""
    result = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_generated_names_and_their_runs() -> None:
    config = load_config(REPO / "config" / "config.yaml")
    before = copy.deepcopy(config)
    plan = make_plan(config)
    sweep = config["sweeps"]["ddd"]
    assert len(plan.sweep_methods) == len(sweep["thresholds"]) * len(sweep["check_levels"])
    assert all("." not in name for name in plan.sweep_methods)
    study = plan.study
    assert list(study.members)[0] == study.pair  # the existing draft comes first
    for pair, draft in study.members.items():
        assert plan.config["pairs"][pair]["draft"] == draft
        assert draft in plan.config["models"]["registry"]
    assert config == before, "planning changed the config it was given"
    # every run belongs to exactly one timing group, and the groups hold nothing else
    grouped = [spec for specs in plan.timing_groups.values() for spec in specs]
    assert len(grouped) == len(plan.runs)


def test_a_configured_entry_under_a_generated_name_is_refused(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    gamma = config["studies"]["draft_design"]["gammas"][0]
    config["methods"][f"sps-g{gamma}"] = {"algorithm": "sps", "gamma": 9}
    path = tmp_path / "clash.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=f"methods.sps-g{gamma} is generated"):
        load_config(path)


def test_the_study_reference_and_the_dataset_temperatures_shape_the_runs(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    plan = make_plan(load_config(REPO / "config" / "config.yaml"))
    assert plan.study.reference == "smollm2-draft-d2"
    assert "--reference smollm2-draft-d2" in plan.study_report_args(
        None, type("Input", (), {"quality": plan.quality_files()})
    )
    # MT-bench runs at T=0 only (datasets.mtbench.temperatures), every other dataset at both.
    temperatures = {(d, t) for _, _, d, t, _ in plan.runs}
    assert ("mtbench", 1.0) not in temperatures and ("squad", 1.0) in temperatures
    config["studies"]["draft_design"]["reference"] = {"family": "depth", "depth": 3}
    path = tmp_path / "reference.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="the depth family builds no 3-layer member"):
        load_config(path)


def test_a_group_over_the_gpu_budget_is_split_into_jobs_that_each_fit() -> None:
    from specrepro.planning.memory import budget_bytes, registry_weight

    config = load_config(REPO / "config" / "paper_draft_design.yaml")
    plan = make_plan(config)
    budget = budget_bytes(config["runs"])
    weight = registry_weight(config, config["runs"]["dtype"])
    outputs = [job.outputs[0] for job in plan.jobs() if job.rule == "generate"]
    for dataset in ("mtbench", "squad", "spider"):
        for temperature in ("0.0", "1.0"):
            stem = f"results/paper_draft_design/raw/llama2-13b/{dataset}/T{temperature}-s0"
            assert [o for o in outputs if o.startswith(stem)] == [
                f"{stem}-part1.jsonl",
                f"{stem}-part2.jsonl",
            ]
    for key, specs in plan.timing_groups.items():
        members = [tuple(spec.partition("@")[0].split("/", 1)) for spec in specs]
        # Every part is its own timing group: the baseline and the A/A control in each.
        assert ("llama2-13b", "vanilla") in members and ("llama2-13b", "vanilla-aa") in members
        w = type("W", (), {"target": key[0], "dataset": key[1], "group": plan.group_name(key)})
        assert sum(weight(name) for name in plan.group_models(w)) <= budget
    # Unsplit, the draft-design groups would hold ~90 GB of float16 weights.
    unsplit = make_plan({**config, "runs": {**config["runs"], "gpu_memory_gb": None}})
    assert all(key[4] == 0 for key in unsplit.timing_groups)


def test_beam_sampling_away_from_squad_and_spider_asks_for_no_dsbd_tables() -> None:
    # The DSBD tables are per DSBD task; a run of MT-bench alone has none to make.
    config = load_config(DEFAULT_CONFIG, {"runs.datasets": ["mtbench"]})
    plan = make_plan(config)
    assert "beam" in plan.runs_spec["methods"] and not plan.dsbd_runs()
    assert not any("dsbd_" in path for job in plan.jobs() for path in job.outputs)
