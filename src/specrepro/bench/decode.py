"""The `decode` bench: our vanilla and sps against transformers' own generation.

On the same prompts at T=0 it runs our vanilla and sps (gamma --gamma) against transformers' greedy
`generate` (dynamic and static cache) and its assisted generation (`assistant_model`: the same
draft, the same constant gamma), interleaved per prompt, each prompt in the next order of a Williams
design (every method right after every other equally often) so that drift hits all alike.
transformers runs on its own copy of the models, taken before our engine packs its weights
(engine/packed.py): the kernels a transformers user gets.

Reading it: every `a_over_b` is a's tokens/s over b's (ratio of totals), above 1 when a is
faster; `tau` is sps's tokens per target forward; `match_a_b` is the share of prompts on which a
and b produced exactly the same tokens (all five are greedy: below 1 means they diverged).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time

import torch

from specrepro.bench.common import add_model_args, add_prompt_args, loaded_prompts
from specrepro.config import MethodChoice
from specrepro.decoding.base import make_params
from specrepro.engine.timing import synchronize
from specrepro.run.decoder import Decoder, LoadedPair
from specrepro.run.timing_group import balanced_order


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
    _, report, loads = loaded_prompts(args, ("draft",))
    report["gamma"] = args.gamma
    for dtype, loaded, encoded in loads:
        report[dtype] = decode_ratios(loaded, encoded, args.max_new_tokens, args.gamma)
    return report


def decode_ratios(
    loaded: LoadedPair, encoded: list[list[int]], max_new_tokens: int, gamma: int
) -> dict:
    """Every implementation on every prompt, interleaved so that drift hits all alike."""
    theirs = dataclasses.replace(
        loaded, target=copy.deepcopy(loaded.target), draft=copy.deepcopy(loaded.draft)
    )
    vanilla = Decoder(loaded, MethodChoice("vanilla", "vanilla", make_params("vanilla", {})), 0.0)
    sps = Decoder(loaded, MethodChoice("sps", "sps", make_params("sps", {"gamma": gamma})), 0.0)
    runs = {
        "vanilla": lambda ids, n: _ours(vanilla, ids, n),
        "sps": lambda ids, n: _ours(sps, ids, n),
        "hf_greedy_dynamic": lambda ids, n: hf_generate(theirs, ids, n),
        "hf_greedy_static": lambda ids, n: hf_generate(theirs, ids, n, None, "static"),
        "hf_assisted": lambda ids, n: hf_generate(theirs, ids, n, gamma),
    }
    for run in runs.values():  # warm-up
        run(encoded[0], 8)
    totals = {k: [0, 0.0] for k in runs}
    outputs: dict[str, list[list[int]]] = {k: [] for k in runs}
    forwards = 0
    for index, ids in enumerate(encoded):
        for key in balanced_order(list(runs), index):
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


def _ours(decoder: Decoder, ids: list[int], max_new_tokens: int) -> tuple[list[int], float]:
    result, timer = decoder.generate(ids, max_new_tokens, 0)
    return result.tokens, timer.total


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


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("decode")
    add_model_args(parser)
    add_prompt_args(parser, dataset="mtbench", max_new_tokens=64)
    parser.add_argument("--gamma", type=int, default=3)
