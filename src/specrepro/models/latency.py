"""Per-token latency of one draft forward against depth and width (SPEC 4.8).

Models are built from a shape with random weights (latency does not depend on the values) and
run through the shared runner, one token at a time with a KV cache, as a draft runs inside
speculative decoding. Building, the prompt's prefill and the warm-up steps stay outside the
timed part; each repeat restarts from an empty cache and the median repeat is reported.
"""

from __future__ import annotations

import copy
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from tqdm import tqdm

from specrepro.engine.runner import ModelRunner
from specrepro.engine.timing import synchronize
from specrepro.models.family import Shape

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


def time_decode(
    decoder: Decoder,
    settings: LatencySettings,
    clock: Clock = time.perf_counter,
    sync: Callable[[], None] = lambda: None,
) -> list[float]:
    """Seconds per token of each repeat: prefill and warm-up run first, untimed."""
    per_token = []
    for _ in range(settings.repeats):
        decoder.reset(settings.prompt_tokens + settings.warmup + settings.tokens + 1)
        decoder.forward(list(range(1, settings.prompt_tokens + 1)))
        for _ in range(settings.warmup):
            decoder.forward([1])
        sync()
        start = clock()
        for _ in range(settings.tokens):
            decoder.forward([1])
        sync()
        per_token.append((clock() - start) / settings.tokens)
    return per_token


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
        repeats = time_decode(runner, settings, clock, sync)
        rows.append(
            {
                "name": name,
                **shape.as_dict(),
                "counted_parameters": shape.counted_parameters(),
                "embedding_parameters": shape.embedding_parameters(),
                "ms_per_token": 1000 * statistics.median(repeats),
                "ms_per_token_repeats": [1000 * r for r in repeats],
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
