"""What the benches share: the arguments every bench takes and the prompts they run on.

A bench's prompts are the first --n questions of a dataset's split: its tuning questions by
default (`--split tuning`: never evaluated and never trained on, so that settings chosen from a
bench do not leak into the evaluated numbers), or the evaluated subsample (`--split eval`). The
pair is loaded once per dtype and every method a bench times runs on the same encoded prompts.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from specrepro.config import ConfigError, load_config, resolve_pair
from specrepro.data import load_prompts, load_tuning_prompts
from specrepro.prompting import encode_turn
from specrepro.run.decoder import LoadedPair
from specrepro.run.harness import load_pair

SPLIT_HELP = "tuning: held-out questions no student trained on (default); eval: evaluated ones"


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The pair, dtypes and device a bench loads, and where its JSON goes (all but gpu-check)."""
    parser.add_argument("--config", nargs="+", default=["config/config.yaml"])
    parser.add_argument("--pair", default="smollm2")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="also write the numbers as JSON")


def add_prompt_args(parser: argparse.ArgumentParser, dataset: str, max_new_tokens: int) -> None:
    """Which questions a bench runs and how long it generates; the defaults differ by bench."""
    parser.add_argument("--dataset", default=dataset)
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--split", choices=["tuning", "eval"], default="tuning", help=SPLIT_HELP)
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)


def bench_prompts(config: dict, dataset: str, n: int, split: str) -> list[dict]:
    """The first n questions of a split: "tuning" (never evaluated, never trained on: settings
    are chosen there) or "eval" (the evaluated subsample)."""
    entry = config["datasets"].get(dataset)
    if entry is None:
        configured = ", ".join(sorted(config["datasets"]))
        raise ConfigError(f"dataset {dataset!r} is not configured (datasets: {configured})")
    data_dir, seed = Path(config["data"]["dir"]), config["runs"].get("subsample_seed", 0)
    if split == "eval":
        return load_prompts(dataset, data_dir, entry["n"], seed, entry)[:n]
    held_out = entry.get("tuning", 0)
    if n > held_out:
        raise ConfigError(
            f"bench asks for {n} tuning questions of {dataset}, the config holds out "
            f"{held_out} (datasets.{dataset}.tuning); raise it, or pass --split eval"
        )
    return load_tuning_prompts(dataset, data_dir, entry["n"], seed, held_out, entry)[:n]


def loaded_prompts(
    args: argparse.Namespace, roles: tuple[str, ...]
) -> tuple[dict, dict, Iterator[tuple[str, LoadedPair, list[list[int]]]]]:
    """The config, the report's header, then per dtype: (dtype, loaded pair, encoded prompts)."""
    config = load_config(args.config)
    resolve_pair(config, args.pair)
    prompts = bench_prompts(config, args.dataset, args.n, args.split)
    report: dict = {
        "pair": args.pair, "dataset": args.dataset, "split": args.split, "n": len(prompts)
    }  # fmt: skip

    def per_dtype() -> Iterator[tuple[str, LoadedPair, list[list[int]]]]:
        for dtype in args.dtypes:
            loaded = load_pair(config, args.pair, dtype, args.device, roles)
            encoded = [
                encode_turn(loaded.tokenizer, p, 0, [], loaded.conversation) for p in prompts
            ]
            yield dtype, loaded, encoded

    return config, report, per_dtype()
