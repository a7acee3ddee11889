"""Benchmark: ratios measured in one run, on the same prompts, machine and models.

  python -m specrepro.bench --pair smollm2 --dtypes float32 bfloat16 --n 5 --max-new-tokens 64

Prints, per dtype: our vanilla and sps tokens/s, their ratio, tau and the T=0 match rate; and our
sps against transformers' assisted generation (`assistant_model`) with the same draft and gamma.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from specrepro.config import MethodChoice, load_config, resolve_pair
from specrepro.data import load_prompts
from specrepro.decoding.base import make_params
from specrepro.harness import Decoder, LoadedPair, load_pair
from specrepro.prompting import conversation, encode


def hf_assisted(
    loaded: LoadedPair, prompt_ids: list[int], max_new_tokens: int, gamma: int | None
) -> tuple[list[int], float]:
    """transformers' own greedy generation, assisted by the draft when gamma is given."""
    kwargs: dict = {}
    if gamma is not None:
        draft_cfg = loaded.draft.generation_config
        draft_cfg.num_assistant_tokens = gamma
        draft_cfg.num_assistant_tokens_schedule = "constant"
        draft_cfg.assistant_confidence_threshold = 0.0
        kwargs["assistant_model"] = loaded.draft
    ids = torch.tensor([prompt_ids], device=loaded.target.device)
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
    elapsed = time.perf_counter() - start
    new = out[0, len(prompt_ids) :].tolist()
    cut = next((i + 1 for i, t in enumerate(new) if t in loaded.eos_ids), len(new))
    return new[:cut], elapsed


def run(args: argparse.Namespace) -> dict:
    config = load_config(args.config)
    resolve_pair(config, args.pair)
    prompts = load_prompts(args.dataset, Path(config["data"]["dir"]), args.n, args.seed)
    report: dict = {
        "pair": args.pair,
        "dataset": args.dataset,
        "n": len(prompts),
        "gamma": args.gamma,
    }
    for dtype in args.dtypes:
        loaded = load_pair(config, args.pair, dtype, args.device, need_draft=True)
        vanilla = Decoder(
            loaded, MethodChoice("vanilla", "vanilla", make_params("vanilla", {})), 0.0
        )
        sps = Decoder(
            loaded, MethodChoice("sps", "sps", make_params("sps", {"gamma": args.gamma})), 0.0
        )
        encoded = [
            encode(loaded.tokenizer, conversation(p, 0, []), loaded.use_chat_template)
            for p in prompts
        ]
        vanilla.generate(encoded[0], 8, 0)  # warm-up
        sps.generate(encoded[0], 8, 0)
        hf_assisted(loaded, encoded[0], 8, args.gamma)
        totals = {k: [0, 0.0] for k in ("vanilla", "sps", "hf_greedy", "hf_assisted")}
        forwards, matches, hf_matches = 0, 0, 0
        for ids in encoded:
            a, ta = vanilla.generate(ids, args.max_new_tokens, 0)
            b, tb = sps.generate(ids, args.max_new_tokens, 0)
            c, tc = hf_assisted(loaded, ids, args.max_new_tokens, None)
            d, td = hf_assisted(loaded, ids, args.max_new_tokens, args.gamma)
            for key, n, t in (("vanilla", a.new_tokens, ta.total), ("sps", b.new_tokens, tb.total),
                              ("hf_greedy", len(c), tc), ("hf_assisted", len(d), td)):  # fmt: skip
                totals[key][0] += n
                totals[key][1] += t
            forwards += b.target_forwards
            matches += int(a.tokens == b.tokens)
            hf_matches += int(d == b.tokens)
        tps = {k: n / t for k, (n, t) in totals.items()}
        report[dtype] = {
            "tokens_per_s": tps,
            "sps_over_vanilla": tps["sps"] / tps["vanilla"],
            "sps_over_hf_assisted": tps["sps"] / tps["hf_assisted"],
            "vanilla_over_hf_greedy": tps["vanilla"] / tps["hf_greedy"],
            "tau": totals["sps"][0] / forwards,
            "sps_vanilla_match_rate": matches / len(encoded),
            "sps_hf_assisted_match_rate": hf_matches / len(encoded),
        }
        del loaded, vanilla, sps
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m specrepro.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", nargs="+", default=["config/config.yaml"])
    parser.add_argument("--pair", default="smollm2")
    parser.add_argument("--dataset", default="mtbench")
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1, help="prompt subsample seed")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--gamma", type=int, default=3)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    report = run(args)
    for dtype in args.dtypes:
        r = report[dtype]
        tps = ", ".join(f"{k} {v:.1f}" for k, v in r["tokens_per_s"].items())
        print(f"[{dtype}] tokens/s: {tps}")
        print(
            f"[{dtype}] sps/vanilla {r['sps_over_vanilla']:.3f}  sps/hf_assisted "
            f"{r['sps_over_hf_assisted']:.3f}  "
            f"vanilla/hf_greedy {r['vanilla_over_hf_greedy']:.3f}  "
            f"tau {r['tau']:.2f}  match(sps,vanilla) {r['sps_vanilla_match_rate']:.2f}  "
            f"match(sps,hf_assisted) {r['sps_hf_assisted_match_rate']:.2f}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
