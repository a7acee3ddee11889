"""Benchmarks: ratios measured in one run, on the same prompts, machine and models.

  python -m specrepro.bench forward --contexts 128 2048 --dtypes float32 bfloat16
  python -m specrepro.bench decode --pair smollm2 --dtypes float32 bfloat16 --n 5
  python -m specrepro.bench verify-cost --dtypes float32 bfloat16 int4 --models target random-1.2B
  python -m specrepro.bench teacher --dtypes float32 bfloat16 int4 --n 32

`forward`: time of one target forward (one new token, and a 5-token speculative round followed
by keep()) at each context length, in our engine (cache preallocated, written in place) against
the same model on transformers' DynamicCache (a full copy of the cache per forward and per
gather: what this engine did before).

`decode`: our vanilla and sps against transformers' own greedy `generate` (dynamic and static
cache) and assisted generation (`assistant_model`, same draft, same constant gamma), with tau
and the T=0 match rates.

`beams`: beam sampling and DSBD (config method entries, plus DSBD in the shared-prefix layout)
at T=1 on the same prompts and seeds: tokens/s and its ratio to `beam`, target forwards per
token, host time per round (wall time outside the model forwards and cache reorders), peak KV
bytes (target + draft) and, on a GPU, peak allocated memory; and (unless --no-baselines) our
`beam` against a straightforward batched beam sampler on transformers' DynamicCache (same
sampling code, `reorder_cache` after each step) and against transformers'
`generate(num_beams=W, do_sample=True)`, where it runs.

`trees`: the EAGLE family (config method entries, e.g. eagle eagle2 ddd ddd-async eagle2-cpu)
against our vanilla on the pair's head: speedup (ratio of totals), tau, mean levels drafted and the
draft / verify / other split of the wall time, with the T=0 match rate against vanilla; `vanilla-aa`
(vanilla again) is the A/A control: its speedup shows how much the machine drifts. Every bench runs
its methods interleaved per prompt, each prompt in the next order of a Williams design (every method
right after every other equally often).

`subset`: acceptance (tau) and draft time against the draft vocabulary subset's size
(`--sizes 2048 8192 32768 full`), the pair's draft and head drafting from the k most frequent
tokens of the target's teacher corpus (models/vocab_subset.py), with the T=0 match against full.

`verify-cost`: one target forward of N new tokens (`--sizes 1 2 4 8 16 32 61`) over a
`--context`-token prefix, relative to N = 1, per dtype (float32, bfloat16, int4: the 4-bit
engine mode) and kernel path (PyTorch's default linears, or the engine's prepacked ones);
`--models target random-1.2B` adds a random-weight 1.2B LLaMA.

`teacher`: the teacher corpus generated per dtype (float32, bfloat16, int4) on the same training
prompts with the teacher's CorpusConfig and seed: response tokens/s and its ratio to float32,
and each dtype's model teacher-forced over the float32 tokens against float32's stored features
at the response positions: relative L2 error per position (median, 95th percentile), mean
cosine, the share of equal argmax next tokens and the mean top-k id-set overlap.

`llama-cpp`: our vanilla greedy in each engine mode beside llama.cpp (llama-cpp-python, the
`llamacpp` extra) on the target's own GGUF file, same prompts and threads: tokens/s and the
share of prompts whose tokens equal our float32 output.

`repeats`: from a finished run's tidy table (no decoding), every A/A control recomputed per
timing group with the first timing alone, and with the fastest or the mean of the first r
timings: how many repeats the controls need on the machine that ran it.

`gpu-check` (`make gpu-check`): a CUDA preflight of the engine, one table of PASS/FAIL checks
(bench/gpu_check.py lists them): vanilla = transformers' greedy generate and every lossless
method = vanilla at T=0 (float32 and float16, a LLaMA with head_dim 128 and an OPT), SDPA =
eager under a tree mask, CUDA syncs per round within each method's bound and none inside a
draft level, ddd_async = ddd under a delayed stream, an fp16 EAGLE head past 1,000 positions,
decode and tree-verification time at random LLaMA-2-7B shapes, the paper configs' timing groups
against this GPU's memory, and NVML energy. It exits 1 when a check fails, and 2 on a machine
without CUDA; `--device cpu` runs the checks that need no GPU, `--only NAME ...` some checks.

`launches`: per method, on tiny random models, kernel launches per round (one verification
forward) and per draft level, from torch.profiler, and CPU and wall time per round; on CUDA the
kernels the GPU ran (memcpy and memset apart), on the CPU the aten calls that would launch one,
labelled "CPU ops" (bench/launches.py says how to read it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from specrepro.bench import (
    beams,
    decode,
    forward,
    gpu_check,
    launches,
    llama_cpp,
    repeats,
    subset,
    teacher,
    trees,
    verify_cost,
)

# The benches that return a report, printed as a table and saved by --out (gpu-check returns
# an exit code instead).
TABLE_BENCHES = {
    "forward": (forward.run_forward, forward.print_forward),
    "decode": (decode.run_decode, decode.print_decode),
    "trees": (trees.run_trees, trees.print_trees),
    "beams": (beams.run_beams, beams.print_beams),
    "subset": (subset.run_subset, subset.print_subset),
    "verify-cost": (verify_cost.run_verify_cost, verify_cost.print_verify_cost),
    "llama-cpp": (llama_cpp.run_llama_cpp, llama_cpp.print_llama_cpp),
    "repeats": (repeats.run_repeats, repeats.print_repeats),
    "launches": (launches.run_launches, launches.print_launches),
    "teacher": (teacher.run_teacher, teacher.print_teacher),
}


def main(argv: list[str] | None = None) -> None:
    """Parse `<bench> [flags]`, run that bench and print its table (gpu-check: exit code)."""
    parser = argparse.ArgumentParser(
        prog="python -m specrepro.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="what", required=True)
    # Registered in the order --help has always listed them.
    for bench in (
        forward,
        decode,
        trees,
        beams,
        gpu_check,
        subset,
        verify_cost,
        llama_cpp,
        repeats,
        launches,
        teacher,
    ):
        bench.add_parser(sub)
    args = parser.parse_args(argv)
    if args.what == "gpu-check":
        sys.exit(gpu_check.run_gpu_check(args))
    run, show = TABLE_BENCHES[args.what]
    report = run(args)
    show(report, args)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
