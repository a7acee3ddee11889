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

`beams`: beam sampling and DSBD (config method entries, plus DSBD in the shared-prefix layout)
at T=1 on the same prompts and seeds: tokens/s and its ratio to `beam`, target forwards per
token, host time per round (wall time outside the model forwards and cache reorders), peak KV
bytes (target + draft) and, on a GPU, peak allocated memory; and (unless --no-baselines) our
`beam` against a straightforward batched beam sampler on transformers' DynamicCache (same
sampling code, `reorder_cache` after each step) and against transformers'
`generate(num_beams=W, do_sample=True)`, where it runs.

`trees`: the EAGLE family (config method entries, e.g. eagle eagle2 ddd ddd-async eagle2-cpu)
against our vanilla on the pair's head: speedup (ratio of totals), tau, mean levels drafted and
the draft / verify / other split of the wall time, with the T=0 match rate against vanilla;
`vanilla-aa` (vanilla again) is the A/A control: its speedup shows how much the machine drifts.
Every bench runs its methods interleaved per prompt, the order rotated by one per prompt.

`gpu-check` (CUDA only; `make gpu-check`): pass/fail checks that need a GPU, on tiny random
models built from a config (or `--model PATH`, a local causal LM folder, as the target):
  1. sync-free draft levels: eagle, eagle2, ddd, ddd_async run with every draft level (head
     forward, top-k, beam update; not ddd's check reads) under
     torch.cuda.set_sync_debug_mode("error"); dsbd with each draft-model forward under it;
  2. ddd_async reads no stale flag: with a sleep queued on the stream after every head forward
     (so flags are still in flight when polled), its tokens, trees and H values equal ddd's;
  3. an fp16 EAGLE head drafts as the fp32 one at positions 1,000-2,000 (RoPE in float32);
  4. NVML energy of a short generation (J/token).
It exits 1 when a check fails, and 2 on a machine without CUDA (the CPU proxy of check 1, host
reads per round, runs in the test suite: tests/test_host_reads.py).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

from specrepro.config import (
    ConfigError,
    MethodChoice,
    load_config,
    model_spec,
    resolve_method,
    resolve_pair,
)
from specrepro.data import load_prompts, load_tuning_prompts
from specrepro.decoding.base import GenerationResult, make_params
from specrepro.decoding.tree_rounds import checked_levels
from specrepro.engine.runner import ModelRunner
from specrepro.engine.timing import synchronize
from specrepro.harness import Decoder, LoadedPair, load_pair, open_energy_meter, rotated
from specrepro.models.eagle_head import build_head, head_config_for
from specrepro.models.loader import load_model
from specrepro.prompting import encode_turn

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


def bench_prompts(config: dict, dataset: str, n: int, split: str) -> list[dict]:
    """The first n questions of a split: "tuning" (never evaluated, never trained on: settings
    are chosen there) or "eval" (the evaluated subsample)."""
    entry = config["datasets"].get(dataset)
    if entry is None:
        configured = ", ".join(sorted(config["datasets"]))
        raise ConfigError(f"dataset {dataset!r} is not configured (datasets: {configured})")
    data_dir, seed = Path(config["data"]["dir"]), config["runs"].get("subsample_seed", 0)
    if split == "eval":
        return load_prompts(dataset, data_dir, entry["n"], seed)[:n]
    held_out = entry.get("tuning", 0)
    if n > held_out:
        raise ConfigError(
            f"bench asks for {n} tuning questions of {dataset}, the config holds out "
            f"{held_out} (datasets.{dataset}.tuning); raise it, or pass --split eval"
        )
    return load_tuning_prompts(dataset, data_dir, entry["n"], seed, held_out)[:n]


def _loaded_prompts(args: argparse.Namespace, roles: tuple[str, ...]):
    """The config, the report's header, then per dtype: (dtype, loaded pair, encoded prompts)."""
    config = load_config(args.config)
    resolve_pair(config, args.pair)
    prompts = bench_prompts(config, args.dataset, args.n, args.split)
    report: dict = {
        "pair": args.pair, "dataset": args.dataset, "split": args.split, "n": len(prompts)
    }  # fmt: skip

    def per_dtype():
        for dtype in args.dtypes:
            loaded = load_pair(config, args.pair, dtype, args.device, roles)
            encoded = [
                encode_turn(loaded.tokenizer, p, 0, [], loaded.conversation) for p in prompts
            ]
            yield dtype, loaded, encoded

    return config, report, per_dtype()


def run_decode(args: argparse.Namespace) -> dict:
    _, report, loads = _loaded_prompts(args, ("draft",))
    report["gamma"] = args.gamma
    for dtype, loaded, encoded in loads:
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
    for index, ids in enumerate(encoded):
        for key in rotated(list(runs), index):
            tokens, seconds = runs[key](ids, max_new_tokens)
            totals[key][0] += len(tokens)
            totals[key][1] += seconds
            outputs[key].append(tokens)
            if key == "sps":
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
    config, report, loads = _loaded_prompts(args, ("head",))
    for dtype, loaded, encoded in loads:
        vanilla = resolve_method(config, "vanilla")
        # The A/A control: vanilla again under another name, timed like every other run.
        methods = {
            "vanilla": vanilla,
            "vanilla-aa": MethodChoice("vanilla-aa", "vanilla", vanilla.params),
        }
        methods |= {name: resolve_method(config, name) for name in args.methods}
        if args.probe_h:
            methods["h-probe"] = h_probe(resolve_method(config, args.probe_h))
        report[dtype] = tree_ratios(loaded, methods, encoded, args.max_new_tokens)
    return report


def h_probe(base: MethodChoice) -> MethodChoice:
    """DDD with `base`'s tree but a check at every level and a threshold nothing reaches: its
    rounds record H (the log of the beam's total draft probability) at every level, the values
    a threshold x is chosen from."""
    values = {**vars(base.params), "threshold": -1e9}
    values["check_levels"] = list(range(1, values["max_levels"] + 1))
    return MethodChoice("h-probe", "ddd", make_params("ddd", values))


def _warm_decoders(
    loaded: LoadedPair, methods: dict[str, MethodChoice], temperature: float, ids: list[int]
) -> dict[str, Decoder]:
    """A decoder per method, each warmed up by one short generation (not measured)."""
    decoders = {name: Decoder(loaded, choice, temperature) for name, choice in methods.items()}
    for decoder in decoders.values():
        decoder.generate(ids, 8, 0)
    return decoders


def tree_ratios(
    loaded: LoadedPair, methods: dict[str, MethodChoice], encoded: list[list[int]], max_new: int
) -> dict:
    """Every method on every prompt, interleaved so that drift hits all alike."""
    decoders = _warm_decoders(loaded, methods, 0.0, encoded[0])
    stats = {
        name: {
            "tokens": 0,
            "verified": 0,
            "forwards": 0,
            "levels": [],
            "checks": [],
            "split": [0.0, 0.0, 0.0],
            "out": [],
        }  # fmt: skip
        for name in decoders
    }
    for index, ids in enumerate(encoded):
        for name in rotated(list(decoders), index):
            result, timer = decoders[name].generate(ids, max_new, 0)
            entry = stats[name]
            entry["tokens"] += result.new_tokens
            entry["verified"] += result.verified_tokens
            entry["forwards"] += result.verify_forwards
            entry["levels"] += result.extra.get("rounds", {}).get("levels", [])
            entry["checks"] += result.extra.get("rounds", {}).get("checks", [])
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
            "tau": entry["verified"] / entry["forwards"],
            "mean_levels": statistics.mean(entry["levels"]) if entry["levels"] else None,
            "h_median_by_level": _h_medians(entry["checks"]),
            "split": {
                key: t / seconds
                for key, t in zip(("draft", "verify", "other"), entry["split"], strict=True)
            },
            "match_vanilla": sum(a == b for a, b in zip(entry["out"], base["out"], strict=True))
            / len(encoded),
        }
    return out


def _h_medians(checks: list[list[list[float]]]) -> dict[int, float] | None:
    """Median H at each checked level over every round ([[level, H], ...] per round)."""
    by_level: dict[int, list[float]] = {}
    for round_checks in checks:
        for level, h in round_checks:
            by_level.setdefault(int(level), []).append(float(h))
    return {lv: statistics.median(hs) for lv, hs in sorted(by_level.items())} or None


@torch.inference_mode()
def dynamic_cache_beam(
    model: PreTrainedModel,
    ids: list[int],
    max_new: int,
    width: int,
    top_k: int,
    top_p: float,
    eos: frozenset[int],
    seed: int,
) -> tuple[int, float]:
    """Beam sampling written the straightforward way: W rows on a DynamicCache, reordered with
    `reorder_cache` after every step, the same step distribution as ours; no stop rule beyond
    EOS and the budget. Returns (steps, seconds)."""
    from specrepro.engine.beams import draw, joint_distribution

    device = model.device
    generator = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    cache = DynamicCache()
    feed = torch.tensor([ids], device=device)
    scores = torch.zeros(1, device=device)
    steps = 0
    while steps < max_new:
        steps += 1
        logits = model(input_ids=feed, cache=cache, use_cache=True).logits[:, -1]
        logp = torch.log_softmax(logits.float(), -1)
        probs = joint_distribution(scores[:, None] + logp, 1.0, top_k, top_p)
        picks = torch.tensor(draw(probs, width, generator), device=device)
        rows, tokens = picks // logp.shape[-1], picks % logp.shape[-1]
        alive = torch.tensor([int(t) not in eos for t in tokens.tolist()], device=device)
        if not bool(alive.any()):
            break
        cache.reorder_cache(rows[alive])
        scores = probs[picks[alive]].log()
        feed = tokens[alive].view(-1, 1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps, time.perf_counter() - start


def run_beams(args: argparse.Namespace) -> dict:
    config, report, loads = _loaded_prompts(args, ("draft",))
    for dtype, loaded, encoded in loads:
        methods = {name: resolve_method(config, name) for name in args.methods}
        base = config["methods"][args.methods[-1]]
        memory = {**base, "layout": "shared_prefix"}
        values = {k: v for k, v in memory.items() if k not in ("algorithm", "stop_at_answer")}
        methods["dsbd-shared"] = MethodChoice("dsbd-shared", "dsbd", make_params("dsbd", values))
        report[dtype] = beam_ratios(
            loaded, methods, encoded, args.max_new_tokens, baselines=not args.no_baselines
        )
    return report


class ForwardClock:
    """Wall time spent inside the runners' forwards and, apart, their cache reorders (`keep`,
    `select_rows`: device copies, not host work), synchronised on a GPU, so that a method's
    host time is its total minus both."""

    def __init__(self, runners: list) -> None:
        self.seconds = {"forward": 0.0, "cache": 0.0}
        self._patched: list[tuple[object, str]] = []
        for runner in runners:
            if runner is None:
                continue
            for method, kind in ("forward", "forward"), ("keep", "cache"), ("select_rows", "cache"):
                self._patch(runner, method, kind)

    def _patch(self, runner: object, method: str, kind: str) -> None:
        inner = getattr(runner, method)
        device = runner.device  # type: ignore[attr-defined]

        def timed(*args: object, **kwargs: object) -> object:
            synchronize(device)
            start = time.perf_counter()
            out = inner(*args, **kwargs)
            synchronize(device)
            self.seconds[kind] += time.perf_counter() - start
            return out

        setattr(runner, method, timed)
        self._patched.append((runner, method))

    def close(self) -> None:
        for runner, method in self._patched:
            delattr(runner, method)  # the instance attribute; the class method shows again


def beam_ratios(
    loaded: LoadedPair,
    methods: dict[str, MethodChoice],
    encoded: list[list[int]],
    max_new: int,
    baselines: bool = True,
) -> dict:
    """Every method on every prompt at T=1 with the same seeds, interleaved. Host time per
    round: the generation's wall time minus the time inside model forwards and cache reorders
    (ForwardClock), over the rounds (target forwards)."""
    decoders = _warm_decoders(loaded, methods, 1.0, encoded[0])
    beam = next(c for c in methods.values() if c.algorithm == "beam").params
    cuda = loaded.target.device.type == "cuda"
    stats = {
        name: {
            "tokens": 0, "seconds": 0.0, "forwards": 0, "kv": 0, "peak": 0, "widths": [],
            "forward_seconds": 0.0, "cache_seconds": 0.0, "rounds": 0,
        }
        for name in decoders
    }  # fmt: skip
    naive = {"steps": 0, "seconds": 0.0}
    ours_steps = 0
    for i, ids in enumerate(encoded):
        for name in rotated(list(decoders), i):
            decoder = decoders[name]
            if cuda:
                torch.cuda.reset_peak_memory_stats(loaded.target.device)
            clock = ForwardClock(decoder.used_runners())
            try:
                result, timer = decoder.generate(ids, max_new, i)
            finally:
                clock.close()
            entry = stats[name]
            entry["tokens"] += result.new_tokens
            entry["seconds"] += timer.total
            entry["forwards"] += result.target_forwards
            entry["forward_seconds"] += clock.seconds["forward"]
            entry["cache_seconds"] += clock.seconds["cache"]
            entry["rounds"] += result.target_forwards
            entry["kv"] = max(entry["kv"], result.kv_bytes_peak or 0)
            widths = result.extra.get("rounds", {}).get("widths", [])
            entry["widths"] += [w for levels in widths for w in levels]
            if cuda:
                entry["peak"] = max(entry["peak"], torch.cuda.max_memory_allocated())
            if methods[name].algorithm == "beam":
                ours_steps += result.target_forwards
        if baselines:
            steps, seconds = dynamic_cache_beam(
                loaded.target, ids, max_new, beam.width, beam.top_k, beam.top_p,
                loaded.eos_ids, i,
            )  # fmt: skip
            naive["steps"] += steps
            naive["seconds"] += seconds
    beam_name = next(n for n, c in methods.items() if c.algorithm == "beam")
    beam_tps = stats[beam_name]["tokens"] / stats[beam_name]["seconds"]
    out: dict = {}
    for name, entry in stats.items():
        tps = entry["tokens"] / entry["seconds"]
        out[name] = {
            "tokens_per_s": tps,
            "over_beam": tps / beam_tps,
            "target_forwards_per_token": entry["forwards"] / entry["tokens"],
            "host_ms_per_round": 1000.0
            * (entry["seconds"] - entry["forward_seconds"] - entry["cache_seconds"])
            / max(entry["rounds"], 1),
            "cache_ms_per_round": 1000.0 * entry["cache_seconds"] / max(entry["rounds"], 1),
            "forward_share": entry["forward_seconds"] / entry["seconds"],
            "kv_bytes_peak": entry["kv"],
            "peak_allocated_bytes": entry["peak"] if cuda else None,
            "mean_width": statistics.mean(entry["widths"]) if entry["widths"] else None,
        }
    ours_sps = ours_steps / stats[beam_name]["seconds"]
    out["beam_steps_per_s_ours"] = ours_sps
    if baselines:
        # Steps per second: the naive sampler has no stop rule beyond EOS, so it may run more
        # steps.
        out["beam_steps_per_s_dynamic_cache"] = naive["steps"] / naive["seconds"]
        out["ours_over_dynamic_cache"] = ours_sps / out["beam_steps_per_s_dynamic_cache"]
        out["hf_generate"] = hf_beam_sample(loaded, encoded, max_new, beam, ours_sps)
    return out


def hf_beam_sample(
    loaded: LoadedPair, encoded: list[list[int]], max_new: int, beam: object, ours: float
) -> dict:
    """transformers' beam sampling on the same prompts (its own stopping: EOS or the budget)."""
    try:
        steps, seconds = 0, 0.0
        for i, ids in enumerate(encoded):
            torch.manual_seed(i)
            start = time.perf_counter()
            out = loaded.target.generate(
                torch.tensor([ids], device=loaded.target.device),
                max_new_tokens=max_new, num_beams=beam.width, do_sample=True,
                top_k=beam.top_k or None, top_p=beam.top_p, temperature=1.0,
            )  # fmt: skip
            seconds += time.perf_counter() - start
            steps += out.shape[1] - len(ids)
        hf = steps / seconds
        return {"steps_per_s": hf, "ours_over_hf": ours / hf}
    except Exception as err:  # noqa: BLE001 - report why it could not run, do not stop the bench
        return {"error": f"{type(err).__name__}: {err}"[:300]}


def print_beams(report: dict, args: argparse.Namespace) -> None:
    for dtype in args.dtypes:
        r = report[dtype]
        for name in (*args.methods, "dsbd-shared"):
            m = r[name]
            width = "-" if m["mean_width"] is None else f"{m['mean_width']:.2f}"
            peak = m["peak_allocated_bytes"]
            print(
                f"[{dtype}] {name:12s} {m['tokens_per_s']:6.2f} tok/s  x{m['over_beam']:.3f} of "
                f"beam  target fwd/token {m['target_forwards_per_token']:.2f}  host "
                f"{m['host_ms_per_round']:.2f} ms/round (+ cache reorders "
                f"{m['cache_ms_per_round']:.2f})  KV peak "
                f"{m['kv_bytes_peak'] / 2**20:.1f} MiB  width {width}"
                + ("" if peak is None else f"  peak alloc {peak / 2**20:.0f} MiB")
            )
        if "beam_steps_per_s_dynamic_cache" in r:
            print(
                f"[{dtype}] beam steps/s: ours {r['beam_steps_per_s_ours']:.2f}, DynamicCache "
                f"{r['beam_steps_per_s_dynamic_cache']:.2f} (ours "
                f"x{r['ours_over_dynamic_cache']:.3f}); transformers generate: {r['hf_generate']}"
            )


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
            if name == "h-probe" and r["h_median_by_level"]:
                medians = ", ".join(f"{lv}: {h:.2f}" for lv, h in r["h_median_by_level"].items())
                print(f"[{dtype}] median H by level ({report['split']} questions): {medians}")


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


# -- gpu-check ---------------------------------------------------------------------------------

NEEDS_CUDA = (
    "gpu-check needs a CUDA device; the CPU proxy runs in the test suite (tests/test_host_reads.py)"
)
EXIT_NO_CUDA = 2
EXIT_FAILED = 1
CHECK_PROMPTS = 3
CHECK_PROMPT_LEN = 24
CHECK_NEW_TOKENS = 48
TREE_PARAMS: dict[str, dict] = {
    "eagle": {},
    "eagle2": {"top_k": 10, "depth": 6, "total_tokens": 60},
    "ddd": {},  # the paper's S = {5, 7, 9}, x = -0.3, n = 11
    "ddd_async": {},
}
# Small enough that some rounds stop at each check level and some run to the last level.
ASYNC_PARAMS = {"top_k": 4, "total_tokens": 24, "check_levels": [2, 3, 4], "max_levels": 6}
ASYNC_THRESHOLDS = (-0.3, -1.0, -3.0, -10.0)
SLEEP_CYCLES = 5_000_000  # a few ms on a current GPU: longer than a level's host work
LONG_POSITIONS = (1000, 2000)
# fp16 vs fp32 head at LONG_POSITIONS, attention sharpened by QK_SCALE (see check_head_fp16)
MIN_TOP1_AGREEMENT = 0.98
MAX_LOGIT_ERROR = 0.1  # in standard deviations of the fp32 logits
QK_SCALE = 20.0


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


@dataclass
class CheckModels:
    target: PreTrainedModel
    draft: PreTrainedModel  # for dsbd: a 1-layer random model over the target's vocabulary
    head: torch.nn.Module  # an untrained EAGLE head over the target


def tiny_check_config(vocab_size: int = 1024) -> LlamaConfig:
    """The random target of the GPU check: small, with room for positions past 2,000."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def random_model(config: LlamaConfig, seed: int, device: torch.device) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    # Random init gives near-uniform logits; a scaled head makes drafts agree now and then.
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    return model.to(device)


def check_models(
    device: torch.device, model_path: str | None = None, config: LlamaConfig | None = None
) -> CheckModels:
    """The target (random from `config`, default tiny_check_config(), unless `model_path`), a
    1-layer random draft over its vocabulary and a random EAGLE head over it."""
    if model_path is None:
        target = random_model(config or tiny_check_config(), 0, device)
    else:
        target = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        target = target.eval().to(device)
    text = target.config.get_text_config()
    draft_config = copy.deepcopy(config or tiny_check_config())
    draft_config.vocab_size = text.vocab_size
    draft_config.num_hidden_layers = 1
    draft = random_model(draft_config, 1, device)
    torch.manual_seed(2)
    head = build_head(head_config_for(target), target)
    return CheckModels(target, draft, head)


def check_decoder(models: CheckModels, algorithm: str, temperature: float, params: dict) -> Decoder:
    loaded = LoadedPair(
        name="gpu-check",
        target=models.target,
        tokenizer=None,  # type: ignore[arg-type]  # token ids in, token ids out
        draft=models.draft,
        conversation="plain",
        eos_ids=frozenset(),
        token_text=(),
        head=models.head,
    )
    choice = MethodChoice(algorithm, algorithm, make_params(algorithm, params))
    return Decoder(loaded, choice, temperature)


def check_prompts(vocab_size: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (CHECK_PROMPTS, CHECK_PROMPT_LEN), generator=generator)
    return ids.tolist()


@contextlib.contextmanager
def sync_errors() -> Iterator[None]:
    """Any host sync in the block raises (CUDA sync debug mode "error")."""
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


@contextlib.contextmanager
def wrapped_forward(runner: ModelRunner, around: Callable[[Callable], Callable]) -> Iterator[None]:
    """Replace one runner's forward by `around(forward)` for the block."""
    runner.forward = around(runner.forward)  # type: ignore[method-assign]
    try:
        yield
    finally:
        del runner.forward


def check_sync_free(
    models: CheckModels,
    region: Callable[[], AbstractContextManager[object]] = sync_errors,
) -> list[CheckResult]:
    """Generate with every draft level inside `region` (a host sync there raises)."""
    prompts = check_prompts(models.target.get_output_embeddings().weight.shape[0])
    out = []
    cases = [(name, t, params) for name, params in TREE_PARAMS.items() for t in (0.0, 1.0)]
    cases.append(("dsbd", 1.0, {}))
    for name, temperature, params in cases:
        decoder = check_decoder(models, name, temperature, params)
        decoder.generate(prompts[0], 8, 0)  # warm-up (lazy inits) outside the checked regions
        if name == "dsbd":
            assert decoder.draft is not None
            where = "each draft-model forward of the forest"

            def strict(forward: Callable) -> Callable:
                def run(*args: object, **kwargs: object) -> object:
                    with region():
                        return forward(*args, **kwargs)

                return run

            scope: AbstractContextManager[object] = wrapped_forward(decoder.draft, strict)
        else:
            where = "each draft level: head forward, top-k, beam update"
            scope = checked_levels(region)
        label = f"sync-free draft levels [{name} T={temperature:g}]"
        try:
            with scope:
                for seed, ids in enumerate(prompts):
                    decoder.generate(ids, CHECK_NEW_TOKENS, seed)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            out.append(CheckResult(label, False, f"a host sync in {where}: {first[:300]}"))
            continue
        out.append(CheckResult(label, True, f"no sync in {where}"))
    return out


def _delayed(cycles: int) -> Callable[[Callable], Callable]:
    """A head forward followed by a sleep queued on the stream: the check computed after it
    (and the flag's copy) lands on the host late, while the host drafts on."""

    def around(forward: Callable) -> Callable:
        def run(*args: object, **kwargs: object) -> object:
            out = forward(*args, **kwargs)
            if cycles:
                torch.cuda._sleep(cycles)
            return out

        return run

    return around


def _tree_record(result: GenerationResult) -> tuple:
    rounds = result.extra["rounds"]
    return (result.tokens, rounds["levels"], rounds["tree_size"], rounds["checks"])


def check_async_trees(models: CheckModels, sleep_cycles: int = SLEEP_CYCLES) -> CheckResult:
    """ddd_async against ddd with the head's stream delayed: equal tokens, trees and H values,
    and levels drafted past a stop (proof that flags were still in flight when polled)."""
    prompts = check_prompts(models.target.get_output_embeddings().weight.shape[0])
    mismatches, rounds, dropped, stopped = [], 0, 0, 0
    for threshold in ASYNC_THRESHOLDS:
        params = {**ASYNC_PARAMS, "threshold": threshold}
        for temperature in (0.0, 1.0):
            runs = {}
            for name in ("ddd", "ddd_async"):
                decoder = check_decoder(models, name, temperature, params)
                assert decoder.head is not None
                with wrapped_forward(decoder.head, _delayed(sleep_cycles)):
                    runs[name] = [
                        decoder.generate(ids, CHECK_NEW_TOKENS, seed)[0]
                        for seed, ids in enumerate(prompts)
                    ]
            for seed, (ref, got) in enumerate(zip(runs["ddd"], runs["ddd_async"], strict=True)):
                if _tree_record(ref) != _tree_record(got):
                    mismatches.append(f"x={threshold} T={temperature:g} prompt {seed}")
                levels = got.extra["rounds"]["levels"]
                drafted = got.extra["rounds"]["drafted"]
                rounds += len(levels)
                stopped += sum(n < ASYNC_PARAMS["max_levels"] for n in levels)
                dropped += sum(d - n for d, n in zip(drafted, levels, strict=True))
    name = "ddd_async reads no stale flag (vs ddd, delayed stream)"
    counts = f"{rounds} rounds, {stopped} stopped early, {dropped} levels drafted past a stop"
    if mismatches:
        return CheckResult(name, False, f"trees differ from ddd's: {mismatches[:5]} ({counts})")
    if dropped == 0:
        return CheckResult(
            name, False, f"no flag was pending when polled: the delay did not bite ({counts})"
        )
    return CheckResult(name, True, f"tokens, trees and H equal ddd's; {counts}")


def head_top1(head: torch.nn.Module, tokens: torch.Tensor, features: torch.Tensor) -> tuple:
    """The head's logits over a whole sequence (t reads x_{t+1} and f_t), in one forward."""
    runner = ModelRunner(head, "head")
    runner.reset(len(tokens) + 1)
    logits = runner.forward(tokens, features=features).logits
    return logits.argmax(dim=-1), logits


def sharpened(head: torch.nn.Module, factor: float = QK_SCALE) -> torch.nn.Module:
    """A copy of `head` whose attention scores are `factor` x larger: a random head attends
    almost uniformly, which hides position errors; a sharp one attends by relative position."""
    head = copy.deepcopy(head)
    attention = head.layers[0].self_attn
    with torch.no_grad():
        attention.q_proj.weight.mul_(factor)
        attention.k_proj.weight.mul_(factor)
    return head


def check_head_fp16(
    models: CheckModels, positions: tuple[int, int] = LONG_POSITIONS
) -> CheckResult:
    """The same head in fp32 and fp16 over one sequence: the top-1 drafts and logits at
    positions [lo, hi) agree (a float16-rounded RoPE frequency makes them drift apart past
    ~1,000: on the CPU, agreement 0.957 and max logit error 0.65 std, against 0.997 and 0.014
    with float32 frequencies)."""
    lo, hi = positions
    target = models.target
    device = next(target.parameters()).device
    generator = torch.Generator().manual_seed(3)
    vocab = target.get_output_embeddings().weight.shape[0]
    seq = torch.randint(0, vocab, (hi + 1,), generator=generator).to(device)
    runner = ModelRunner(target, "target")
    runner.reset(hi + 1)
    features = runner.forward(seq, logits_from=hi + 1, want_hidden=True).hidden
    head32 = sharpened(models.head)
    top32, logits32 = head_top1(head32, seq[1:], features[:-1])
    target16 = copy.deepcopy(target).to(torch.float16)
    head16 = build_head(head_config_for(target16), target16)
    head16.load_state_dict(head32.state_dict())
    top16, logits16 = head_top1(head16, seq[1:], features[:-1].to(torch.float16))
    window = slice(lo, hi)
    agree = float((top16[window] == top32[window]).float().mean())
    short = float((top16[:lo] == top32[:lo]).float().mean())
    scale = float(logits32[window].std())
    err = float((logits16[window] - logits32[window]).abs().max()) / max(scale, 1e-12)
    ok = agree >= MIN_TOP1_AGREEMENT and err <= MAX_LOGIT_ERROR
    detail = (
        f"positions {lo}-{hi}: top-1 agreement {agree:.4f} (>= {MIN_TOP1_AGREEMENT} needed; "
        f"{short:.4f} before {lo}), max |logit diff| {err:.3f} logit std "
        f"(<= {MAX_LOGIT_ERROR} needed)"
    )
    return CheckResult("fp16 EAGLE head = fp32 head past 1,000 positions", ok, detail)


def check_energy(models: CheckModels, seconds: float = 2.0) -> CheckResult:
    """NVML energy over vanilla generations of at least `seconds` (the harness's meter)."""
    name = "NVML energy of a short generation"
    device = next(models.target.parameters()).device
    meter = open_energy_meter(device, 20.0)
    try:
        if not meter.available:
            return CheckResult(name, False, f"no energy meter: {meter.reason}")
        meter.measure_idle(1.0)
        decoder = check_decoder(models, "vanilla", 0.0, {})
        prompts = check_prompts(models.target.get_output_embeddings().weight.shape[0])
        decoder.generate(prompts[0], 8, 0)
        tokens, start = 0, time.perf_counter()
        with meter.window() as reading:
            while time.perf_counter() - start < seconds:
                result, _ = decoder.generate(prompts[tokens % len(prompts)], 64, 0)
                tokens += result.new_tokens
            synchronize(device)
        per_token = reading.joules_per_token(tokens)
        net = reading.joules_per_token(tokens, net=True)
        if per_token is None or not per_token > 0:
            return CheckResult(name, False, f"no energy measured: {reading.reason}")
        net_text = "-" if net is None else f"{net:.4g}"
        return CheckResult(
            name,
            True,
            f"{per_token:.4g} J/token ({net_text} net of idle) over {tokens} tokens, "
            f"{reading.duration_s:.2f} s, source {reading.source}",
        )
    finally:
        meter.close()


def run_gpu_check(args: argparse.Namespace) -> int:
    """Every check, one PASS/FAIL line each; the exit code (0 all passed, 1 one failed)."""
    if not torch.cuda.is_available():
        print(NEEDS_CUDA, file=sys.stderr)
        return EXIT_NO_CUDA
    device = torch.device(args.device if args.device.startswith("cuda") else "cuda")
    models = check_models(device, args.model)
    print(f"gpu-check on {torch.cuda.get_device_name(device)} (target: {args.model or 'tiny'})")
    checks: list[tuple[str, Callable[[], list[CheckResult] | CheckResult]]] = [
        ("sync-free draft levels", lambda: check_sync_free(models)),
        ("ddd_async stale flags", lambda: check_async_trees(models, args.sleep_cycles)),
        ("fp16 EAGLE head", lambda: check_head_fp16(models)),
        ("NVML energy", lambda: check_energy(models)),
    ]
    results: list[CheckResult] = []
    for name, check in checks:
        try:
            got = check()
        except Exception as err:  # noqa: BLE001 - one broken check must not hide the others
            got = CheckResult(name, False, f"error: {type(err).__name__}: {err}"[:500])
        for result in got if isinstance(got, list) else [got]:
            print(result.line(), flush=True)
            results.append(result)
    failed = sum(not r.ok for r in results)
    print(f"gpu-check: {len(results) - failed} passed, {failed} failed")
    return EXIT_FAILED if failed else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m specrepro.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("forward", "decode", "trees", "beams"):
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
    decode.add_argument(
        "--split", choices=["tuning", "eval"], default="tuning",
        help="tuning: held-out questions no student trained on (default); eval: evaluated ones",
    )  # fmt: skip
    decode.add_argument("--max-new-tokens", type=int, default=64)
    decode.add_argument("--gamma", type=int, default=3)
    trees = sub.choices["trees"]
    trees.add_argument("--dataset", default="mtbench")
    trees.add_argument("--n", type=int, default=5)
    trees.add_argument(
        "--split", choices=["tuning", "eval"], default="tuning",
        help="tuning: held-out questions no student trained on (default); eval: evaluated ones",
    )  # fmt: skip
    trees.add_argument("--max-new-tokens", type=int, default=64)
    trees.add_argument(
        "--methods", nargs="+", default=["eagle", "eagle2", "ddd", "ddd-async", "eagle2-cpu"]
    )
    trees.add_argument(
        "--probe-h", metavar="ENTRY", default="ddd-cpu",
        help="also run this ddd entry with a check at every level and no stop, and print the "
        "median H per level (what a threshold x is chosen from); '' to skip",
    )  # fmt: skip
    beams = sub.choices["beams"]
    beams.add_argument("--dataset", default="squad")
    beams.add_argument("--n", type=int, default=5)
    beams.add_argument(
        "--split", choices=["tuning", "eval"], default="tuning",
        help="tuning: held-out questions no student trained on (default); eval: evaluated ones",
    )  # fmt: skip
    beams.add_argument("--max-new-tokens", type=int, default=32)
    beams.add_argument(
        "--methods", nargs="+", default=["beam", "dsbd-t0p9", "dsbd"],
        help="config entries; the first beam one is the reference, the last a dsbd one (its "
        "shared-prefix layout copy runs too)",
    )  # fmt: skip
    beams.add_argument(
        "--no-baselines", action="store_true",
        help="skip the DynamicCache and transformers generate beam samplers",
    )  # fmt: skip
    check = sub.add_parser(
        "gpu-check", help="pass/fail checks on a CUDA device (see the description above)"
    )
    check.add_argument("--model", help="a local causal LM folder as the target (default: tiny)")
    check.add_argument("--device", default="cuda")
    check.add_argument("--sleep-cycles", type=int, default=SLEEP_CYCLES)
    args = parser.parse_args(argv)
    if args.what == "gpu-check":
        sys.exit(run_gpu_check(args))
    if args.what == "beams":
        report = run_beams(args)
        print_beams(report, args)
    elif args.what == "forward":
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
