"""The `gpu-check` bench (CUDA only; `make gpu-check`): pass/fail checks that need a GPU.

On tiny random models built from a config (or `--model PATH`, a local causal LM folder, as the
target; see gpu_check_models):
  1. sync-free draft levels: eagle, eagle2, ddd, ddd_async run with every draft level (head
     forward, top-k, beam update; not ddd's check reads) under
     torch.cuda.set_sync_debug_mode("error"); dsbd with each draft-model forward under it;
  2. ddd_async reads no stale flag: with a sleep queued on the stream after every head forward
     (so flags are still in flight when polled), its tokens, trees and H values equal ddd's;
  3. an fp16 EAGLE head drafts as the fp32 one at positions 1,000-2,000 (RoPE in float32);
  4. NVML energy of a short generation (J/token).

Reading it: one PASS/FAIL line per check, then a count; there are no ratios. It exits 1 when a
check fails, and 2 on a machine without CUDA (the CPU proxy of check 1, host reads per round,
runs in the test suite: tests/test_host_reads.py).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

# Re-exported (`as`): whoever runs these checks builds their models from this module too.
from specrepro.bench.gpu_check_models import CheckModels, check_decoder, check_models
from specrepro.decoding.base import GenerationResult
from specrepro.engine.host_reads import checked_levels
from specrepro.engine.runner import ModelRunner
from specrepro.engine.timing import synchronize
from specrepro.models.eagle_head import build_head, head_config_for
from specrepro.timing_group import open_energy_meter

NEEDS_CUDA = (
    "gpu-check needs a CUDA device; the CPU proxy runs in the test suite (tests/test_host_reads.py)"
)
EXIT_NO_CUDA = 2
EXIT_FAILED = 1
CHECK_PROMPTS = 3
CHECK_PROMPT_LEN = 24
CHECK_NEW_TOKENS = 48
TREE_PARAMS: dict[str, dict] = {
    "eagle": {},
    "eagle2": {"top_k": 10, "depth": 6, "total_tokens": 60},
    "ddd": {},  # the paper's S = {5, 7, 9}, x = -0.3, n = 11
    "ddd_async": {},
}
# Small enough that some rounds stop at each check level and some run to the last level.
ASYNC_PARAMS = {"top_k": 4, "total_tokens": 24, "check_levels": [2, 3, 4], "max_levels": 6}
ASYNC_THRESHOLDS = (-0.3, -1.0, -3.0, -10.0)
SLEEP_CYCLES = 5_000_000  # a few ms on a current GPU: longer than a level's host work
LONG_POSITIONS = (1000, 2000)
# fp16 vs fp32 head at LONG_POSITIONS, attention sharpened by QK_SCALE (see check_head_fp16)
MIN_TOP1_AGREEMENT = 0.98
MAX_LOGIT_ERROR = 0.1  # in standard deviations of the fp32 logits
QK_SCALE = 20.0


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def check_prompts(vocab_size: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (CHECK_PROMPTS, CHECK_PROMPT_LEN), generator=generator)
    return ids.tolist()


@contextlib.contextmanager
def sync_errors() -> Iterator[None]:
    """Any host sync in the block raises (CUDA sync debug mode "error")."""
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


@contextlib.contextmanager
def wrapped_forward(runner: ModelRunner, around: Callable[[Callable], Callable]) -> Iterator[None]:
    """Replace one runner's forward by `around(forward)` for the block."""
    runner.forward = around(runner.forward)  # type: ignore[method-assign]
    try:
        yield
    finally:
        del runner.forward


def check_sync_free(
    models: CheckModels,
    region: Callable[[], AbstractContextManager[object]] = sync_errors,
) -> list[CheckResult]:
    """Generate with every draft level inside `region` (a host sync there raises)."""
    prompts = check_prompts(models.target.get_output_embeddings().weight.shape[0])
    out = []
    cases = [(name, t, params) for name, params in TREE_PARAMS.items() for t in (0.0, 1.0)]
    cases.append(("dsbd", 1.0, {}))
    for name, temperature, params in cases:
        decoder = check_decoder(models, name, temperature, params)
        decoder.generate(prompts[0], 8, 0)  # warm-up (lazy inits) outside the checked regions
        if name == "dsbd":
            assert decoder.draft is not None
            where = "each draft-model forward of the forest"

            def strict(forward: Callable) -> Callable:
                def run(*args: object, **kwargs: object) -> object:
                    with region():
                        return forward(*args, **kwargs)

                return run

            scope: AbstractContextManager[object] = wrapped_forward(decoder.draft, strict)
        else:
            where = "each draft level: head forward, top-k, beam update"
            scope = checked_levels(region)
        label = f"sync-free draft levels [{name} T={temperature:g}]"
        try:
            with scope:
                for seed, ids in enumerate(prompts):
                    decoder.generate(ids, CHECK_NEW_TOKENS, seed)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            out.append(CheckResult(label, False, f"a host sync in {where}: {first[:300]}"))
            continue
        out.append(CheckResult(label, True, f"no sync in {where}"))
    return out


def _delayed(cycles: int) -> Callable[[Callable], Callable]:
    """A head forward followed by a sleep queued on the stream: the check computed after it
    (and the flag's copy) lands on the host late, while the host drafts on."""

    def around(forward: Callable) -> Callable:
        def run(*args: object, **kwargs: object) -> object:
            out = forward(*args, **kwargs)
            if cycles:
                torch.cuda._sleep(cycles)
            return out

        return run

    return around


def _tree_record(result: GenerationResult) -> tuple:
    rounds = result.extra["rounds"]
    return (result.tokens, rounds["levels"], rounds["tree_size"], rounds["checks"])


def check_async_trees(models: CheckModels, sleep_cycles: int = SLEEP_CYCLES) -> CheckResult:
    """ddd_async against ddd with the head's stream delayed: equal tokens, trees and H values,
    and levels drafted past a stop (proof that flags were still in flight when polled)."""
    prompts = check_prompts(models.target.get_output_embeddings().weight.shape[0])
    mismatches, rounds, dropped, stopped = [], 0, 0, 0
    for threshold in ASYNC_THRESHOLDS:
        params = {**ASYNC_PARAMS, "threshold": threshold}
        for temperature in (0.0, 1.0):
            runs = {}
            for name in ("ddd", "ddd_async"):
                decoder = check_decoder(models, name, temperature, params)
                assert decoder.head is not None
                with wrapped_forward(decoder.head, _delayed(sleep_cycles)):
                    runs[name] = [
                        decoder.generate(ids, CHECK_NEW_TOKENS, seed)[0]
                        for seed, ids in enumerate(prompts)
                    ]
            for seed, (ref, got) in enumerate(zip(runs["ddd"], runs["ddd_async"], strict=True)):
                if _tree_record(ref) != _tree_record(got):
                    mismatches.append(f"x={threshold} T={temperature:g} prompt {seed}")
                levels = got.extra["rounds"]["levels"]
                drafted = got.extra["rounds"]["drafted"]
                rounds += len(levels)
                stopped += sum(n < ASYNC_PARAMS["max_levels"] for n in levels)
                dropped += sum(d - n for d, n in zip(drafted, levels, strict=True))
    name = "ddd_async reads no stale flag (vs ddd, delayed stream)"
    counts = f"{rounds} rounds, {stopped} stopped early, {dropped} levels drafted past a stop"
    if mismatches:
        return CheckResult(name, False, f"trees differ from ddd's: {mismatches[:5]} ({counts})")
    if dropped == 0:
        return CheckResult(
            name, False, f"no flag was pending when polled: the delay did not bite ({counts})"
        )
    return CheckResult(name, True, f"tokens, trees and H equal ddd's; {counts}")


def head_top1(head: torch.nn.Module, tokens: torch.Tensor, features: torch.Tensor) -> tuple:
    """The head's logits over a whole sequence (t reads x_{t+1} and f_t), in one forward."""
    runner = ModelRunner(head, "head")
    runner.reset(len(tokens) + 1)
    logits = runner.forward(tokens, features=features).logits
    return logits.argmax(dim=-1), logits


def sharpened(head: torch.nn.Module, factor: float = QK_SCALE) -> torch.nn.Module:
    """A copy of `head` whose attention scores are `factor` x larger: a random head attends
    almost uniformly, which hides position errors; a sharp one attends by relative position."""
    head = copy.deepcopy(head)
    attention = head.layers[0].self_attn
    with torch.no_grad():
        attention.q_proj.weight.mul_(factor)
        attention.k_proj.weight.mul_(factor)
    return head


def check_head_fp16(
    models: CheckModels, positions: tuple[int, int] = LONG_POSITIONS
) -> CheckResult:
    """The same head in fp32 and fp16 over one sequence: the top-1 drafts and logits at
    positions [lo, hi) agree (a float16-rounded RoPE frequency makes them drift apart past
    ~1,000: on the CPU, agreement 0.957 and max logit error 0.65 std, against 0.997 and 0.014
    with float32 frequencies)."""
    lo, hi = positions
    target = models.target
    device = next(target.parameters()).device
    generator = torch.Generator().manual_seed(3)
    vocab = target.get_output_embeddings().weight.shape[0]
    seq = torch.randint(0, vocab, (hi + 1,), generator=generator).to(device)
    runner = ModelRunner(target, "target")
    runner.reset(hi + 1)
    features = runner.forward(seq, logits_from=hi + 1, want_hidden=True).hidden
    head32 = sharpened(models.head)
    top32, logits32 = head_top1(head32, seq[1:], features[:-1])
    target16 = copy.deepcopy(target).to(torch.float16)
    head16 = build_head(head_config_for(target16), target16)
    head16.load_state_dict(head32.state_dict())
    top16, logits16 = head_top1(head16, seq[1:], features[:-1].to(torch.float16))
    window = slice(lo, hi)
    agree = float((top16[window] == top32[window]).float().mean())
    short = float((top16[:lo] == top32[:lo]).float().mean())
    scale = float(logits32[window].std())
    err = float((logits16[window] - logits32[window]).abs().max()) / max(scale, 1e-12)
    ok = agree >= MIN_TOP1_AGREEMENT and err <= MAX_LOGIT_ERROR
    detail = (
        f"positions {lo}-{hi}: top-1 agreement {agree:.4f} (>= {MIN_TOP1_AGREEMENT} needed; "
        f"{short:.4f} before {lo}), max |logit diff| {err:.3f} logit std "
        f"(<= {MAX_LOGIT_ERROR} needed)"
    )
    return CheckResult("fp16 EAGLE head = fp32 head past 1,000 positions", ok, detail)


def check_energy(models: CheckModels, seconds: float = 2.0) -> CheckResult:
    """NVML energy over vanilla generations of at least `seconds` (the harness's meter)."""
    name = "NVML energy of a short generation"
    device = next(models.target.parameters()).device
    meter = open_energy_meter(device, 20.0)
    try:
        if not meter.available:
            return CheckResult(name, False, f"no energy meter: {meter.reason}")
        meter.measure_idle(1.0)
        decoder = check_decoder(models, "vanilla", 0.0, {})
        prompts = check_prompts(models.target.get_output_embeddings().weight.shape[0])
        decoder.generate(prompts[0], 8, 0)
        tokens, start = 0, time.perf_counter()
        with meter.window() as reading:
            while time.perf_counter() - start < seconds:
                result, _ = decoder.generate(prompts[tokens % len(prompts)], 64, 0)
                tokens += result.new_tokens
            synchronize(device)
        per_token = reading.joules_per_token(tokens)
        net = reading.joules_per_token(tokens, net=True)
        if per_token is None or not per_token > 0:
            return CheckResult(name, False, f"no energy measured: {reading.reason}")
        net_text = "-" if net is None else f"{net:.4g}"
        return CheckResult(
            name,
            True,
            f"{per_token:.4g} J/token ({net_text} net of idle) over {tokens} tokens, "
            f"{reading.duration_s:.2f} s, source {reading.source}",
        )
    finally:
        meter.close()


def run_gpu_check(args: argparse.Namespace) -> int:
    """Every check, one PASS/FAIL line each; the exit code (0 all passed, 1 one failed)."""
    if not torch.cuda.is_available():
        print(NEEDS_CUDA, file=sys.stderr)
        return EXIT_NO_CUDA
    device = torch.device(args.device if args.device.startswith("cuda") else "cuda")
    models = check_models(device, args.model)
    print(f"gpu-check on {torch.cuda.get_device_name(device)} (target: {args.model or 'tiny'})")
    checks: list[tuple[str, Callable[[], list[CheckResult] | CheckResult]]] = [
        ("sync-free draft levels", lambda: check_sync_free(models)),
        ("ddd_async stale flags", lambda: check_async_trees(models, args.sleep_cycles)),
        ("fp16 EAGLE head", lambda: check_head_fp16(models)),
        ("NVML energy", lambda: check_energy(models)),
    ]
    results: list[CheckResult] = []
    for name, check in checks:
        try:
            got = check()
        except Exception as err:  # noqa: BLE001 - one broken check must not hide the others
            got = CheckResult(name, False, f"error: {type(err).__name__}: {err}"[:500])
        for result in got if isinstance(got, list) else [got]:
            print(result.line(), flush=True)
            results.append(result)
    failed = sum(not r.ok for r in results)
    print(f"gpu-check: {len(results) - failed} passed, {failed} failed")
    return EXIT_FAILED if failed else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "gpu-check", help="pass/fail checks on a CUDA device (see the description above)"
    )
    parser.add_argument("--model", help="a local causal LM folder as the target (default: tiny)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sleep-cycles", type=int, default=SLEEP_CYCLES)
