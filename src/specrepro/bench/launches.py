"""The `launches` bench: kernel launches per round and per draft level, and host time per round.

Every method generates --new-tokens tokens from one random prompt on tiny random models (those
of gpu-check: gpu_check_models), at T=0, or T=1 for the methods that need sampling (beam,
dsbd), once unprofiled (for the times) and once under torch.profiler (for the counts).

What a launch is depends on the device:
  - CUDA: a kernel the GPU ran (a profiler event of activity "kernel" on the device); copies
    and fills the GPU ran ("gpu_memcpy", "gpu_memset": host reads included) are counted apart,
    in memcpy and memset. A kernel belongs to the draft level in which the operator that
    launched it was called.
  - CPU: there are no kernels; a "CPU op" is an aten operator call that would launch a kernel
    on a GPU: the outermost calls that compute (linear -> matmul -> mm counts once), not views,
    allocations, no-op conversions or host reads of a scalar. Each is at least one kernel on a
    GPU, mostly exactly one (a composite such as isfinite is several): a proxy of the CUDA
    count, labelled as such; compare CUDA numbers only with CUDA numbers.

Reading it: a round is one verification forward of the target (GenerationResult.
verify_forwards); every per-round number is the generation's total over its rounds, so the
prompt's forward is spread over them. A draft level is one head forward with its top-k and beam
update for the EAGLE family (the levels engine/host_reads.level_region() wraps: not the round's
first head forward, which reads the accepted tokens), one draft-model forward for sps and dsbd
(dsbd's prompt read included); vanilla and beam draft nothing ("-"). `levels/round` is how
many a round ran, `/level` what one level launched. CPU ms is process CPU time (all threads)
and wall ms the generation's synchronized wall time, both per round, from the unprofiled run.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import functools
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import ProfilerActivity, profile, record_function
from transformers import LlamaConfig

from specrepro.bench.gpu_check_models import CheckModels, check_decoder, check_models
from specrepro.engine.host_reads import checked_levels
from specrepro.engine.runner import ForwardOutput, ModelRunner
from specrepro.engine.timing import synchronize
from specrepro.models.eagle_head import build_head, head_config_for
from specrepro.planning.methods import method_spec
from specrepro.run.decoder import Decoder

METHODS = ("vanilla", "sps", "beam", "eagle", "eagle2", "ddd", "ddd_async", "dsbd")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
LEVEL = "specrepro::draft_level"  # the profiler range around one draft level
PROMPT_LEN = 24
SEED = 0
DEVICE_KINDS = {"kernel": "launches", "gpu_memcpy": "memcpy", "gpu_memset": "memset"}
HOST_CALLS = ("cpu_op", "user_annotation")  # what a device event's linked correlation id names
# Calls that launch nothing on a GPU, beyond views (found from the schema: see _is_view):
# allocations, reads of a scalar to the host (a memcpy on CUDA), metadata and no-op conversions.
NO_LAUNCH = frozenset(
    "aten::" + name
    for name in (
        "empty", "empty_strided", "empty_like", "new_empty", "resize_", "set_", "_unsafe_view",
        "detach_", "result_type", "item", "_local_scalar_dense", "is_nonzero",
    )
)  # fmt: skip


@dataclass
class Counts:
    """What one profiled generation launched, and how much of it inside draft levels."""

    launches: int  # CUDA kernels, or CPU ops
    level_launches: int
    levels: int
    memcpy: int = 0
    memset: int = 0


def launch_models(
    device: torch.device, dtype: torch.dtype, config: LlamaConfig | None = None
) -> CheckModels:
    """gpu-check's tiny random target, draft and EAGLE head, in `dtype`."""
    models = check_models(device, config=config)
    if dtype == torch.float32:
        return models
    target, draft = models.target.to(dtype), models.draft.to(dtype)
    torch.manual_seed(2)  # the head's seed in check_models
    return CheckModels(target, draft, build_head(head_config_for(target), target))


def _temperature(method: str) -> float:
    return 1.0 if method_spec(method).needs_sampling else 0.0


@contextlib.contextmanager
def _ranged_forwards(runner: ModelRunner) -> Iterator[None]:
    """Each forward of this runner inside a LEVEL range, for the block."""
    forward = runner.forward

    def ranged(*args: Any, **kwargs: Any) -> ForwardOutput:
        with record_function(LEVEL):
            return forward(*args, **kwargs)

    runner.forward = ranged  # type: ignore[method-assign]
    try:
        yield
    finally:
        del runner.forward  # the class's forward again


@contextlib.contextmanager
def marked_levels(decoder: Decoder) -> Iterator[None]:
    """Each draft level of the decoder's method inside a profiler range named LEVEL."""
    if "head" in decoder.roles:
        with checked_levels(lambda: record_function(LEVEL)):
            yield
    elif decoder.module.NEEDS_DRAFT and decoder.draft is not None:
        with _ranged_forwards(decoder.draft):
            yield
    else:
        yield


@functools.cache
def _is_view(name: str) -> bool:
    """Whether an aten operator returns a view of its input (a schema return aliasing an input,
    not written to): metadata only, no kernel."""
    packet = getattr(torch.ops.aten, name.removeprefix("aten::"), None)
    if packet is None:
        return False
    for overload in packet.overloads():
        returns = getattr(packet, overload)._schema.returns
        if returns and all(r.alias_info is not None and not r.alias_info.is_write for r in returns):
            return True
    return False


def _computes(event: FunctionEvent) -> bool:
    name = event.name
    return name.startswith("aten::") and name not in NO_LAUNCH and not _is_view(name)


def cpu_ops(events: Sequence[FunctionEvent]) -> list[FunctionEvent]:
    """The aten calls that would launch a kernel on a GPU: the outermost calls that compute.
    What a computing call runs inside (linear's matmul and mm, an add's copy of its scalar) is
    its own work; inside a call that does not compute (a view, `to` that copies), look deeper."""
    found: list[FunctionEvent] = []

    def visit(event: FunctionEvent) -> None:
        if _computes(event):
            found.append(event)
            return
        for child in event.cpu_children:
            visit(child)

    for event in events:
        if event.cpu_parent is None:
            visit(event)
    return found


class _Levels:
    """The draft levels' time ranges on the host (they do not nest or overlap)."""

    def __init__(self, events: Sequence[FunctionEvent]) -> None:
        spans = sorted(
            (e.time_range.start, e.time_range.end)
            for e in events
            if e.name == LEVEL and e.activity_type == "user_annotation"
        )
        self.starts = [s for s, _ in spans]
        self.ends = [e for _, e in spans]

    def __len__(self) -> int:
        return len(self.starts)

    def holds(self, t: float | None) -> bool:
        if t is None:
            return False
        i = bisect.bisect_right(self.starts, t) - 1
        return i >= 0 and t < self.ends[i]


def count_launches(events: Sequence[FunctionEvent], cuda: bool) -> Counts:
    """Launches (CUDA kernels, or CPU ops without `cuda`) of a profile, in and out of levels."""
    levels = _Levels(events)
    if not cuda:
        starts = [e.time_range.start for e in cpu_ops(events)]
        inside = sum(levels.holds(t) for t in starts)
        return Counts(len(starts), inside, len(levels))
    # A device event names the host call that launched it by its correlation id: it sits in a
    # level when that call started in one (the way torch.profiler ties kernels to operators).
    called_at = {e.id: e.time_range.start for e in events if e.activity_type in HOST_CALLS}
    totals = dict.fromkeys(DEVICE_KINDS.values(), 0)
    inside = 0
    for event in events:
        kind = DEVICE_KINDS.get(event.activity_type or "")
        if kind is None:
            continue
        totals[kind] += 1
        if kind == "launches" and levels.holds(called_at.get(event.linked_correlation_id)):
            inside += 1
    if not totals["launches"]:
        raise RuntimeError("the profiler recorded no CUDA kernel (is CUPTI available?)")
    return Counts(totals["launches"], inside, len(levels), totals["memcpy"], totals["memset"])


def profiled(decoder: Decoder, ids: list[int], new_tokens: int) -> tuple[int, Counts]:
    """One generation under the profiler: its rounds and its launch counts."""
    device = decoder.target.device
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with marked_levels(decoder), profile(activities=activities) as prof:
        result, _ = decoder.generate(ids, new_tokens, SEED)
        synchronize(device)  # every kernel done before the profiler stops
    return result.verify_forwards, count_launches(prof.events(), device.type == "cuda")


def measure(models: CheckModels, method: str, new_tokens: int) -> dict:
    """One method's row: launch counts and host times, totals and per round."""
    decoder = check_decoder(models, method, _temperature(method), {})
    ids = prompt(decoder.target.vocab_size)
    # Warm-up at full length: lazy inits, first calls and the cache's allocation at its size.
    decoder.generate(ids, new_tokens, SEED)
    cpu = time.process_time()
    result, timer = decoder.generate(ids, new_tokens, SEED)
    cpu = time.process_time() - cpu
    rounds, counts = profiled(decoder, ids, new_tokens)
    has_levels = counts.levels > 0
    return {
        "method": method,
        "temperature": _temperature(method),
        "rounds": rounds,
        **asdict(counts),
        "launches_per_round": counts.launches / rounds,
        "levels_per_round": counts.levels / rounds if has_levels else None,
        "launches_per_level": counts.level_launches / counts.levels if has_levels else None,
        "memcpy_per_round": counts.memcpy / rounds,
        "memset_per_round": counts.memset / rounds,
        "timed_rounds": result.verify_forwards,
        "cpu_ms_per_round": 1e3 * cpu / result.verify_forwards,
        "wall_ms_per_round": 1e3 * timer.total / result.verify_forwards,
    }


def prompt(vocab_size: int) -> list[int]:
    generator = torch.Generator().manual_seed(SEED)
    return torch.randint(0, vocab_size, (PROMPT_LEN,), generator=generator).tolist()


def run_launches(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    models = launch_models(device, DTYPES[args.dtype])
    unit = "CUDA kernels" if device.type == "cuda" else "CPU ops"
    rows = [measure(models, method, args.new_tokens) for method in args.methods]
    return {
        "device": str(device), "dtype": args.dtype, "unit": unit,
        "new_tokens": args.new_tokens, "prompt_len": PROMPT_LEN, "rows": rows,
    }  # fmt: skip


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_launches(report: dict, args: argparse.Namespace) -> None:
    unit, cuda = report["unit"], report["unit"] == "CUDA kernels"
    what = (
        "kernels the GPU ran (memcpy and memset apart)"
        if cuda
        else "aten calls that would launch a GPU kernel; not CUDA kernels"
    )
    print(
        f"launches on {report['device']} ({report['dtype']}, tiny random models, "
        f"{report['new_tokens']} new tokens): {unit} = {what}"
    )
    columns = ["method", "T", "rounds", "levels/round", f"{unit}/round", f"{unit}/level"]
    columns += ["memcpy/round", "memset/round"] if cuda else []
    columns += ["CPU ms/round", "wall ms/round"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for row in report["rows"]:
        cells = [row["method"], f"{row['temperature']:g}", str(row["rounds"])]
        cells += [_cell(row["levels_per_round"], 2), _cell(row["launches_per_round"])]
        cells += [_cell(row["launches_per_level"])]
        if cuda:
            cells += [_cell(row["memcpy_per_round"]), _cell(row["memset_per_round"])]
        cells += [_cell(row["cpu_ms_per_round"], 2), _cell(row["wall_ms_per_round"], 2)]
        print("| " + " | ".join(cells) + " |")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "launches", help="kernel launches per round and per draft level, host time per round"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--out", help="also write the numbers as JSON")
