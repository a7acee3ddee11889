"""The `gpu-check` bench (`make gpu-check`): a CUDA preflight that fails when the engine is
broken on the GPU. Each check is one function returning a CheckResult; CHECKS lists them with a
time budget each (6.5 minutes together on one H100, within an 8-minute preflight; budgets set
from estimates, not yet from an H100 run):

  vanilla-hf     our vanilla = transformers' greedy generate (LLaMA head_dim 128, OPT;
                 float32 and float16, near ties in the reference's logits allowed)
  lossless       sps, eagle, eagle2, ddd, ddd_async = vanilla at T=0 (same families, dtypes)
  sdpa-tree      a tree verification forward: sdpa = eager = each path run alone
  sync-counts    CUDA syncs per round of every method, over whole generations, within bounds
  sync-free      no sync inside a draft level (tree methods) or a dsbd draft forward
  async-trees    ddd_async = ddd with the head's stream delayed (no stale flag read)
  fp16-head      an fp16 EAGLE head drafts as the fp32 one at positions 1,000-2,000
  7b-timing      random LLaMA-2-7B shapes in float16: decode ms/token, tree verification ms
  paper-memory   every timing group of config/paper_*.yaml fits gpu_memory_gb and this GPU
  energy         NVML: a matmul burst's energy and power, a generation's J/token

Reading it: one table at the end, one line per check (PASS, FAIL or SKIP, what broke or what
was measured, seconds). It exits 1 when a check fails and 2 without CUDA. `--device cpu` runs
the checks that need no GPU (vanilla-hf, lossless, sdpa-tree in float32, paper-memory) and
skips the others ("needs CUDA"); `--only NAME ...` runs some checks.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from specrepro.bench.gpu_check_async import check_async_trees
from specrepro.bench.gpu_check_core import PAPER_CONFIGS, SLEEP_CYCLES, CheckContext, CheckResult
from specrepro.bench.gpu_check_energy import check_energy
from specrepro.bench.gpu_check_exact import check_lossless_is_vanilla, check_vanilla_is_transformers
from specrepro.bench.gpu_check_head import check_head_fp16
from specrepro.bench.gpu_check_memory import check_paper_memory
from specrepro.bench.gpu_check_sdpa import check_sdpa_tree_masks
from specrepro.bench.gpu_check_syncs import check_sync_counts, check_sync_free

# Re-exported (`as`): bench/launches.py wraps runner forwards with it too.
from specrepro.bench.gpu_check_syncs import wrapped_forward as wrapped_forward
from specrepro.bench.gpu_check_timing import check_real_shape_timing

NEEDS_CUDA = (
    "gpu-check needs a CUDA device; the CPU proxy runs in the test suite (tests/test_host_reads.py)"
    "; `--device cpu` runs the checks that need no GPU"
)
EXIT_NO_CUDA = 2
EXIT_FAILED = 1


@dataclass(frozen=True)
class Check:
    name: str  # what --only takes
    run: Callable[[CheckContext], CheckResult]
    budget_s: float  # on one H100; the table shows the seconds taken
    needs_cuda: bool


CHECKS: list[Check] = [
    Check("vanilla-hf", check_vanilla_is_transformers, 30, needs_cuda=False),
    Check("lossless", check_lossless_is_vanilla, 90, needs_cuda=False),
    Check("sdpa-tree", check_sdpa_tree_masks, 15, needs_cuda=False),
    Check("sync-counts", check_sync_counts, 30, needs_cuda=True),
    Check("sync-free", check_sync_free, 30, needs_cuda=True),
    Check("async-trees", check_async_trees, 60, needs_cuda=True),
    Check("fp16-head", check_head_fp16, 15, needs_cuda=True),
    Check("7b-timing", check_real_shape_timing, 90, needs_cuda=True),
    Check("paper-memory", check_paper_memory, 5, needs_cuda=False),
    Check("energy", check_energy, 20, needs_cuda=True),
]


def run_check(check: Check, ctx: CheckContext) -> tuple[CheckResult, float]:
    """One check's result and seconds; an exception is that check's FAIL, not the run's end."""
    if check.needs_cuda and ctx.device.type != "cuda":
        return CheckResult(True, "needs CUDA", skipped=True), 0.0
    start = time.perf_counter()
    try:
        result = check.run(ctx)
    except Exception as err:  # noqa: BLE001 - one broken check must not hide the others
        result = CheckResult(False, f"error: {type(err).__name__}: {err}"[:500])
    seconds = time.perf_counter() - start
    # The budgets are an H100's; elsewhere they say nothing.
    if seconds > check.budget_s and ctx.device.type == "cuda":
        result.detail += f" [over its {check.budget_s:g} s budget]"
    return result, seconds


def format_table(rows: list[tuple[str, CheckResult, float]]) -> str:
    """check | result | detail | seconds, one line per check, columns aligned."""
    cells = [("check", "result", "detail", "seconds")]
    cells += [(name, r.verdict, r.detail, f"{s:.1f}") for name, r, s in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def run_gpu_check(args: argparse.Namespace) -> int:
    """The selected checks, then the table; the exit code (0 all passed, 1 one failed, 2 no
    CUDA for a CUDA run)."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(NEEDS_CUDA, file=sys.stderr)
        return EXIT_NO_CUDA
    memory = None
    if device.type == "cuda":
        memory = torch.cuda.get_device_properties(device).total_memory
        print(f"gpu-check on {torch.cuda.get_device_name(device)} (target: {args.model or 'tiny'})")
    else:
        print(f"gpu-check on {device}: the checks that need no GPU")
    ctx = CheckContext(
        device,
        model_path=args.model,
        sleep_cycles=args.sleep_cycles,
        gpu_memory_bytes=memory,
        paper_configs=tuple(args.configs),
    )
    rows = []
    for check in CHECKS:
        if args.only and check.name not in args.only:
            continue
        print(f"running {check.name} ...", file=sys.stderr, flush=True)
        rows.append((check.name, *run_check(check, ctx)))
    print(format_table(rows))
    failed = sum(not r.ok for _, r, _ in rows)
    skipped = sum(r.skipped for _, r, _ in rows)
    print(f"gpu-check: {len(rows) - failed - skipped} passed, {failed} failed, {skipped} skipped")
    return EXIT_FAILED if failed else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "gpu-check", help="pass/fail checks on a CUDA device (see the description above)"
    )
    parser.add_argument("--model", help="a local causal LM folder as the sync checks' target")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu: no-GPU checks")
    parser.add_argument("--only", nargs="+", choices=[c.name for c in CHECKS], metavar="NAME")
    parser.add_argument("--sleep-cycles", type=int, default=SLEEP_CYCLES)
    parser.add_argument("--configs", nargs="+", default=list(PAPER_CONFIGS))
