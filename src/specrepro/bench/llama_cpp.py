"""The `llama-cpp` bench: our vanilla decoding per engine mode beside llama.cpp on the same GGUF.

A user who wants a small GGUF model on a CPU would reach for llama.cpp. On the same tuning
prompts (chat-encoded by the pair's tokenizer, so both see the same token ids), greedy, the
same --max-new-tokens, it times our `vanilla` in each --dtypes mode (float32, bfloat16, int4:
the 4-bit mode over the GGUF's own Q4_1 blocks) and llama.cpp (llama-cpp-python, the
`llamacpp` extra) on the target's GGUF file with --threads threads; time includes the prompt.
It prints tokens/s, each over llama.cpp's, and the share of prompts whose tokens equal our
float32 vanilla's. The target must come from a GGUF file (`source: pypi_gguf`).
"""

from __future__ import annotations

import argparse
import time

import torch

from specrepro.bench.common import add_model_args, add_prompt_args, loaded_prompts
from specrepro.config import ConfigError, MethodChoice, model_spec, resolve_pair
from specrepro.decoding.base import make_params
from specrepro.models.loader import gguf_path
from specrepro.run.decoder import Decoder


def llama_cpp_greedy(llm, ids: list[int], max_new_tokens: int, eos: frozenset[int]) -> list[int]:
    """llama.cpp's greedy continuation of `ids`, cut after the first stop token."""
    llm.reset()
    out: list[int] = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        out.append(int(token))
        if token in eos or len(out) == max_new_tokens:
            break
    return out


def run_llama_cpp(args: argparse.Namespace) -> dict:
    try:
        from llama_cpp import Llama
    except ImportError as err:
        raise ConfigError(
            "the llama-cpp bench needs llama-cpp-python: pip install -e '.[llamacpp]'"
        ) from err
    config, report, loads = loaded_prompts(args, ())
    spec = model_spec(config, resolve_pair(config, args.pair)["target"])
    if spec.source != "pypi_gguf":
        raise ConfigError(f"the llama-cpp bench needs a GGUF target; {spec.name} is {spec.source}")
    report["rows"] = {}
    outputs: dict[str, list[list[int]]] = {}
    for dtype, loaded, encoded in loads:
        choice = MethodChoice("vanilla", "vanilla", make_params("vanilla", {}))
        vanilla = Decoder(loaded, choice, 0.0)
        vanilla.generate(encoded[0], 8, 0)  # warm-up
        tokens, seconds, outputs[dtype] = 0, 0.0, []
        for ids in encoded:
            result, timer = vanilla.generate(ids, args.max_new_tokens, 0)
            tokens, seconds = tokens + len(result.tokens), seconds + timer.total
            outputs[dtype].append(result.tokens)
        report["rows"][dtype] = {"tokens": tokens, "seconds": seconds}
        eos = loaded.eos_ids
        del vanilla, loaded
    llm = Llama(str(gguf_path(spec)), n_ctx=4096, n_threads=args.threads, verbose=False)
    llama_cpp_greedy(llm, encoded[0], 8, eos)  # warm-up
    tokens, seconds, outputs["llama.cpp"] = 0, 0.0, []
    for ids in encoded:
        start = time.perf_counter()
        out = llama_cpp_greedy(llm, ids, args.max_new_tokens, eos)
        seconds += time.perf_counter() - start
        tokens += len(out)
        outputs["llama.cpp"].append(out)
    report["rows"]["llama.cpp"] = {"tokens": tokens, "seconds": seconds}
    reference = outputs.get("float32")
    for name, row in report["rows"].items():
        row["tokens_per_s"] = row["tokens"] / row["seconds"]
        if reference is not None:
            same = sum(a == b for a, b in zip(outputs[name], reference, strict=True))
            row["match_float32"] = same / len(reference)
    peer = report["rows"]["llama.cpp"]["tokens_per_s"]
    for row in report["rows"].values():
        row["over_llama_cpp"] = row["tokens_per_s"] / peer
    return report


def print_llama_cpp(report: dict, args: argparse.Namespace) -> None:
    print(f"vanilla greedy, {report['n']} {report['dataset']} prompts, {args.threads} threads")
    for name, row in report["rows"].items():
        match = row.get("match_float32")
        print(
            f"{name:>10}: {row['tokens_per_s']:6.1f} tok/s (x{row['over_llama_cpp']:.2f} "
            f"llama.cpp)" + ("" if match is None else f", same tokens as float32: {match:.2f}")
        )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("llama-cpp")
    add_model_args(parser)
    add_prompt_args(parser, "mtbench", 128)
    parser.set_defaults(dtypes=["float32", "bfloat16", "int4"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
