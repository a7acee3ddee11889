"""Timing groups sized to the GPU (src/specrepro/planning/memory.py): weight bytes from the
registry's parameter counts, a group split into parts that each fit and each repeat the
baseline and the A/A control, and the cost estimate of every job."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from specrepro.planning import memory
from specrepro.planning.cost import cost_table_markdown, gpu_bandwidth, job_costs
from specrepro.planning.memory import (
    budget_bytes,
    fixed_runs,
    group_weight_bytes,
    model_weight_bytes,
    registry_weight,
    split_group,
)
from specrepro.planning.plan import Plan
from tests.conftest import REPO

PAPER_CONFIGS = ["paper_ddd", "paper_dsbd", "paper_draft_design"]


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())


def models_from(config: dict):
    """models_of from the config alone: the target, and the draft for sps and dsbd (a
    lookahead entry METHOD-gN is METHOD at another gamma)."""

    def models_of(pair: str, method: str) -> list[str]:
        entry = config["pairs"][pair]
        method = re.sub(r"-g\d+$", "", method)
        algorithm = config["methods"].get(method, {}).get("algorithm", method)
        return [entry["target"]] + ([entry["draft"]] if algorithm in ("sps", "dsbd") else [])

    return models_of


def with_control(methods: list[str], baseline: str = "vanilla") -> list[str]:
    """The methods a timing group runs: the A/A control right after the baseline."""
    return [n for m in methods for n in ([m, f"{m}-aa"] if m == baseline else [m])]


def draft_design_group(config: dict) -> list[tuple[str, str]]:
    """The draft-design config's T=0 SQuAD timing group, built from the config: the baseline,
    the A/A control (which the plan adds after it) and the base pair's sps (runs), then every
    study pair's sps at each lookahead (the base pair first)."""
    study = config["studies"]["draft_design"]
    base = study["pair"]
    gamma = config["methods"]["sps"]["gamma"]
    names = ["sps" if g == gamma else f"sps-g{g}" for g in study["gammas"]]
    members = [(base, m) for m in with_control(config["runs"]["methods"])]
    members += [(p, m) for p in [base, *study["pairs"]] for m in names]
    return list(dict.fromkeys(members))


def plan_group(plan: Plan, key: tuple) -> list[tuple[str, str]]:
    """A timing group's runs as (pair, method), its parts merged if the plan split it (its
    keys then carry a part after (target, dataset, temperature, seed))."""
    specs = [s for k, group in plan.timing_groups.items() if k[:4] == key for s in group]
    return list(dict.fromkeys(tuple(s.partition("@")[0].split("/", 1)) for s in specs))


# -- weights and the budget --------------------------------------------------------------------


def test_weight_bytes_per_dtype() -> None:
    entry = {"source": "hub", "parameters": 13.0e9}
    assert model_weight_bytes(entry, "float32") == 52_000_000_000
    assert model_weight_bytes(entry, "float16") == 26_000_000_000
    assert model_weight_bytes(entry, "bfloat16") == 26_000_000_000
    # Q4_1: 20 bytes per block of 32 weights.
    assert model_weight_bytes(entry, "int4") == 8_125_000_000
    assert model_weight_bytes({"source": "hub"}, "float16") is None
    with pytest.raises(ValueError, match="unknown dtype"):
        model_weight_bytes(entry, "float8")
    # What PyYAML makes of `parameters: 13.0e9` (no sign in the exponent): a string.
    bad = yaml.safe_load("parameters: 13.0e9")
    with pytest.raises(ValueError, match=r"13\.0e\+9"):
        model_weight_bytes(bad, "float16")


def test_budget_is_gpu_memory_less_the_reserve() -> None:
    assert budget_bytes({"gpu_memory_gb": 80}) == 68_000_000_000
    assert budget_bytes({"gpu_memory_gb": 80, "cache_reserve_gb": 5}) == 75_000_000_000
    assert budget_bytes({}) is None
    with pytest.raises(ValueError, match="no room"):
        budget_bytes({"gpu_memory_gb": 10})


def test_bandwidth_by_gpu_name() -> None:
    assert gpu_bandwidth({"gpu": "h100"}) == ("H100", 3.35e12)
    assert gpu_bandwidth({"gpu": "A100-80GB"}) == ("A100-80GB", 2.0e12)
    assert gpu_bandwidth({}) == ("A100-80GB", 2.0e12)
    assert gpu_bandwidth({"gpu": "A40"}, bandwidth=1e12)[1] == 1e12
    with pytest.raises(ValueError, match="bandwidth unknown"):
        gpu_bandwidth({"gpu": "TPU"})


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_size_every_model(name: str) -> None:
    config = load(name)
    assert config["runs"]["gpu_memory_gb"] == 80
    for model, entry in config["models"]["registry"].items():
        assert isinstance(entry.get("parameters"), float), model
    # Every group of the config can be planned within its budget.
    plan = Plan(config)
    weight = registry_weight(plan.config, plan.runs_spec["dtype"])
    budget = budget_bytes(plan.runs_spec)
    for specs in plan.timing_groups.values():
        members = [tuple(s.partition("@")[0].split("/", 1)) for s in specs]
        parts = split_group(
            members, plan.pair_models, weight, budget, fixed_runs(members, plan.baseline)
        )
        assert all(group_weight_bytes(p, plan.pair_models, weight) <= budget for p in parts)


# -- splitting ----------------------------------------------------------------------------------


def test_a_group_within_budget_is_unchanged() -> None:
    config = load("paper_dsbd")
    weight = registry_weight(config, "float16")
    members = [("llama2-13b", m) for m in with_control(config["runs"]["methods"])]
    fixed = fixed_runs(members, "vanilla")
    assert fixed == [("llama2-13b", "vanilla"), ("llama2-13b", "vanilla-aa")]
    parts = split_group(members, models_from(config), weight, budget_bytes(config["runs"]), fixed)
    assert parts == [members]
    # No budget: never split.
    assert split_group(members, models_from(config), weight, None, fixed) == [members]


def test_the_draft_design_group_splits_into_parts_that_fit() -> None:
    config = load("paper_draft_design")
    members = draft_design_group(config)
    # The group built here is the plan's own T=0 SQuAD group.
    plan = Plan(config)
    assert set(members) == set(plan_group(plan, ("llama2-13b", "squad", 0.0, 0)))
    models_of, weight = models_from(config), registry_weight(config, "float16")
    budget = budget_bytes(config["runs"])
    assert group_weight_bytes(members, models_of, weight) > budget  # ~90 GB of weights
    fixed = [("llama2-13b", "vanilla"), ("llama2-13b", "vanilla-aa")]

    parts = split_group(members, models_of, weight, budget, fixed)

    assert parts == split_group(members, models_of, weight, budget, fixed)  # deterministic
    # 26 GB of target and 64 GB of drafts in 42 GB of room beside it: two parts at least.
    assert len(parts) == 2
    for part in parts:
        assert group_weight_bytes(part, models_of, weight) <= budget
        assert part[:2] == fixed
        assert part == [m for m in members if m in part]  # member order
    others = [m for part in parts for m in part if m not in fixed]
    assert sorted(others) == sorted(m for m in members if m not in fixed)  # each once
    # A draft's runs (its sps at every lookahead) are in one part.
    part_of_draft: dict[str, set[int]] = {}
    for i, part in enumerate(parts):
        for run in part:
            if run not in fixed:
                part_of_draft.setdefault(config["pairs"][run[0]]["draft"], set()).add(i)
    assert len(part_of_draft) == 17
    assert all(len(parts_) == 1 for parts_ in part_of_draft.values())
    # A plan that splits its groups splits this one so.
    planned = [g for k, g in plan.timing_groups.items() if k[:4] == ("llama2-13b", "squad", 0.0, 0)]
    if len(planned) > 1:
        assert [set(s.partition("@")[0] for s in g) for g in planned] == [
            {f"{p}/{m}" for p, m in part} for part in parts
        ]


def test_sps_and_dsbd_of_one_draft_stay_together() -> None:
    """The T=1 groups: the base pair's sps (runs) and its dsbd at every lookahead share the
    base draft."""
    plan = Plan(load("paper_draft_design"))
    members = plan_group(plan, ("llama2-13b", "mtbench", 1.0, 0))
    weight = registry_weight(plan.config, "float16")
    fixed = fixed_runs(members, plan.baseline)
    parts = split_group(members, plan.pair_models, weight, budget_bytes(plan.runs_spec), fixed)
    base_runs = [m for m in members if m[0] == "llama2-13b" and m not in fixed]
    assert {"sps", "dsbd"} <= {method for _, method in base_runs}
    assert sum(all(r in part for r in base_runs) for part in parts) == 1


SIZES = {"target": 26e9, "small": 1e9, "mid": 10e9, "big": 20e9}


def synthetic_models(pair: str, method: str) -> list[str]:
    return ["target"] + ([] if method.startswith("vanilla") else [pair])


def synthetic_weight(name: str) -> int | None:
    return int(SIZES[name]) if name in SIZES else None


def test_a_run_over_budget_alone_raises_naming_it() -> None:
    members = [("target", "vanilla"), ("target", "vanilla-aa"), ("small", "sps"), ("big", "sps")]
    fixed = members[:2]
    with pytest.raises(ValueError, match=r"run big/sps .*big 20\.00 GB.*46\.00 GB.*40\.00 GB"):
        split_group(members, synthetic_models, synthetic_weight, int(40e9), fixed)
    parts = split_group(members, synthetic_models, synthetic_weight, int(46e9), fixed)
    assert parts == [[*fixed, ("small", "sps")], [*fixed, ("big", "sps")]]


def test_first_fit_decreasing_packs_the_large_drafts_first() -> None:
    members = [("target", "vanilla"), ("target", "vanilla-aa")]
    members += [("small", "sps"), ("mid", "sps"), ("big", "sps"), ("small", "dsbd")]
    fixed = members[:2]
    # Room beside the target: 21 GB. Decreasing: big (20) + small (1); then mid (10).
    parts = split_group(members, synthetic_models, synthetic_weight, int(47e9), fixed)
    assert parts == [
        [*fixed, ("small", "sps"), ("big", "sps"), ("small", "dsbd")],
        [*fixed, ("mid", "sps")],
    ]


def test_a_model_without_parameters_raises_naming_it() -> None:
    config = load("paper_draft_design")
    del config["models"]["registry"]["llama2-7b-chat"]["parameters"]
    members = draft_design_group(config)
    fixed = members[:2]
    weight = registry_weight(config, "float16")
    with pytest.raises(ValueError, match=r"'llama2-7b-chat'.*add `parameters:`"):
        split_group(members, models_from(config), weight, budget_bytes(config["runs"]), fixed)
    # Without a budget nothing needs the sizes.
    assert split_group(members, models_from(config), weight, None, fixed) == [members]


def test_fixed_runs_must_be_members() -> None:
    members = [("target", "vanilla"), ("small", "sps")]
    with pytest.raises(ValueError, match="not members"):
        split_group(members, synthetic_models, synthetic_weight, int(1e9), [("x", "vanilla")])


# -- the cost estimate --------------------------------------------------------------------------


def test_cost_rows_and_table() -> None:
    config = load("paper_draft_design")
    unsized = copy.deepcopy(config)
    del unsized["runs"]["gpu_memory_gb"]
    # Unsplit (no GPU size given), every group holds the target and all 17 drafts: over 80 GB.
    unsplit = [c for c in job_costs(Plan(unsized)) if c.rule == "generate"]
    assert len(unsplit) == 6
    assert all(len(c.models) == 18 and c.memory_bytes > 80e9 for c in unsplit)

    plan = Plan(config)
    costs = job_costs(plan)
    generate = [c for c in costs if c.rule == "generate"]
    assert len(generate) == len(plan.timing_groups)
    assert len([c for c in costs if c.rule == "draft_quality"]) == len(plan.study.members)
    if len(plan.timing_groups) > 6:  # the plan splits its groups: every part fits
        assert all(c.memory_bytes <= 80e9 for c in generate)

    table = cost_table_markdown("paper_draft_design", costs)
    lines = table.splitlines()
    assert sum(line.startswith("| generate |") for line in lines) == len(generate)
    assert sum(line.startswith("| draft_quality |") for line in lines) == 17
    total = next(line for line in lines if line.startswith("| **total**"))
    assert f"{sum(c.tokens for c in costs):,}" in total
    assert f"{sum(c.gpu_hours for c in costs):.2f}" in total
    assert "not measured" in table and "roofline" in table
    assert "teacher_corpus" in table  # named as not estimated


def test_cost_arithmetic_of_one_group() -> None:
    """vicuna-13b at T=0: 7 runs x 80 questions x 1024 tokens x 2 turns, plus 3 warm-ups of 8
    tokens per run; vanilla twice at the target's bytes, five EAGLE-family runs with the
    head's."""
    plan = Plan(load("paper_ddd"))
    cost = next(c for c in job_costs(plan) if c.job == "vicuna-13b/mtbench/T0.0-s0")
    assert cost.runs == 7
    assert cost.tokens == 7 * (80 * 1024 * 2 + 3 * 8)
    assert cost.weight_bytes == int(13.0e9 * 2) + int(369.6e6 * 2)
    assert cost.memory_bytes == cost.weight_bytes + 12_000_000_000
    per_run = 80 * 1024 * 2 + 3 * 8
    seconds = per_run * (2 * 26e9 + 5 * (26e9 + 739.2e6)) / 2.0e12
    assert cost.gpu_hours == pytest.approx(seconds / 3600)


def test_unknown_weights_leave_the_cost_open() -> None:
    config = load("paper_dsbd")
    del config["models"]["registry"]["opt-125m"]["parameters"]
    del config["runs"]["gpu_memory_gb"]  # with it the plan cannot size the group
    costs = job_costs(Plan(config))
    opt = [c for c in costs if "opt-125m" in c.models]
    assert opt and all(c.weight_bytes is None and c.gpu_hours is None for c in opt)
    table = cost_table_markdown("paper_dsbd", costs)
    assert "Unknown (no `parameters:`): opt-125m" in table
    assert memory.DTYPE_BYTES["float16"] == 2.0
