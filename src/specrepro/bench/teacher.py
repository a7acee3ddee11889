"""The `teacher` bench: could the teacher corpus be generated in a lower precision?

  python -m specrepro.bench teacher --dtypes float32 bfloat16 int4 --n 32

The teacher corpus (training/teacher.py) is the target's continuation of the training prompts
with its top-k log-probs and final-norm hidden states (features) at every position: what every
draft and EAGLE head learns from. Per dtype (float32 first, the reference; int4 is the engine's
4-bit mode, loaded as `verify-cost` loads it) this bench runs `teacher_generations` on the same
prompts with the teacher's own CorpusConfig and seed, and reports:

- speed: response tokens generated per second, and the ratio to float32 in the same run;
- tolerance: the dtype's model teacher-forced over the float32 run's tokens (one forward per
  sample), its features rounded as the corpus stores them, against the float32 run's stored
  features at the response's positions (each position whose next token is a response token:
  the rows the corpus keeps top-k for): median and 95th percentile of the relative L2 error
  ||f - f32|| / ||f32|| per position, mean cosine similarity, the share of positions whose
  argmax next token equals float32's, and the mean overlap of the top-k id sets.

Sampled continuations differ between dtypes (T > 0, and rounding flips draws), so features are
compared on the float32 tokens, never between the two corpora. The float32 row compares the
reference with itself (0 error, agreement 1). A dtype the loader cannot run teacher generation
in (int4 off the CPU, say) gets a row saying why instead of numbers.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from specrepro.cli.common import section_entry
from specrepro.config import ConfigError, load_config, model_spec
from specrepro.data import read_prompts_jsonl
from specrepro.models.loader import ModelError, load_model, parse_dtype
from specrepro.planning.paths import RunPaths
from specrepro.prompting import default_conversation
from specrepro.training.teacher import (
    FEATURE_DTYPE,
    CorpusConfig,
    Sample,
    teacher_generations,
)

REFERENCE = "float32"
# What loading a dtype or generating in it raises when the platform cannot run it (the int4
# kernel off the CPU or missing from a torch build, a dtype an op has no kernel for).
CANNOT_RUN = (ModelError, RuntimeError, NotImplementedError)


def run_teacher(args: argparse.Namespace) -> dict:
    for dtype in args.dtypes:  # a typo fails here, not as a dtype that "cannot run"
        parse_dtype(dtype)
    config = load_config(args.config)
    teachers = config.get("teachers") or {}
    name = args.teacher or next(iter(teachers), None)
    if name is None:
        raise ConfigError("the config has no `teachers` entry to benchmark")
    cfg = CorpusConfig.from_config(section_entry(config, "teachers", name))
    if args.gen_tokens is not None:
        cfg = replace(cfg, gen_tokens=args.gen_tokens)
    path = Path(
        args.prompts or RunPaths(config["run"]).in_results(f"teachers/{name}/train_prompts.jsonl")
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"training prompts {path} not found: the DAG writes them (`specrepro train-prompts "
            f"--teacher {name} --out {path}`); or pass --prompts FILE"
        )
    prompts = read_prompts_jsonl(path)[: args.n]
    if not prompts:
        raise ConfigError(f"no prompts to generate from (--n {args.n}, {path})")
    spec, cache_root = model_spec(config, name), Path(config["models"]["cache_dir"])

    def load(dtype: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        return load_model(spec, dtype, args.device, cache_root)

    return {
        "teacher": name,
        "prompts": str(path),
        "n": len(prompts),
        "device": args.device,
        "corpus": asdict(cfg),
        "rows": compare_dtypes(load, args.dtypes, prompts, cfg),
    }


def compare_dtypes(
    load: Callable[[str], tuple[PreTrainedModel, PreTrainedTokenizerBase]],
    dtypes: list[str],
    prompts: list[dict],
    cfg: CorpusConfig,
) -> list[dict]:
    """One row per dtype, float32 first whether asked for or not (every ratio and error is
    against it): generation speed, and the features' tolerance against float32's."""
    rows, reference, reference_speed = [], [], 0.0
    for dtype in dict.fromkeys([REFERENCE, *dtypes]):
        try:
            model, tokenizer = load(dtype)
            samples, seconds = timed_generations(model, tokenizer, prompts, cfg)
        except CANNOT_RUN as err:
            if dtype == REFERENCE:
                raise
            rows.append({"dtype": dtype, "error": f"{type(err).__name__}: {err}"})
            continue
        tokens = sum(len(s.ids) - s.n_prompt for s in samples)
        speed = tokens / seconds
        if dtype == REFERENCE:
            reference, reference_speed = samples, speed
            forced = [(_response_rows(s, s.features), s.top_ids) for s in samples]
        else:
            forced = teacher_forced(model, reference)
        rows.append(
            {
                "dtype": dtype,
                "response_tokens": tokens,
                "seconds": seconds,
                "tokens_per_s": speed,
                "over_float32": speed / reference_speed,
                **tolerance(reference, forced),
            }
        )
        del model  # else the next dtype loads while this one is still held: two in memory
    return rows


def timed_generations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[dict],
    cfg: CorpusConfig,
) -> tuple[list[Sample], float]:
    """The corpus generations and their wall seconds, after an untimed two-token run on one
    prompt so that no dtype pays its kernels' first-call setup inside the timing (the
    generations reseed from cfg.seed, so the warm-up changes no draw)."""
    conversation = default_conversation(tokenizer)
    teacher_generations(model, tokenizer, prompts[:1], replace(cfg, gen_tokens=2), conversation)
    start = time.perf_counter()
    samples = teacher_generations(model, tokenizer, prompts, cfg, conversation)
    return samples, time.perf_counter() - start


def _response_rows(sample: Sample, per_position: torch.Tensor) -> torch.Tensor:
    """The rows of positions whose next token is a response token (aligned with top_ids)."""
    return per_position[sample.n_prompt - 1 : len(sample.ids) - 1]


@torch.inference_mode()
def teacher_forced(
    model: PreTrainedModel, reference: list[Sample]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per reference sample, `model`'s features at the response's positions (rounded to what
    the corpus stores) and its top-k next-token ids there, from one forward over the tokens."""
    device = next(model.parameters()).device
    out = []
    for sample in reference:
        n_response = len(sample.ids) - sample.n_prompt
        ids = torch.tensor([sample.ids], device=device)
        # The last position's logits predict past the response: keep one more, then drop it.
        step = model(ids, output_hidden_states=True, logits_to_keep=n_response + 1)
        features = _response_rows(sample, step.hidden_states[-1][0]).to("cpu", FEATURE_DTYPE)
        k = sample.top_ids.shape[-1]
        top = step.logits[0, :-1].float().topk(k, dim=-1).indices.cpu()
        out.append((features, top))
    return out


def tolerance(
    reference: list[Sample], forced: list[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, float]:
    """Per-position relative L2 error (median, 95th percentile) and cosine similarity of the
    features against the reference's, the share of equal argmax next tokens and the mean
    overlap of the top-k id sets."""
    errors, cosines, same, overlap = [], [], [], []
    for sample, (features, top) in zip(reference, forced, strict=True):
        got, ref = features.float(), _response_rows(sample, sample.features).float()
        errors.append((got - ref).norm(dim=-1) / ref.norm(dim=-1))
        cosines.append(torch.nn.functional.cosine_similarity(got, ref, dim=-1))
        same.append((top[:, 0] == sample.top_ids[:, 0]).float())
        # Ids are distinct within a row, so this counts |top ∩ reference top| / k.
        overlap.append((top[:, :, None] == sample.top_ids[:, None, :]).any(-1).float().mean(-1))
    error = torch.cat(errors)
    return {
        "positions": int(error.numel()),
        "rel_error_median": float(error.median()),
        "rel_error_p95": float(torch.quantile(error, 0.95)),
        "cosine_mean": float(torch.cat(cosines).mean()),
        "argmax_agreement": float(torch.cat(same).mean()),
        "topk_overlap": float(torch.cat(overlap).mean()),
    }


def print_teacher(report: dict, args: argparse.Namespace) -> None:
    c = report["corpus"]
    k = c["top_k"]
    print(
        f"teacher corpus of {report['teacher']}: {report['n']} prompts of {report['prompts']}, "
        f"up to {c['gen_tokens']} tokens at T={c['gen_temperature']}, batch "
        f"{c['gen_batch_size']}, seed {c['seed']}, on {report['device']}"
    )
    print(
        "tok/s: response tokens generated per second (x: over float32, same run). Each dtype "
        "teacher-forced over the float32 tokens, at response positions, against float32's"
    )
    print(
        "stored features: relerr = ||f - f32|| / ||f32|| per position (median, 95th pct), "
        f"cos = mean cosine, argmax = share of equal next-token argmax, top-{k} = mean overlap "
        "of the id sets"
    )
    print(
        f"{'dtype':9s} {'tok/s':>8s} {'x':>5s} {'relerr p50':>10s} {'relerr p95':>10s} "
        f"{'cos':>7s} {'argmax':>6s} {f'top-{k}':>6s}"
    )
    for r in report["rows"]:
        if "error" in r:
            print(f"{r['dtype']:9s} cannot run teacher generation: {r['error']}")
            continue
        print(
            f"{r['dtype']:9s} {r['tokens_per_s']:8.1f} {r['over_float32']:5.2f} "
            f"{r['rel_error_median']:10.4f} {r['rel_error_p95']:10.4f} {r['cosine_mean']:7.4f} "
            f"{r['argmax_agreement']:6.3f} {r['topk_overlap']:6.3f}"
        )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("teacher")
    parser.add_argument("--config", nargs="+", default=["config/config.yaml"])
    parser.add_argument("--teacher", help="a teachers entry (default: the config's first)")
    parser.add_argument(
        "--prompts",
        help="training prompts JSONL (default: the run's results/RUN/teachers/NAME/"
        "train_prompts.jsonl, written by the DAG)",
    )
    parser.add_argument("--n", type=int, default=32, help="the first n training prompts")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--gen-tokens", type=int, help="override the teacher's gen_tokens")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="also write the numbers as JSON")
