"""The `subset` bench: acceptance and draft time against the draft vocabulary subset's size.

  python -m specrepro.bench subset --sizes 2048 8192 32768 full --methods sps eagle2-cpu

For each size the pair's draft and head are given the k most frequent tokens of the target's
teacher corpus (models/vocab_subset.py; `full` is the whole vocabulary), and each method entry
runs at T=0 on the same prompts, interleaved per prompt. Reported per size and method: `tau`
(tokens per target forward), draft seconds per round and the draft share of the wall time,
tokens/s, and `match`: the share of prompts whose tokens equal the full-vocabulary run's (T=0
is lossless, so anything below 1 would be a bug; only measured when `full` is among the sizes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from specrepro.bench.common import add_model_args, add_prompt_args, loaded_prompts
from specrepro.config import load_config, resolve_method, resolve_pair
from specrepro.models.vocab_subset import apply_subset, frequent_tokens, remove_subset
from specrepro.run.decoder import LoadedPair
from specrepro.training.teacher import load_corpus
from specrepro.tree_tuning import interleaved_stats


def run_subset(args: argparse.Namespace) -> dict:
    sizes = [None if s == "full" else int(s) for s in args.sizes]  # a typo fails before loading
    pair = resolve_pair(load_config(args.config), args.pair)
    roles = tuple(r for r in ("draft", "head") if r in pair)
    config, report, loads = loaded_prompts(args, roles)
    corpus = Path(args.corpus or f"results/default/teachers/{pair['target']}/corpus.pt")
    samples, _ = load_corpus(corpus)
    methods = {name: resolve_method(config, name) for name in args.methods}
    for dtype, loaded, encoded in loads:
        vocab = int(loaded.target.get_output_embeddings().weight.shape[0])
        rows: dict[str, dict] = {}
        for size, k in zip(args.sizes, sizes, strict=True):
            ids = None if k is None else frequent_tokens(samples, k, vocab)
            for model in (loaded.draft, loaded.head):
                if model is not None:
                    remove_subset(model) if ids is None else apply_subset(model, ids)
            rows[size] = _time_methods(loaded, methods, encoded, args.max_new_tokens)
        full = rows.get("full")
        for per_method in rows.values():
            for name, row in per_method.items():
                row["match_full"] = None if full is None else _share_equal(row, full[name])
        for per_method in rows.values():
            for row in per_method.values():
                del row["out"]
        report[dtype] = rows
    report["corpus"] = str(corpus)
    return report


def _time_methods(
    loaded: LoadedPair, methods: dict, encoded: list[list[int]], max_new: int
) -> dict:
    """tau, draft time per round and its share, tokens/s and the tokens, per method."""
    out = {}
    for name, entry in interleaved_stats(loaded, methods, encoded, max_new).items():
        seconds = sum(entry["split"])
        rounds = max(entry["forwards"], 1)
        out[name] = {
            "tau": entry["verified"] / rounds,
            "draft_ms_per_round": 1000 * entry["split"][0] / rounds,
            "draft_share": entry["split"][0] / seconds,
            "tokens_per_s": entry["tokens"] / seconds,
            "out": entry["out"],
        }
    return out


def _share_equal(row: dict, ref: dict) -> float:
    return sum(a == b for a, b in zip(row["out"], ref["out"], strict=True)) / len(row["out"])


def print_subset(report: dict, args: argparse.Namespace) -> None:
    for dtype in args.dtypes:
        for size, per_method in report[dtype].items():
            for name, r in per_method.items():
                match = "-" if r["match_full"] is None else f"{r['match_full']:.2f}"
                print(
                    f"[{dtype}] subset {size:>6s} {name:12s} tau {r['tau']:.2f}  draft "
                    f"{r['draft_ms_per_round']:7.2f} ms/round ({r['draft_share']:.2f} of time)  "
                    f"{r['tokens_per_s']:6.1f} tok/s  match {match}"
                )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("subset")
    add_model_args(parser)
    add_prompt_args(parser, dataset="mtbench", max_new_tokens=48)
    parser.add_argument(
        "--sizes", nargs="+", default=["2048", "8192", "32768", "full"],
        help="subset sizes k (the k most frequent corpus tokens), or 'full'",
    )  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=["sps", "eagle2-cpu"])
    parser.add_argument("--corpus", help="teacher corpus (default: the default run's)")
