"""The `trees` bench: the EAGLE family of tree drafts against our vanilla, on the pair's head.

It runs the config's method entries (--methods, e.g. eagle eagle2 ddd ddd-async eagle2-cpu) and
vanilla at T=0 on the same prompts, interleaved per prompt, each prompt in the next order of a
Williams design (every method right after every other equally often); `vanilla-aa` (vanilla again,
under another name) is the A/A control. With --probe-h, a copy of that ddd entry checks at every
level and never stops (`h-probe`): its rounds give the median H per level that a threshold x is
chosen from.

Reading it: `speedup` is a method's tokens/s over vanilla's (ratio of totals); vanilla-aa's
speedup shows how much the machine drifted during the run, so a speedup is only meaningful
beyond that distance from 1. `tau` is tokens per target forward, `levels` the mean levels
drafted per round, draft/verify/other the shares of wall time, and `match` the share of
prompts on which a method produced vanilla's exact tokens. Per method, acceptance by depth:
at depth d given d - 1, and the share of rounds that reached d (report/acceptance.py).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict

from specrepro.bench.common import add_model_args, add_prompt_args, loaded_prompts
from specrepro.config import MethodChoice, resolve_method
from specrepro.report.acceptance import MAX_DEPTH, depth_rates, verification_rounds
from specrepro.run.decoder import LoadedPair
from specrepro.tree_tuning import h_medians, h_probe, interleaved_stats


def run_trees(args: argparse.Namespace) -> dict:
    config, report, loads = loaded_prompts(args, ("head",))
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


def tree_ratios(
    loaded: LoadedPair, methods: dict[str, MethodChoice], encoded: list[list[int]], max_new: int
) -> dict:
    """Speedup over vanilla, tau, levels, H medians and the time split of every method."""
    stats = interleaved_stats(loaded, methods, encoded, max_new)
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
            "h_median_by_level": h_medians(entry["checks"]),
            "split": {
                key: t / seconds
                for key, t in zip(("draft", "verify", "other"), entry["split"], strict=True)
            },
            "match_vanilla": sum(a == b for a, b in zip(entry["out"], base["out"], strict=True))
            / len(encoded),
            # Acceptance by depth (report/acceptance.py): given the depth before, and reached.
            "depth": asdict(depth_rates(
                verification_rounds(entry["accept_lengths"], entry["forwards"]),
                chain_depths(methods[name], entry), MAX_DEPTH,
            )) if entry["accept_lengths"] else None,
        }  # fmt: skip
    return out


def chain_depths(choice: MethodChoice, entry: dict) -> list[int]:
    """Levels drafted per round: as recorded, else the method's depth (eagle's static tree: its
    deepest level is not recorded; MAX_DEPTH stands for it)."""
    rounds = min(len(entry["accept_lengths"]), entry["forwards"])
    if len(entry["levels"]) >= rounds:
        return list(entry["levels"][len(entry["levels"]) - rounds :])
    depth = getattr(choice.params, "depth", None) or getattr(choice.params, "gamma", MAX_DEPTH)
    return [int(depth)] * rounds


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
            if r["depth"] and name not in ("vanilla", "vanilla-aa"):
                given = " ".join(
                    "-" if g is None else f"{g:.2f}" for g in r["depth"]["given_previous"]
                )
                reached = " ".join(f"{v:.2f}" for v in r["depth"]["reached"])
                print(
                    f"[{dtype}] {name:12s} accepted at depth d | d-1: {given}; reached: {reached}"
                )
            if name == "h-probe" and r["h_median_by_level"]:
                medians = ", ".join(f"{lv}: {h:.2f}" for lv, h in r["h_median_by_level"].items())
                print(f"[{dtype}] median H by level ({report['split']} questions): {medians}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("trees")
    add_model_args(parser)
    add_prompt_args(parser, dataset="mtbench", max_new_tokens=64)
    parser.add_argument(
        "--methods", nargs="+", default=["eagle", "eagle2", "ddd", "ddd-async", "eagle2-cpu"]
    )
    parser.add_argument(
        "--probe-h", metavar="ENTRY", default="ddd-cpu",
        help="also run this ddd entry with a check at every level and no stop, and print the "
        "median H per level (what a threshold x is chosen from); '' to skip",
    )  # fmt: skip
