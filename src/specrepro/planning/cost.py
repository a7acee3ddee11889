"""What a config's jobs hold and cost: one row per generate job (and per draft-quality job)
with its models, weight and memory bytes at the run dtype, the tokens it generates and a
GPU-hour estimate from the memory-bound roofline of batch-1 decoding (every token reads all
the weights once). An estimate, labelled as one, until a run measures it.

Plain Python only, like the rest of this package: the Snakefile imports it by path.
"""

from __future__ import annotations

from dataclasses import dataclass

from specrepro.placement import job_placement

from .datasets import dataset_turns, full_size
from .memory import GB, registry_weight, reserve_bytes

# Peak memory bandwidth (bytes/s) by runs.gpu, for the memory-bound roofline of batch-1
# decoding. Names compare without case, spaces, "-" or "_".
GPU_BANDWIDTH: dict[str, float] = {
    "A100-80GB": 2.0e12,  # SXM 2.04 TB/s, PCIe 1.94 TB/s
    "A100-40GB": 1.555e12,
    "H100": 3.35e12,  # SXM (H100 PCIe: 2.0 TB/s)
    "H200": 4.8e12,
    "A40": 0.696e12,
}
DEFAULT_GPU = "A100-80GB"

# A question's turns each generate up to max_new_tokens (run/question_run.py): 2 on MT-bench;
# a dataset's size when datasets.NAME.n is null (all), and a jsonl dataset's turns, come from
# planning/datasets.py (its file's records; unknown when the file cannot be read).
# Each run's warm-up generations (runs.warmup, default 1) are 8 tokens each (run/timing_group.py).
WARMUP_TOKENS = 8

# GPU jobs that job_costs does not estimate, and why (the table's caption says so).
OMITTED = {
    "teacher_corpus": "sampling from the target, not timed decoding",
    "latency_profile": "(warm-up + tokens) x repeats one-token forwards per draft shape: minutes",
    "train_draft": "training, not decoding",
    "train_head": "training, not decoding",
    "tune_trees": "tree tuning, bounded by its own settings",
}

# -- the cost estimate ----------------------------------------------------------------------


@dataclass(frozen=True)
class CostBasis:
    """What every row of a cost estimate assumes."""

    gpu: str
    bandwidth: float  # bytes/s
    dtype: str
    reserve_bytes: int
    gpu_memory_bytes: int | None
    repeats: int
    warmup: int
    omitted: tuple[str, ...] = ()  # rules the plan runs that are not estimated


@dataclass(frozen=True)
class JobCost:
    """One job's estimate. weight_bytes, memory_bytes and gpu_hours are None when a model
    has no `parameters`."""

    rule: str
    job: str
    runs: int
    models: tuple[str, ...]
    weight_bytes: int | None
    memory_bytes: int | None
    tokens: int | None  # None: a jsonl dataset whose file could not be read
    gpu_hours: float | None
    basis: CostBasis


def gpu_bandwidth(runs_spec: dict, bandwidth: float | None = None) -> tuple[str, float]:
    """(GPU name, bytes/s): `bandwidth` if given, else runs.gpu's entry in GPU_BANDWIDTH, else
    DEFAULT_GPU's."""
    if bandwidth is not None:
        return runs_spec.get("gpu", "given"), float(bandwidth)
    name = runs_spec.get("gpu", DEFAULT_GPU)
    key = _norm(name)
    for known, value in GPU_BANDWIDTH.items():
        if _norm(known) == key:
            return known, value
    raise ValueError(f"runs.gpu {name!r}: bandwidth unknown; one of {', '.join(GPU_BANDWIDTH)}")


def _norm(name: str) -> str:
    return "".join(c for c in str(name).lower() if c.isalnum())


def questions(config: dict, dataset: str, first: int | None = None) -> int | None:
    """Questions a run decodes: datasets.NAME.n (null: the whole set), or its first `first`;
    None when the set's size is unknown (a jsonl file that cannot be read)."""
    n = config["datasets"][dataset].get("n") or full_size(config, dataset)
    if n is None:
        return None
    return min(n, first) if first else n


def _tokens(config: dict, dataset: str, first: int | None = None) -> int | None:
    """Questions x max_new_tokens x turns of one pass over a run's questions (None: unknown)."""
    n, turns = questions(config, dataset, first), dataset_turns(config, dataset)
    if n is None or turns is None:
        return None
    return n * config["datasets"][dataset]["max_new_tokens"] * turns


def job_costs(plan, bandwidth: float | None = None) -> list[JobCost]:
    """One row per generate job (timing group) and per draft_quality job of a Plan-like object
    (attributes config, runs_spec, timing_groups {(target, dataset, temperature, seed, ...):
    ["pair/method[@N]"]}, pair_models; optional group_name, study and jobs()).

    Tokens: per run, questions (n, or @N for a study run) x max_new_tokens x turns (2 for
    MT-bench) x runs.repeats, plus runs.warmup 8-token warm-ups. Time: the memory-bound
    roofline of batch-1 decoding, every generated token reading the run's models' weights
    (target, and its draft or head) once at the GPU's peak bandwidth. A speculative run is
    costed at that autoregressive rate, with no speedup, and every answer at max_new_tokens:
    both upper-side. Prefill, kernel overheads and bandwidth below peak (HF batch-1 decoding
    reaches perhaps 50-70% of it) are not counted: lower-side."""
    config, runs_spec = plan.config, plan.runs_spec
    dtype = runs_spec["dtype"]
    gpu, bw = gpu_bandwidth(runs_spec, bandwidth)
    memory = runs_spec.get("gpu_memory_gb")
    repeats, warmup = int(runs_spec.get("repeats", 1)), int(runs_spec.get("warmup", 1))
    rules = {job.rule for job in plan.jobs()} if hasattr(plan, "jobs") else set()
    basis = CostBasis(
        gpu=gpu,
        bandwidth=bw,
        dtype=dtype,
        reserve_bytes=reserve_bytes(runs_spec),
        gpu_memory_bytes=int(memory * GB) if memory is not None else None,
        repeats=repeats,
        warmup=warmup,
        omitted=tuple(r for r in OMITTED if r in rules),
    )
    weight = registry_weight(config, dtype)
    costs = []
    for key, specs in plan.timing_groups.items():
        target, dataset, temperature, seed, *rest = key
        runs, tokens, seconds = [], 0, 0.0
        for spec in specs:
            run, _, first = spec.partition("@")
            pair, method = run.split("/", 1)
            runs.append((pair, method))
            one_pass = _tokens(config, dataset, int(first) if first else None)
            run_tokens = None if one_pass is None else one_pass * repeats + warmup * WARMUP_TOKENS
            tokens = None if tokens is None or run_tokens is None else tokens + run_tokens
            sizes = [weight(m) for m in plan.pair_models(pair, method)]
            known = seconds is not None and run_tokens is not None and None not in sizes
            seconds = seconds + run_tokens * sum(sizes) / bw if known else None
        models = tuple(dict.fromkeys(n for r in runs for n in plan.pair_models(*r)))
        if hasattr(plan, "group_name"):  # the result file's stem, with a split group's part
            label = f"{target}/{dataset}/{plan.group_name(key)}"
        else:
            label = f"{target}/{dataset}/T{temperature}-s{seed}" + "".join(f"/{x}" for x in rest)
        costs.append(_row("generate", label, len(runs), models, weight, tokens, seconds, basis))
    costs += _quality_costs(plan, basis)
    return costs


def _row(rule, label, runs, models, weight, tokens, seconds, basis) -> JobCost:
    sizes = [weight(m) for m in models]
    weights = None if None in sizes else sum(sizes)
    return JobCost(
        rule=rule,
        job=label,
        runs=runs,
        models=models,
        weight_bytes=weights,
        memory_bytes=None if weights is None else weights + basis.reserve_bytes,
        tokens=tokens,
        gpu_hours=None if seconds is None else seconds / 3600,
        basis=basis,
    )


def _quality_costs(plan, basis: CostBasis) -> list[JobCost]:
    """draft_quality: each study draft alone in the run's dtype on runs.device (float32 for an
    int4 run: placement.job_placement), answering every
    accuracy dataset's n questions at T=0 without warm-up (training/draft_alone.py); its
    perplexity and agreement on the teacher corpus's holdout are forwards over a few thousand
    tokens, not counted."""
    study = getattr(plan, "study", None)
    if study is None:
        return []
    config = plan.config
    weight = registry_weight(config, job_placement(config)[0])
    datasets = study.spec.get("accuracy", [])
    passes = [_tokens(config, d) for d in datasets]
    tokens = None if None in passes else sum(passes)
    rows = []
    for draft in study.members.values():
        size = weight(draft)
        seconds = None if size is None or tokens is None else tokens * size / basis.bandwidth
        rows.append(_row("draft_quality", draft, 1, (draft,), weight, tokens, seconds, basis))
    return rows


def cost_table_markdown(config_name: str, costs: list[JobCost]) -> str:
    """A markdown table of `costs` with a total row and a caption saying what it assumes:
    an estimate from the bandwidth roofline, not a measurement."""
    basis = costs[0].basis if costs else None
    fits = basis is not None and basis.gpu_memory_bytes is not None
    head = ["rule", "job", "runs", "models", "weights GB", "memory GB", "tokens"]
    head += [f"fits {basis.gpu_memory_bytes / GB:g} GB"] if fits else []
    head += ["GPU-hours (est.)"]
    lines = [f"**{config_name}: estimated GPU cost (memory-bandwidth roofline, not measured)**", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def num(value: float | None, scale: float = 1.0, fmt: str = ".1f") -> str:
        return "?" if value is None else format(value / scale, fmt)

    def count(value: int | None) -> str:
        return "?" if value is None else f"{value:,}"

    for c in costs:
        models = ", ".join(c.models)
        if len(c.models) > 3:
            models = f"{c.models[0]} + {len(c.models) - 1} more"
        row = [c.rule, c.job, str(c.runs), models, num(c.weight_bytes, GB)]
        row += [num(c.memory_bytes, GB), count(c.tokens)]
        if fits:
            fit = c.memory_bytes is not None and c.memory_bytes <= basis.gpu_memory_bytes
            row += ["?" if c.memory_bytes is None else "yes" if fit else "**no**"]
        row += [num(c.gpu_hours, 1.0, ".2f")]
        lines.append("| " + " | ".join(row) + " |")
    hours = [c.gpu_hours for c in costs]
    total_hours = None if None in hours else sum(hours)
    total = ["**total**", f"{len(costs)} jobs", str(sum(c.runs for c in costs)), "", "", ""]
    counts = [c.tokens for c in costs]
    total += [count(None if None in counts else sum(counts))] + ([""] if fits else [])
    total += [f"**{num(total_hours, 1.0, '.2f')}**"]
    lines += ["| " + " | ".join(total) + " |", ""]
    if basis is None:
        return "\n".join(lines)
    unknown = sorted({m for c in costs if c.weight_bytes is None for m in c.models})
    caption = (
        f"Estimate, not a measurement: {basis.gpu} at {basis.bandwidth / 1e12:.3g} TB/s peak "
        f"memory bandwidth, generate jobs and draft_quality (the draft alone) in {basis.dtype}. "
        "Weights from models.registry `parameters` x bytes per parameter; memory = "
        f"weights + {basis.reserve_bytes / GB:g} GB reserve (runs.cache_reserve_gb: KV caches, "
        f"activations, CUDA context). Tokens = questions (n, or the study's first N) x "
        f"max_new_tokens x turns (2 on MT-bench; a jsonl dataset's longest record) x "
        f"{basis.repeats} repeat(s) per run, plus "
        f"{basis.warmup} warm-up(s) of {WARMUP_TOKENS} tokens per run. GPU-hours = tokens x the "
        f"run's models' weight bytes / bandwidth: the batch-1 memory-bound roofline, every "
        f"speculative run at the autoregressive rate (no speedup) and every answer at "
        f"max_new_tokens (upper-side), but at peak bandwidth without prefill or kernel "
        f"overheads (lower-side: batch-1 HF decoding reaches perhaps 50-70% of peak)."
    )
    if basis.omitted:
        caption += " Not estimated: " + "; ".join(f"{r} ({OMITTED[r]})" for r in basis.omitted)
        caption += "."
    if unknown:
        caption += f" Unknown (no `parameters:`): {', '.join(unknown)}."
    if any(c.tokens is None for c in costs):
        caption += " Tokens ?: a jsonl dataset whose file could not be read (its size unknown)."
    return "\n".join([*lines, caption, ""])
