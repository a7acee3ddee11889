"""The `beams` bench: beam sampling and DSBD at T=1, and our beam against plain samplers.

It runs the config's method entries (--methods: the first beam entry is the reference, the last a
dsbd one, whose copy in the other cache layout runs too: `dsbd-rows`, or `dsbd-shared` when that
entry sets `layout: rows`) on the same prompts and seeds,
interleaved per prompt, each prompt in the next order of a Williams design (every method right after
every other equally often); unless --no-baselines, our
`beam` is also timed against a straightforward batched beam sampler on transformers'
DynamicCache (same sampling code, `reorder_cache` after each step) and against transformers'
`generate(num_beams=W, do_sample=True)`, where it runs.

Reading it: `x... of beam` is a method's tokens/s over the beam entry's (above 1: faster);
`target fwd/token` the target forwards per new token; host ms/round the wall time outside model
forwards and cache reorders per round (the reorders, device copies, printed apart); KV peak the
target + draft cache bytes, and on a GPU the peak allocated memory. The baselines compare beam
steps per second (the naive sampler has no stop rule beyond EOS): `ours x...` above 1 means
our beam steps faster.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import DynamicCache, PreTrainedModel

from specrepro.bench.common import add_model_args, add_prompt_args, loaded_prompts
from specrepro.config import MethodChoice, resolve_method
from specrepro.decoding.base import make_params
from specrepro.engine.timing import synchronize
from specrepro.report.tidy import beams_carried
from specrepro.run.decoder import LoadedPair
from specrepro.run.timing_group import balanced_order
from specrepro.tree_tuning import warm_decoders


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
    config, report, loads = loaded_prompts(args, ("draft",))
    for dtype, loaded, encoded in loads:
        methods = {name: resolve_method(config, name) for name in args.methods}
        name, other = layout_copy(config, args.methods[-1])
        values = {k: v for k, v in other.items() if k not in ("algorithm", "stop_at_answer")}
        methods[name] = MethodChoice(name, "dsbd", make_params("dsbd", values))
        report[dtype] = beam_ratios(
            loaded, methods, encoded, args.max_new_tokens, baselines=not args.no_baselines
        )
    return report


def layout_copy(config: dict, entry: str) -> tuple[str, dict]:
    """The name and config entry of `entry` (a dsbd one) in the other cache layout."""
    base = config["methods"][entry]
    layout = "rows" if base.get("layout", "shared_prefix") == "shared_prefix" else "shared_prefix"
    return ("dsbd-rows" if layout == "rows" else "dsbd-shared"), {**base, "layout": layout}


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
    decoders = warm_decoders(loaded, methods, 1.0, encoded[0])
    beam = next(c for c in methods.values() if c.algorithm == "beam").params
    cuda = loaded.target.device.type == "cuda"
    stats = {
        name: {
            "tokens": 0, "seconds": 0.0, "forwards": 0, "kv": 0, "peak": 0, "widths": [],
            "forward_seconds": 0.0, "cache_seconds": 0.0, "rounds": 0, "carried": [],
            "nodes": 0, "slots": 0, "loglik": [],
        }
        for name in decoders
    }  # fmt: skip
    naive = {"steps": 0, "seconds": 0.0}
    ours_steps = 0
    for i, ids in enumerate(encoded):
        for name in balanced_order(list(decoders), i):
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
            rounds = result.extra.get("rounds", {})
            entry["widths"] += [w for levels in rounds.get("widths", []) for w in levels]
            entry["carried"] += beams_carried(result.extra)
            entry["nodes"] += sum(rounds.get("forest_nodes", []))
            entry["slots"] += sum(rounds.get("forest_slots", []))
            # Outside the timed window: the target's log-likelihood of the output, per token.
            loglik = decoder.target_loglik(ids, result.tokens)
            if loglik is not None:
                entry["loglik"] += [loglik] * result.new_tokens
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
            "beams_carried": statistics.mean(entry["carried"]) if entry["carried"] else None,
            "forest_slots_per_node": entry["slots"] / entry["nodes"] if entry["nodes"] else None,
            "target_loglik_per_token": (
                statistics.mean(entry["loglik"]) if entry["loglik"] else None
            ),
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
        for name, m in r.items():
            if not isinstance(m, dict) or "tokens_per_s" not in m:
                continue  # the baselines' numbers, printed below
            width = "-" if m["mean_width"] is None else f"{m['mean_width']:.2f}"
            carried = "-" if m["beams_carried"] is None else f"{m['beams_carried']:.2f}"
            slots = m["forest_slots_per_node"]
            peak = m["peak_allocated_bytes"]
            print(
                f"[{dtype}] {name:12s} {m['tokens_per_s']:6.2f} tok/s  x{m['over_beam']:.3f} of "
                f"beam  target fwd/token {m['target_forwards_per_token']:.2f}  host "
                f"{m['host_ms_per_round']:.2f} ms/round (+ cache reorders "
                f"{m['cache_ms_per_round']:.2f})  KV peak "
                f"{m['kv_bytes_peak'] / 2**20:.1f} MiB  width {width}  beams carried {carried}"
                + ("" if slots is None else f"  forest slots/node {slots:.2f}")
                + f"  target loglik/token {m['target_loglik_per_token']:.3f}"
                + ("" if peak is None else f"  peak alloc {peak / 2**20:.0f} MiB")
            )
        if "beam_steps_per_s_dynamic_cache" in r:
            print(
                f"[{dtype}] beam steps/s: ours {r['beam_steps_per_s_ours']:.2f}, DynamicCache "
                f"{r['beam_steps_per_s_dynamic_cache']:.2f} (ours "
                f"x{r['ours_over_dynamic_cache']:.3f}); transformers generate: {r['hf_generate']}"
            )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("beams")
    add_model_args(parser)
    add_prompt_args(parser, dataset="squad", max_new_tokens=32)
    parser.add_argument(
        "--methods", nargs="+", default=["beam", "dsbd-t0p9", "dsbd"],
        help="config entries; the first beam one is the reference, the last a dsbd one (its "
        "copy in the other cache layout runs too)",
    )  # fmt: skip
    parser.add_argument(
        "--no-baselines", action="store_true",
        help="skip the DynamicCache and transformers generate beam samplers",
    )  # fmt: skip
