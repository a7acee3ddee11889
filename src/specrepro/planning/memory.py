"""GPU memory of a timing group, splitting a group that does not fit, and a cost estimate.

A timing group is one `generate` job: it loads the target once and every draft or EAGLE head
its runs need, and times the runs interleaved question by question (README "Timing"). With
many drafts the weights alone can exceed the GPU (the draft-design study: a 13B float16 target
and 17 drafts, ~90 GB, on an 80 GB GPU). `split_group` cuts such a group into parts that each
fit, every part holding the baseline and the A/A control again so that ratios and the control
are still computed within one job. `job_costs` estimates what every job holds and costs.

Plain Python only, like the rest of this package: the Snakefile imports it by path.
Sizes are decimal (1 GB = 1e9 bytes), which undercounts a GPU's "80 GB" (80 GiB, 85.9e9
bytes): a margin in the safe direction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

GB = 1e9

# Bytes per parameter of each runs.dtype (config.schema.yaml), for the weights a job holds and
# reads once per decoding step. int4 is this engine's mode (engine/int4.py): GGUF Q4_1 blocks of
# 32 weights, each 16 bytes of 4-bit codes plus a float16 scale and a float16 minimum, 20 bytes
# per 32 weights = 0.625 (Q4_0, a scale without a minimum, would be 0.5625). That is what the
# int4 kernel reads; the mode is CPU-only and also keeps each layer's float32 weight and the
# embeddings in float32, so its resident memory is far above 0.625 B per parameter.
DTYPE_BYTES: dict[str, float] = {
    "float32": 4.0,
    "bfloat16": 2.0,
    "float16": 2.0,
    "int4": 0.625,
}

# The default reserve on top of the weights (runs.cache_reserve_gb overrides it): KV caches,
# activations, logits, the CUDA context and allocator fragmentation, none of which the weights
# count. It does not scale with the GPU, so it is a fixed amount, sized for batch-1 decoding of
# 7-13B LLaMA-style models up to ~2-4k tokens:
#   - the target's KV cache: 2 (K, V) x layers x hidden x 2 B per token, for a 13B float16
#     model 2*40*5120*2 B = 0.82 MB/token: 2.5 GB at a 3k-token MT-bench second turn (DDD's
#     1024 new tokens per turn), 3.4 GB at LLaMA-2's 4k limit; beams multiply it: DSBD or
#     beam sampling at width 4 over ~1.5k tokens (SQuAD/Spider prompt + 200 new) is 4.9 GB;
#   - every draft keeps its own cache (one ModelRunner per model, run/decoder.py): for the 17
#     draft-design drafts together ~2 MB/token, ~3 GB at 1.5k tokens (a split part has fewer);
#   - activations and logits at batch 1 (a 32k-vocabulary fp32 row per scored position, a
#     prefill's hidden states): well under 1 GB; CUDA context and fragmentation: 1-2 GB.
# The worst of these sums to ~9-10 GB; 12 GB leaves a margin (15% of an 80 GB GPU).
DEFAULT_CACHE_RESERVE_GB = 12.0

Run = tuple[str, str]


# -- weights -------------------------------------------------------------------------------


def model_weight_bytes(entry: dict, dtype: str) -> int | None:
    """A registry entry's weight bytes at `dtype`: its declared `parameters` (a count such as
    13.0e9) times DTYPE_BYTES[dtype]; None when the entry declares none. The count is what the
    loaded model holds: an EAGLE head shares the target's embedding and lm_head
    (models/eagle_head.py), so its count leaves them out."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}: one of {', '.join(DTYPE_BYTES)}")
    count = entry.get("parameters")
    if count is None:
        return None
    if isinstance(count, bool) or not isinstance(count, int | float) or count <= 0:
        # YAML 1.1 (PyYAML) reads 13.0e9 as text; 13.0e+9 is a number.
        hint = " (write the exponent with a sign: 13.0e+9)" if isinstance(count, str) else ""
        raise ValueError(f"`parameters` must be a positive number, not {count!r}{hint}")
    return int(round(count * DTYPE_BYTES[dtype]))


def registry_weight(config: dict, dtype: str) -> Callable[[str], int | None]:
    """name -> weight bytes at `dtype` of models.registry[name] (None: no `parameters`)."""
    registry = config["models"]["registry"]
    return lambda name: model_weight_bytes(registry[name], dtype)


def _missing(name: str) -> ValueError:
    return ValueError(
        f"model {name!r} has no size: add `parameters:` (its parameter count, e.g. 6.74e9) to "
        f"models.registry.{name} so that its timing group can be sized to runs.gpu_memory_gb"
    )


def _gb(n: float) -> str:
    return f"{n / GB:.2f} GB"


# -- the memory budget ------------------------------------------------------------------------


def reserve_bytes(runs_spec: dict) -> int:
    """Memory kept free beside the weights: runs.cache_reserve_gb, default
    DEFAULT_CACHE_RESERVE_GB (12 GB: KV caches, activations, CUDA context; see its comment)."""
    reserve = runs_spec.get("cache_reserve_gb", DEFAULT_CACHE_RESERVE_GB)
    if reserve < 0:
        raise ValueError(f"runs.cache_reserve_gb must be >= 0, not {reserve}")
    return int(reserve * GB)


def budget_bytes(runs_spec: dict) -> int | None:
    """The weight bytes one generate job may hold: runs.gpu_memory_gb less the reserve
    (`reserve_bytes`); None without runs.gpu_memory_gb (groups are then never split)."""
    memory = runs_spec.get("gpu_memory_gb")
    if memory is None:
        return None
    budget = int(memory * GB) - reserve_bytes(runs_spec)
    if budget <= 0:
        raise ValueError(
            f"runs.gpu_memory_gb ({memory}) leaves no room for weights after the "
            f"{_gb(reserve_bytes(runs_spec))} reserve (runs.cache_reserve_gb)"
        )
    return budget


# -- splitting a timing group ---------------------------------------------------------------


def fixed_runs(
    members: Iterable[Run], baseline: str, controls: Iterable[str] = ("vanilla-aa",)
) -> list[Run]:
    """The runs every part of a split group repeats: the baseline and the A/A control."""
    methods = {baseline, *controls}
    return [m for m in members if m[1] in methods]


def group_weight_bytes(
    members: Iterable[Run],
    models_of: Callable[[str, str], list[str]],
    weight: Callable[[str], int | None],
) -> int | None:
    """The weight bytes of a group's distinct models (each loaded once); None if one is
    unknown."""
    models = dict.fromkeys(n for m in members for n in models_of(*m))
    sizes = [weight(n) for n in models]
    return None if None in sizes else sum(sizes)


def split_group(
    members: list[Run],
    models_of: Callable[[str, str], list[str]],
    weight: Callable[[str], int | None],
    budget_bytes: int | None,
    fixed: list[Run],
) -> list[list[Run]]:
    """A timing group's runs, (pair, method) each, as parts that each fit `budget_bytes` of
    weights: [members] unchanged when the group's distinct models fit (or no budget is set).

    Otherwise every part holds the `fixed` runs (baseline and A/A control: each part is its
    own timing group, whose ratios and control need them) and some of the others, each other
    run in exactly one part, in member order. Runs that share a model beyond the fixed runs'
    (a draft's sps at several gammas and its dsbd) stay in one part: a model is loaded once
    per job, and the runs compared across a draft's settings stay timed together. Such runs
    form one unit (connected by shared models); units are packed first-fit decreasing, by
    weight, ties in member order: fewest parts in practice (FFD needs at most 11/9 of the
    optimum + 1), and every extra part repeats the fixed runs and reloads the target, so fewer
    parts is cheaper. The parts come in the order of their first non-fixed run.

    Raises ValueError for a model without a size, a run whose models (with the fixed runs')
    exceed the budget, and fixed runs not among the members."""
    members = list(members)
    if budget_bytes is None:
        return [members]
    absent = [f for f in fixed if f not in members]
    if absent:
        raise ValueError(f"fixed runs {absent} are not members of the group")
    run_models = {m: list(dict.fromkeys(models_of(*m))) for m in members}
    sizes: dict[str, int] = {}
    for name in dict.fromkeys(n for m in members for n in run_models[m]):
        size = weight(name)
        if size is None:
            raise _missing(name)
        sizes[name] = size
    if sum(sizes.values()) <= budget_bytes:
        return [members]

    fixed_set = set(fixed)
    fixed_models = dict.fromkeys(n for f in fixed for n in run_models[f])
    base = sum(sizes[n] for n in fixed_models)
    for run in members:
        names = list(dict.fromkeys([*run_models[run], *fixed_models]))
        need = sum(sizes[n] for n in names)
        if need > budget_bytes:
            detail = ", ".join(f"{n} {_gb(sizes[n])}" for n in names)
            raise ValueError(
                f"run {run[0]}/{run[1]} cannot fit one GPU: its models with the baseline's "
                f"and control's ({detail}) need {_gb(need)} of weights, over the budget of "
                f"{_gb(budget_bytes)} (runs.gpu_memory_gb less runs.cache_reserve_gb)"
            )

    # Units: the non-fixed runs connected by the non-fixed models they share (union-find).
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    others = [m for m in members if m not in fixed_set]
    extra = {m: [n for n in run_models[m] if n not in fixed_models] for m in others}
    for names in extra.values():
        for name in names[1:]:
            parent[find(name)] = find(names[0])
    units: dict[str | None, list[Run]] = {}
    for run in others:
        units.setdefault(find(extra[run][0]) if extra[run] else None, []).append(run)
    unit_weight = {
        key: sum(sizes[n] for n in dict.fromkeys(n for r in runs for n in extra[r]))
        for key, runs in units.items()
    }
    first = {key: members.index(runs[0]) for key, runs in units.items()}
    for key, runs in units.items():
        if base + unit_weight[key] > budget_bytes:
            raise ValueError(
                f"runs {[f'{p}/{m}' for p, m in runs]} share models and together with the "
                f"baseline's and control's need {_gb(base + unit_weight[key])}, over the "
                f"budget of {_gb(budget_bytes)}"
            )

    bins: list[list[str | None]] = []
    loads: list[int] = []
    for key in sorted(units, key=lambda k: (-unit_weight[k], first[k])):
        for i, load in enumerate(loads):
            if load + unit_weight[key] <= budget_bytes:
                bins[i].append(key)
                loads[i] += unit_weight[key]
                break
        else:
            bins.append([key])
            loads.append(base + unit_weight[key])
    bins.sort(key=lambda keys: min(first[k] for k in keys))
    unit_of = {run: key for key, runs in units.items() for run in runs}
    return [[m for m in members if m in fixed_set or unit_of[m] in keys] for keys in bins]
