"""The paper configs' memory preflight: every timing group of config/paper_*.yaml (as the plan
splits it, planning/memory.py) fits its config's `runs.gpu_memory_gb` and this GPU.

A group holds its distinct models' weights (registry `parameters` x the runs dtype's bytes)
plus the reserve for KV caches, activations and the CUDA context (runs.cache_reserve_gb, 12 GB
by default). The plan keeps the weights within gpu_memory_gb less the reserve; this check
recomputes that and holds it against the GPU's real total memory (torch's
get_device_properties(...).total_memory), so that a config sized for an 80 GB GPU is not run
on a smaller one. Plain arithmetic: it runs anywhere, given a total memory (none on the CPU).
"""

from __future__ import annotations

from pathlib import Path

from specrepro.bench.gpu_check_core import CheckContext, CheckResult, failed
from specrepro.config import load_config
from specrepro.planning.memory import GB, group_weight_bytes, registry_weight, reserve_bytes
from specrepro.planning.plan import Plan


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


def group_needs(config: dict) -> dict[str, tuple[int | None, int]]:
    """Each timing group (target/dataset/group name) of the config's plan: (weight bytes, None
    if a model has no size; reserve bytes)."""
    plan = Plan(config)
    weight = registry_weight(plan.config, plan.runs_spec["dtype"])
    reserve = reserve_bytes(plan.runs_spec)
    needs = {}
    for key, specs in plan.timing_groups.items():
        members = [tuple(spec.partition("@")[0].split("/", 1)) for spec in specs]
        name = f"{key[0]}/{key[1]}/{plan.group_name(key)}"
        needs[name] = (group_weight_bytes(members, plan.pair_models, weight), reserve)
    return needs


def config_failures(path: str, total: int | None) -> tuple[list[str], tuple[int, str]]:
    """What does not fit in one config, and its largest group (bytes needed, name)."""
    stem = Path(path).stem
    try:
        config = load_config(path)
        needs = group_needs(config)
    except ValueError as err:  # ConfigError, or a run no split can fit (split_group)
        return [f"{stem}: {err}"], (0, "")
    memory = config["runs"].get("gpu_memory_gb")
    failures, largest = [], (0, "")
    for name, (weights, reserve) in needs.items():
        if weights is None:
            failures.append(f"{stem} {name}: a model without `parameters`, size unknown")
            continue
        need = weights + reserve
        largest = max(largest, (need, f"{stem} {name}"))
        held = f"{_gb(weights)} of weights + {_gb(reserve)} reserve"
        if memory is not None and need > memory * GB:
            failures.append(f"{stem} group {name}: {held} > runs.gpu_memory_gb {memory} GB")
        if total is not None and need > total:
            failures.append(f"{stem} group {name}: {held} > this GPU's {_gb(total)}")
    return failures, largest


def check_paper_memory(ctx: CheckContext) -> CheckResult:
    """Every group of every paper config fits its gpu_memory_gb and ctx.gpu_memory_bytes."""
    failures, largest, checked = [], (0, ""), 0
    for path in ctx.paper_configs:
        if not Path(path).is_file():
            failures.append(f"{path}: not found (run from the repository root)")
            continue
        bad, big = config_failures(path, ctx.gpu_memory_bytes)
        failures += bad
        largest = max(largest, big)
        checked += 1
    if failures:
        return failed(failures)
    gpu = "no GPU" if ctx.gpu_memory_bytes is None else f"this GPU: {_gb(ctx.gpu_memory_bytes)}"
    return CheckResult(
        True,
        f"every timing group of {checked} configs fits; largest {largest[1]} needs "
        f"{_gb(largest[0])} ({gpu})",
    )
