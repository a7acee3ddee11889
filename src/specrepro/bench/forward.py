"""The `forward` bench: one target forward in our engine against transformers' DynamicCache.

At each --contexts length it times one new token, and a 5-token speculative round followed by
keep(), in our engine (cache preallocated, written in place) and on the same model with
transformers' DynamicCache (a full copy of the cache per forward and per gather: what this
engine did before); each time is the median of --reps after --warmup unmeasured ones.

Reading it: `dynamic_over_engine` (the printed x...) is DynamicCache's time over the engine's,
so above 1 the engine is that many times faster; no dataset prompts are involved, only a
random prefix of the given length.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from transformers import DynamicCache, PreTrainedModel

from specrepro.bench.common import add_model_args
from specrepro.config import load_config, model_spec, resolve_pair
from specrepro.engine.runner import ModelRunner
from specrepro.engine.timing import synchronize
from specrepro.models.loader import load_model

ROUND_TOKENS = 5  # a speculative round: tokens verified, of which the first 3 are kept


def _median_seconds(step, reps: int, warmup: int, device: torch.device) -> float:
    times = []
    for i in range(warmup + reps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_engine(model: PreTrainedModel, context: int, reps: int, warmup: int) -> dict[str, float]:
    """Seconds per 1-token forward and per 5-token round + keep, in our runner."""
    device = next(model.parameters()).device
    runner = ModelRunner(model, "target")
    runner.reset(context + 2 * ROUND_TOKENS)
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, runner.vocab_size, (context,), generator=generator)
    runner.forward(prefix, logits_from=context - 1)

    def one_token() -> None:
        runner.forward([1], logits_from=0)
        runner.crop(context)

    def round_and_keep() -> None:
        runner.forward([1] * ROUND_TOKENS, logits_from=0)
        runner.keep(list(range(context)) + [context, context + 2, context + 3])
        runner.crop(context)

    return {
        "token": _median_seconds(one_token, reps, warmup, device),
        "round_keep": _median_seconds(round_and_keep, reps, warmup, device),
    }


@torch.inference_mode()
def time_dynamic_cache(
    model: PreTrainedModel, context: int, reps: int, warmup: int
) -> dict[str, float]:
    """The same two steps on transformers' DynamicCache (concatenation and full gathers)."""
    device = next(model.parameters()).device
    vocab = model.get_output_embeddings().weight.shape[0]
    prefix = torch.randint(0, vocab, (1, context), generator=torch.Generator().manual_seed(0))
    cache = DynamicCache(config=model.config)
    model(input_ids=prefix.to(device), cache=cache, use_cache=True, logits_to_keep=1)

    def forward(n: int) -> None:
        ids = torch.ones(1, n, dtype=torch.long, device=device)
        positions = torch.arange(context, context + n, device=device).view(1, -1)
        model(input_ids=ids, position_ids=positions, cache=cache, use_cache=True,
              logits_to_keep=n)  # fmt: skip

    def one_token() -> None:
        forward(1)
        cache.crop(-1)

    def round_and_keep() -> None:
        forward(ROUND_TOKENS)
        kept = torch.tensor(list(range(context)) + [context, context + 2, context + 3])
        for layer in cache.layers:
            layer.keys = layer.keys.index_select(-2, kept.to(device))
            layer.values = layer.values.index_select(-2, kept.to(device))
        cache.crop(-3)

    return {
        "token": _median_seconds(one_token, reps, warmup, device),
        "round_keep": _median_seconds(round_and_keep, reps, warmup, device),
    }


def run_forward(args: argparse.Namespace) -> dict:
    config = load_config(args.config)
    pair = resolve_pair(config, args.pair)
    spec = model_spec(config, pair["target"])
    report: dict = {"pair": args.pair, "device": args.device, "reps": args.reps}
    for dtype in args.dtypes:
        model, _ = load_model(spec, dtype, args.device, Path(config["models"]["cache_dir"]))
        for context in args.contexts:
            ours = time_engine(model, context, args.reps, args.warmup)
            dynamic = time_dynamic_cache(model, context, args.reps, args.warmup)
            report[f"{dtype}/{context}"] = {
                "engine_ms": {k: 1000 * v for k, v in ours.items()},
                "dynamic_cache_ms": {k: 1000 * v for k, v in dynamic.items()},
                "dynamic_over_engine": {k: dynamic[k] / ours[k] for k in ours},
            }
        del model
    return report


def print_forward(report: dict, args: argparse.Namespace) -> None:
    for dtype in args.dtypes:
        for context in args.contexts:
            r = report[f"{dtype}/{context}"]
            e, d, ratio = r["engine_ms"], r["dynamic_cache_ms"], r["dynamic_over_engine"]
            print(
                f"[{dtype} ctx={context}] 1-token forward: engine {e['token']:.2f} ms, "
                f"DynamicCache {d['token']:.2f} ms (x{ratio['token']:.3f}); "
                f"5-token round+keep: engine {e['round_keep']:.2f} ms, "
                f"DynamicCache {d['round_keep']:.2f} ms (x{ratio['round_keep']:.3f})"
            )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("forward")
    add_model_args(parser)
    parser.add_argument("--contexts", nargs="+", type=int, default=[128, 2048])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
