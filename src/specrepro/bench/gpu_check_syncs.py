"""Host syncs on a GPU: how many each method's rounds make, and none inside a draft level.

Counting: torch.cuda.set_sync_debug_mode("warn") makes every synchronizing CUDA call through
c10's memcpy_and_sync or stream_synchronize (`item`, `tolist`, `.cpu()`, a blocking copy from
pageable host memory, `nonzero`, ...) emit a warning "called a synchronizing CUDA operation"
(TORCH_WARN in c10/cuda/CUDAFunctions.cpp, warn_or_error_on_sync); they are caught and counted
over a whole generation. torch.cuda.synchronize() does not go through it: the timer's own two
syncs are counted by the same means (`timer_syncs`, 0 with today's torch) and taken off, so
that per round = (syncs - timer syncs) / verification forwards.

Sync-free levels: under mode "error" any such call raises instead, so running every draft
level inside it proves the levels never wait for the device.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TypeVar

import torch

from specrepro.bench.gpu_check_core import CheckContext, CheckResult, failed
from specrepro.bench.gpu_check_models import (
    CheckModels,
    check_decoder,
    check_prompts,
    proxy_models,
)
from specrepro.decoding.base import GenerationResult
from specrepro.engine.host_reads import checked_levels
from specrepro.engine.runner import ModelRunner
from specrepro.engine.timing import synchronize

T = TypeVar("T")
SYNC_WARNING = "called a synchronizing CUDA operation"
Counter = Callable[[Callable[[], T]], tuple[T, int]]

# tests/test_host_reads.py's PARAMS, prompt and length: the bounds below are its ceilings.
SYNC_PARAMS: dict[str, dict] = {
    "vanilla": {},
    "sps": {"gamma": 3},
    "eagle": {},
    "eagle2": {"top_k": 3, "depth": 4, "total_tokens": 10},
    "ddd": {"top_k": 3, "total_tokens": 10, "check_levels": [2, 3], "threshold": -0.5,
            "max_levels": 5},
    "ddd_async": {"top_k": 3, "total_tokens": 10, "check_levels": [2, 3], "threshold": -0.5,
                  "max_levels": 5},
    "dsbd": {"width": 3, "gamma": 3},
}  # fmt: skip
SYNC_PROMPT = [1, 2, 3]
SYNC_NEW_TOKENS = 30
# (method, temperature) -> (most syncs per round, what the round syncs for). For now these are
# the CPU proxy's ceilings on host reads per round (tests/test_host_reads.py CEILINGS, equal by
# a test), each with one read per model per round for ensure_finite(). On CUDA the finite
# check reads a landed pinned copy (engine/runner.py FiniteCopy, no sync), so the expected
# count is each ceiling less those reads (1 for vanilla and the tree methods, 2 for sps and
# dsbd); the bounds stay at the ceilings until an H100 run shows the counts there.
SYNC_BOUNDS: dict[tuple[str, float], tuple[float, str]] = {
    ("vanilla", 0.0): (2.2, "the chosen token (the next input) + 1 finite check"),
    ("sps", 0.0): (4.2, "the drafted tokens in one read + the argmaxes + 2 finite checks"),
    ("eagle", 0.0): (3.3, "argmaxes and drafted tokens in one read + 2 finite checks"),
    ("eagle", 1.0): (9.0, "eagle T=0's + one per tried child + the bonus"),
    ("eagle2", 0.0): (4.3, "the reranked tree + the argmaxes + 2 finite checks"),
    ("eagle2", 1.0): (7.8, "eagle2 T=0's + one per tried child + the bonus"),
    ("ddd", 0.0): (5.5, "eagle2's + one per check level reached (H and the stop flag)"),
    ("ddd", 1.0): (8.8, "ddd T=0's + one per tried child + the bonus"),
    ("ddd_async", 0.0): (5.5, "as ddd on the CPU; its flags land as copies on a GPU"),
    ("ddd_async", 1.0): (8.8, "as ddd at T=1"),
    ("dsbd", 1.0): (
        7.5,
        "per draft level the W draws; one per verified level; unfilled slots or the bonus; "
        "2 finite checks",
    ),
}
# The sync-free levels check: the paper's tree settings, at T=0 and T=1, and dsbd.
TREE_PARAMS: dict[str, dict] = {
    "eagle": {},
    "eagle2": {"top_k": 10, "depth": 6, "total_tokens": 60},
    "ddd": {},  # the paper's S = {5, 7, 9}, x = -0.3, n = 11
    "ddd_async": {},
}
FREE_PROMPTS = 3
FREE_PROMPT_LEN = 24
FREE_NEW_TOKENS = 48


@contextlib.contextmanager
def sync_debug(mode: str) -> Iterator[None]:
    """CUDA's sync debug mode ("warn" or "error") for the block."""
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


def sync_errors() -> AbstractContextManager[None]:
    """Any host sync in the block raises (CUDA sync debug mode "error")."""
    return sync_debug("error")


def count_syncs(
    run: Callable[[], T], mode: Callable[[str], AbstractContextManager[object]] = sync_debug
) -> tuple[T, int]:
    """run()'s result and the syncs it made: the warnings sync debug mode "warn" emitted."""
    with warnings.catch_warnings(record=True) as caught:
        # "always": TORCH_WARN repeats from one Python line, which the default filter would
        # report once.
        warnings.simplefilter("always")
        with mode("warn"):
            out = run()
    return out, sum(SYNC_WARNING in str(w.message) for w in caught)


def check_sync_counts(ctx: CheckContext, count: Counter = count_syncs) -> CheckResult:
    """Syncs per round of every (method, temperature) in SYNC_BOUNDS, over whole generations on
    the CPU proxy's models, within its bound."""
    models: CheckModels = ctx.cached(("proxy",), lambda: proxy_models(ctx.device))
    timer_syncs = 2 * count(lambda: synchronize(ctx.device))[1]
    over, rates = [], []
    for (method, temperature), (bound, why) in SYNC_BOUNDS.items():
        decoder = check_decoder(models, method, temperature, SYNC_PARAMS[method])
        decoder.generate(SYNC_PROMPT, 4, 0)  # warm-up: one-time work is not a round's

        def generation(decoder=decoder) -> GenerationResult:
            return decoder.generate(SYNC_PROMPT, SYNC_NEW_TOKENS, 0)[0]

        result, syncs = count(generation)
        per_round = (syncs - timer_syncs) / max(result.verify_forwards, 1)
        label = f"{method} T={temperature:g}"
        rates.append(f"{label} {per_round:.2f}")
        if per_round > bound:
            over.append(
                f"{label}: {per_round:.2f} syncs per round > {bound} ({syncs} over "
                f"{result.verify_forwards} rounds; the round needs: {why})"
            )
    if over:
        return failed(over)
    return CheckResult(
        True, f"all within bounds; per round: {', '.join(rates)} (timer: {timer_syncs})"
    )


@contextlib.contextmanager
def wrapped_forward(runner: ModelRunner, around: Callable[[Callable], Callable]) -> Iterator[None]:
    """Replace one runner's forward by `around(forward)` for the block."""
    runner.forward = around(runner.forward)  # type: ignore[method-assign]
    try:
        yield
    finally:
        del runner.forward


def _strict(region: Callable[[], AbstractContextManager[object]]) -> Callable:
    def around(forward: Callable) -> Callable:
        def run(*args: object, **kwargs: object) -> object:
            with region():
                return forward(*args, **kwargs)

        return run

    return around


def check_sync_free(
    ctx: CheckContext, region: Callable[[], AbstractContextManager[object]] = sync_errors
) -> CheckResult:
    """Generate with every draft level inside `region` (a host sync there raises): eagle,
    eagle2, ddd, ddd_async at T=0 and T=1 (head forward, top-k, beam update; not ddd's check
    reads), and dsbd with each draft-model forward inside it."""
    models = ctx.models()
    vocab = models.target.get_output_embeddings().weight.shape[0]
    prompts = check_prompts(vocab, FREE_PROMPTS, FREE_PROMPT_LEN)
    cases = [(name, t, params) for name, params in TREE_PARAMS.items() for t in (0.0, 1.0)]
    cases.append(("dsbd", 1.0, {}))
    failures = []
    for name, temperature, params in cases:
        decoder = check_decoder(models, name, temperature, params)
        decoder.generate(prompts[0], 8, 0)  # warm-up (lazy inits) outside the checked regions
        if name == "dsbd":
            assert decoder.draft is not None
            where = "a draft-model forward"
            scope: AbstractContextManager[object] = wrapped_forward(decoder.draft, _strict(region))
        else:
            where = "a draft level"
            scope = checked_levels(region)
        try:
            with scope:
                for seed, ids in enumerate(prompts):
                    decoder.generate(ids, FREE_NEW_TOKENS, seed)
        except RuntimeError as err:
            first = (str(err).strip().splitlines() or [repr(err)])[0]
            failures.append(f"{name} T={temperature:g}: a host sync in {where}: {first[:200]}")
    if failures:
        return failed(failures)
    return CheckResult(
        True,
        f"no sync in any draft level ({', '.join(TREE_PARAMS)} at T=0 and 1) or dsbd draft forward",
    )
