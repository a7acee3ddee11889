"""Benchmarks: ratios measured in one run, on the same prompts, machine and models.

  python -m specrepro.bench forward --contexts 128 2048 --dtypes float32 bfloat16
  python -m specrepro.bench decode --pair smollm2 --dtypes float32 bfloat16 --n 5

`forward`: time of one target forward (one new token, and a 5-token speculative round followed
by keep()) at each context length, in our engine (cache preallocated, written in place) against
the same model on transformers' DynamicCache (a full copy of the cache per forward and per
gather: what this engine did before).

`decode`: our vanilla and sps against transformers' own greedy `generate` (dynamic and static
cache) and assisted generation (`assistant_model`, same draft, same constant gamma), with tau
and the T=0 match rates.

`trees`: the EAGLE family (config method entries, e.g. eagle eagle2 ddd ddd-async eagle2-cpu)
against our vanilla on the pair's head: speedup (ratio of totals), tau, mean levels drafted and
the draft / verify / other split of the wall time, with the T=0 match rate against vanilla.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import DynamicCache, PreTrainedModel

from specrepro.config import (
    MethodChoice,
    load_config,
    model_spec,
    resolve_method,
    resolve_pair,
)
from specrepro.data import load_prompts
from specrepro.decoding.base import make_params
from specrepro.engine.runner import ModelRunner
from specrepro.engine.timing import synchronize
from specrepro.harness import Decoder, LoadedPair, load_pair
from specrepro.models.loader import load_model
from specrepro.prompting import conversation, encode

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
    model(input_ids=prefix.to(device), past_key_values=cache, use_cache=True, logits_to_keep=1)

    def forward(n: int) -> None:
        ids = torch.ones(1, n, dtype=torch.long, device=device)
        positions = torch.arange(context, context + n, device=device).view(1, -1)
        model(input_ids=ids, position_ids=positions, past_key_values=cache, use_cache=True,
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


def hf_generate(
    loaded: LoadedPair,
    prompt_ids: list[int],
    max_new_tokens: int,
    gamma: int | None = None,
    cache_implementation: str | None = None,
) -> tuple[list[int], float]:
    """transformers' own greedy generation, assisted by the draft when gamma is given."""
    kwargs: dict = {}
    if gamma is not None:
        draft_cfg = loaded.draft.generation_config
        draft_cfg.num_assistant_tokens = gamma
        draft_cfg.num_assistant_tokens_schedule = "constant"
        draft_cfg.assistant_confidence_threshold = 0.0
        kwargs["assistant_model"] = loaded.draft
    if cache_implementation is not None:
        kwargs["cache_implementation"] = cache_implementation
    ids = torch.tensor([prompt_ids], device=loaded.target.device)
    synchronize(loaded.target.device)
    start = time.perf_counter()
    out = loaded.target.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=sorted(loaded.eos_ids),
        pad_token_id=sorted(loaded.eos_ids)[0],
        **kwargs,
    )
    synchronize(loaded.target.device)
    elapsed = time.perf_counter() - start
    new = out[0, len(prompt_ids) :].tolist()
    cut = next((i + 1 for i, t in enumerate(new) if t in loaded.eos_ids), len(new))
    return new[:cut], elapsed


def run_decode(args: argparse.Namespace) -> dict:
    config = load_config(args.config)
    resolve_pair(config, args.pair)
    prompts = load_prompts(args.dataset, Path(config["data"]["dir"]), args.n, args.seed)
    report: dict = {"pair": args.pair, "dataset": args.dataset, "n": len(prompts)}
    report["gamma"] = args.gamma
    for dtype in args.dtypes:
        loaded = load_pair(config, args.pair, dtype, args.device, ("draft",))
        encoded = [
            encode(loaded.tokenizer, conversation(p, 0, []), loaded.conversation) for p in prompts
        ]
        report[dtype] = decode_ratios(loaded, encoded, args.max_new_tokens, args.gamma)
    return report


def decode_ratios(
    loaded: LoadedPair, encoded: list[list[int]], max_new_tokens: int, gamma: int
) -> dict:
    """Every implementation on every prompt, interleaved so that drift hits all alike."""
    vanilla = Decoder(loaded, MethodChoice("vanilla", "vanilla", make_params("vanilla", {})), 0.0)
    sps = Decoder(loaded, MethodChoice("sps", "sps", make_params("sps", {"gamma": gamma})), 0.0)
    runs = {
        "vanilla": lambda ids, n: _ours(vanilla, ids, n),
        "sps": lambda ids, n: _ours(sps, ids, n),
        "hf_greedy_dynamic": lambda ids, n: hf_generate(loaded, ids, n),
        "hf_greedy_static": lambda ids, n: hf_generate(loaded, ids, n, None, "static"),
        "hf_assisted": lambda ids, n: hf_generate(loaded, ids, n, gamma),
    }
    for run in runs.values():  # warm-up
        run(encoded[0], 8)
    totals = {k: [0, 0.0] for k in runs}
    outputs: dict[str, list[list[int]]] = {k: [] for k in runs}
    forwards = 0
    for ids in encoded:
        for key, run in runs.items():
            tokens, seconds = run(ids, max_new_tokens)
            totals[key][0] += len(tokens)
            totals[key][1] += seconds
            outputs[key].append(tokens)
        forwards += sps.target.forwards
    tps = {k: n / t for k, (n, t) in totals.items()}

    def match(a: str, b: str) -> float:
        return sum(x == y for x, y in zip(outputs[a], outputs[b], strict=True)) / len(encoded)

    return {
        "tokens_per_s": tps,
        "sps_over_vanilla": tps["sps"] / tps["vanilla"],
        "sps_over_hf_assisted": tps["sps"] / tps["hf_assisted"],
        "vanilla_over_hf_dynamic": tps["vanilla"] / tps["hf_greedy_dynamic"],
        "vanilla_over_hf_static": tps["vanilla"] / tps["hf_greedy_static"],
        "tau": totals["sps"][0] / forwards,
        "match_sps_vanilla": match("sps", "vanilla"),
        "match_vanilla_hf": match("vanilla", "hf_greedy_dynamic"),
        "match_sps_hf_assisted": match("sps", "hf_assisted"),
    }


def run_trees(args: argparse.Namespace) -> dict:
    config = load_config(args.config)
    resolve_pair(config, args.pair)
    prompts = load_prompts(args.dataset, Path(config["data"]["dir"]), args.n, args.seed)
    report: dict = {"pair": args.pair, "dataset": args.dataset, "n": len(prompts)}
    for dtype in args.dtypes:
        loaded = load_pair(config, args.pair, dtype, args.device, ("head",))
        encoded = [
            encode(loaded.tokenizer, conversation(p, 0, []), loaded.conversation) for p in prompts
        ]
        methods = {"vanilla": resolve_method(config, "vanilla")}
        methods |= {name: resolve_method(config, name) for name in args.methods}
        report[dtype] = tree_ratios(loaded, methods, encoded, args.max_new_tokens)
    return report


def tree_ratios(
    loaded: LoadedPair, methods: dict[str, MethodChoice], encoded: list[list[int]], max_new: int
) -> dict:
    """Every method on every prompt, interleaved so that drift hits all alike."""
    decoders = {name: Decoder(loaded, choice, 0.0) for name, choice in methods.items()}
    for decoder in decoders.values():  # warm-up
        decoder.generate(encoded[0], 8, 0)
    stats = {
        name: {"tokens": 0, "forwards": 0, "levels": [], "split": [0.0, 0.0, 0.0], "out": []}
        for name in decoders
    }
    for ids in encoded:
        for name, decoder in decoders.items():
            result, timer = decoder.generate(ids, max_new, 0)
            entry = stats[name]
            entry["tokens"] += result.new_tokens
            entry["forwards"] += result.target_forwards
            entry["levels"] += result.extra.get("rounds", {}).get("levels", [])
            split = timer.split()
            for i, key in enumerate(("draft", "verify", "other")):
                entry["split"][i] += split[key]
            entry["out"].append(result.tokens)
    base = stats["vanilla"]
    base_tps = base["tokens"] / sum(base["split"])
    out = {}
    for name, entry in stats.items():
        seconds = sum(entry["split"])
        tps = entry["tokens"] / seconds
        out[name] = {
            "tokens_per_s": tps,
            "speedup": tps / base_tps,
            "tau": entry["tokens"] / entry["forwards"],
            "mean_levels": statistics.mean(entry["levels"]) if entry["levels"] else None,
            "split": {
                key: t / seconds
                for key, t in zip(("draft", "verify", "other"), entry["split"], strict=True)
            },
            "match_vanilla": sum(a == b for a, b in zip(entry["out"], base["out"], strict=True))
            / len(encoded),
        }
    return out


def print_trees(report: dict, args: argparse.Namespace) -> None:
    for dtype in args.dtypes:
        for name, r in report[dtype].items():
            levels = "-" if r["mean_levels"] is None else f"{r['mean_levels']:.2f}"
            split = " / ".join(f"{v:.2f}" for v in r["split"].values())
            print(
                f"[{dtype}] {name:12s} {r['tokens_per_s']:6.1f} tok/s  speedup "
                f"{r['speedup']:.3f}  tau {r['tau']:.2f}  levels {levels}  draft/verify/other "
                f"{split}  match {r['match_vanilla']:.2f}"
            )


def _ours(decoder: Decoder, ids: list[int], max_new_tokens: int) -> tuple[list[int], float]:
    result, timer = decoder.generate(ids, max_new_tokens, 0)
    return result.tokens, timer.total


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


def print_decode(report: dict, args: argparse.Namespace) -> None:
    for dtype in args.dtypes:
        r = report[dtype]
        tps = ", ".join(f"{k} {v:.1f}" for k, v in r["tokens_per_s"].items())
        print(f"[{dtype}] tokens/s: {tps}")
        ratios = "  ".join(
            f"{k} {r[k]:.3f}"
            for k in (
                "sps_over_vanilla",
                "sps_over_hf_assisted",
                "vanilla_over_hf_dynamic",
                "vanilla_over_hf_static",
                "tau",
                "match_sps_vanilla",
                "match_vanilla_hf",
                "match_sps_hf_assisted",
            )  # fmt: skip
        )
        print(f"[{dtype}] {ratios}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m specrepro.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("forward", "decode", "trees"):
        p = sub.add_parser(name)
        p.add_argument("--config", nargs="+", default=["config/config.yaml"])
        p.add_argument("--pair", default="smollm2")
        p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
        p.add_argument("--device", default="cpu")
        p.add_argument("--out", help="also write the numbers as JSON")
    forward = sub.choices["forward"]
    forward.add_argument("--contexts", nargs="+", type=int, default=[128, 2048])
    forward.add_argument("--reps", type=int, default=20)
    forward.add_argument("--warmup", type=int, default=3)
    decode = sub.choices["decode"]
    decode.add_argument("--dataset", default="mtbench")
    decode.add_argument("--n", type=int, default=5)
    decode.add_argument("--seed", type=int, default=1, help="prompt subsample seed")
    decode.add_argument("--max-new-tokens", type=int, default=64)
    decode.add_argument("--gamma", type=int, default=3)
    trees = sub.choices["trees"]
    trees.add_argument("--dataset", default="mtbench")
    trees.add_argument("--n", type=int, default=5)
    trees.add_argument("--seed", type=int, default=1, help="prompt subsample seed")
    trees.add_argument("--max-new-tokens", type=int, default=64)
    trees.add_argument(
        "--methods", nargs="+", default=["eagle", "eagle2", "ddd", "ddd-async", "eagle2-cpu"]
    )
    args = parser.parse_args(argv)
    if args.what == "forward":
        report = run_forward(args)
        print_forward(report, args)
    elif args.what == "trees":
        report = run_trees(args)
        print_trees(report, args)
    else:
        report = run_decode(args)
        print_decode(report, args)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
