"""The `verify-cost` bench: what one forward of N new tokens costs relative to one token.

A speculative round verifies N tokens in one target forward; it pays off only when that costs
about as much as one token. For each dtype (float32, bfloat16, int4: the 4-bit engine mode)
and kernel path (`default`: PyTorch's own linear layers; `packed`: the engine's prepacked
oneDNN weights, engine/packed.py, what every run uses) it times one forward of N new tokens
over a random --context-token prefix through the engine's ModelRunner, the median of --reps
after --warmup, and prints each N's time over N = 1's. `--models target random-1.2B` adds a
random-weight LLaMA of about 1.2B parameters (TinyLlama's shape at the target's vocabulary);
int4 there uses Q4_1 blocks made from its float weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from specrepro.bench.common import add_model_args
from specrepro.config import load_config, model_spec, resolve_pair
from specrepro.engine.runner import ModelRunner
from specrepro.models.loader import load_model, parse_dtype, to_engine_mode
from specrepro.training.family import Shape
from specrepro.training.latency import random_model

KERNELS = ("default", "packed")
MODELS = ("target", "random-1.2B")
# TinyLlama-1.1B's shape (22 layers of 2048, 5632 MLP, 32 heads, 4 KV heads): 1.2B parameters
# at a 49,152-token vocabulary.
RANDOM_SHAPE = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 64,
}


def random_target(base_config: object, dtype: str) -> torch.nn.Module:
    """A random-weight causal LM of RANDOM_SHAPE on the target's architecture."""
    shape = dataclasses.replace(Shape.of(base_config), **RANDOM_SHAPE)
    torch.manual_seed(0)
    model = random_model(shape, base_config, parse_dtype(dtype), "cpu")
    to_engine_mode(model, dtype)
    return model


@torch.inference_mode()
def cost_table(
    runner: ModelRunner, context: int, sizes: list[int], reps: int, warmup: int
) -> dict[int, float]:
    """Median seconds of one forward of n new tokens after `context` cached ones, per n."""
    runner.reset(context + max(sizes) + 1)
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, runner.vocab_size, (context,), generator=generator)
    runner.forward(prefix, logits_from=context - 1)
    seconds = {}
    for n in sizes:
        times = []
        for i in range(warmup + reps):
            start = time.perf_counter()
            runner.forward([1] * n, logits_from=0)
            if i >= warmup:
                times.append(time.perf_counter() - start)
            runner.crop(context)
        seconds[n] = statistics.median(times)
    return seconds


def run_verify_cost(args: argparse.Namespace) -> dict:
    config = load_config(args.config)
    spec = model_spec(config, resolve_pair(config, args.pair)["target"])
    cache_root = Path(config["models"]["cache_dir"])
    report: dict = {"pair": args.pair, "context": args.context, "reps": args.reps, "rows": []}
    for which in args.models:
        for dtype in args.dtypes:
            for kernels in args.kernels:
                if which == "target":
                    model, _ = load_model(spec, dtype, args.device, cache_root)
                else:
                    base = load_model(spec, "float32", args.device, cache_root)[0].config
                    model = random_target(base, dtype)
                runner = ModelRunner(model, which, pack=kernels == "packed")
                seconds = cost_table(runner, args.context, args.sizes, args.reps, args.warmup)
                parameters = sum(p.numel() for p in model.parameters())
                report["rows"].append(
                    {
                        "model": which,
                        "parameters": parameters,
                        "dtype": dtype,
                        "kernels": kernels,
                        "ms": {n: 1000 * s for n, s in seconds.items()},
                        "over_one": {n: s / seconds[args.sizes[0]] for n, s in seconds.items()},
                    }
                )
                del runner, model
    return report


def print_verify_cost(report: dict, args: argparse.Namespace) -> None:
    sizes = args.sizes
    print(f"one forward of N new tokens over {report['context']} cached, relative to N = 1")
    print("| model | dtype | kernels | " + " | ".join(f"N={n}" for n in sizes) + " |")
    print("|---|---|---|" + "---|" * len(sizes))
    for row in report["rows"]:
        cells = [f"{row['over_one'][n]:.2f}" for n in sizes]
        cells[0] = f"1.00 ({row['ms'][sizes[0]]:.1f} ms)"
        print(f"| {row['model']} | {row['dtype']} | {row['kernels']} | " + " | ".join(cells) + " |")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("verify-cost")
    add_model_args(parser)
    parser.set_defaults(dtypes=["float32", "bfloat16", "int4"])
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 61])
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["target"])
