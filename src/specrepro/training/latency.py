"""Per-token latency of one draft forward against depth and width
(docs/methods.md#draft-design-study).

Models are built from a shape with random weights (latency does not depend on the values) and
run through the shared runner, one token at a time with a KV cache, as a draft runs inside
speculative decoding. Building, the prompt's prefill and the warm-up steps stay outside the
timed part; each repeat restarts from an empty cache. Every timed forward is timed on its own,
so a row gives the median repeat (`ms_per_token`) and the spread: the slowest and fastest
repeat, and the 10th / 50th / 90th percentiles over all timed forwards; with each shape's KV-cache
bytes per context token.
"""

from __future__ import annotations

import copy
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from specrepro.engine.runner import ModelRunner
from specrepro.engine.timing import synchronize
from specrepro.training.family import Shape

Clock = Callable[[], float]


class Decoder(Protocol):
    def reset(self, capacity: int | None = None) -> None: ...
    def forward(self, tokens: list[int]) -> object: ...


@dataclass(frozen=True)
class LatencySettings:
    prompt_tokens: int = 32
    warmup: int = 3
    tokens: int = 16
    repeats: int = 3


def time_decode_tokens(
    decoder: Decoder,
    settings: LatencySettings,
    clock: Clock = time.perf_counter,
    sync: Callable[[], None] = lambda: None,
) -> list[list[float]]:
    """Seconds of each timed one-token forward, per repeat: prefill and warm-up run first,
    untimed; the device is synchronised around every timed forward."""
    repeats = []
    for _ in range(settings.repeats):
        decoder.reset(settings.prompt_tokens + settings.warmup + settings.tokens + 1)
        decoder.forward(list(range(1, settings.prompt_tokens + 1)))
        for _ in range(settings.warmup):
            decoder.forward([1])
        sync()
        times = []
        for _ in range(settings.tokens):
            start = clock()
            decoder.forward([1])
            sync()
            times.append(clock() - start)
        repeats.append(times)
    return repeats


def time_decode(
    decoder: Decoder,
    settings: LatencySettings,
    clock: Clock = time.perf_counter,
    sync: Callable[[], None] = lambda: None,
) -> list[float]:
    """Seconds per token of each repeat (its mean forward)."""
    return [sum(r) / len(r) for r in time_decode_tokens(decoder, settings, clock, sync)]


def spread(repeats: list[list[float]]) -> dict:
    """Milliseconds: the median, fastest and slowest repeat (mean per token), and the 10th,
    50th and 90th percentiles over every timed forward."""
    means = [1000 * sum(r) / len(r) for r in repeats]
    tokens = [1000 * t for r in repeats for t in r]
    p10, p50, p90 = (float(v) for v in np.percentile(tokens, [10, 50, 90]))
    return {
        "ms_per_token": statistics.median(means),
        "ms_per_token_repeats": means,
        "ms_per_token_min": min(means),
        "ms_per_token_max": max(means),
        "ms_token_p10": p10,
        "ms_token_p50": p50,
        "ms_token_p90": p90,
    }


def random_model(shape: Shape, base_config: object, dtype: torch.dtype, device: str):
    """A causal LM of `shape` with random weights, on a copy of `base_config` (its architecture,
    norms, rope) with the shape's sizes."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(base_config)
    for key, value in shape.config_overrides().items():
        setattr(config, key, value)
    config.vocab_size = shape.vocab_size
    config.tie_word_embeddings = shape.tie_word_embeddings
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.to(device).eval()


def profile_shapes(
    shapes: dict[str, tuple[Shape, object]],
    settings: LatencySettings,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    clock: Clock = time.perf_counter,
) -> list[dict]:
    """One row per named (shape, base config): its size, the time it took to build (untimed for
    latency), and the median seconds per token over the repeats."""
    rows = []
    for name, (shape, base_config) in tqdm(shapes.items(), desc="latency profile"):
        built = clock()
        model = random_model(shape, base_config, dtype, device)
        runner = ModelRunner(model, name)
        build_seconds = clock() - built
        sync = functools.partial(synchronize, runner.device)
        repeats = time_decode_tokens(runner, settings, clock, sync)
        rows.append(
            {
                "name": name,
                **shape.as_dict(),
                "counted_parameters": shape.counted_parameters(),
                "embedding_parameters": shape.embedding_parameters(),
                "kv_bytes_per_token": shape.kv_bytes_per_token(dtype.itemsize),
                **spread(repeats),
                "build_seconds": build_seconds,
                "dtype": str(dtype).removeprefix("torch."),
                "device": str(runner.device),
                **vars(settings),
            }
        )
        del runner, model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows
