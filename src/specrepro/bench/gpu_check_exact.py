"""Exactness at T=0: our vanilla is transformers' greedy decoding, and every lossless method is
our vanilla, token for token, on the LLaMA (head_dim 128) and OPT families of gpu_check_models.

In float16 (and, rarely, float32) two correct implementations can pick different tokens where
the top two logits are within rounding of each other. A comparison therefore walks to the first
divergence and accepts it only where the reference's own logits rate the two tokens within a
near-tie tolerance (TIE_SPACINGS spacings of the dtype at that step's largest logit); it then
restarts both sides from the reference's token there, so that the rest of the tokens are still
compared. A divergence past the tolerance is a failure, reported by family, dtype, prompt and
position.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from specrepro.bench.gpu_check_core import CheckContext, CheckResult, failed
from specrepro.bench.gpu_check_models import Family, check_prompts, decoder_for

# The near-tie tolerance, in spacings of the dtype at the step's largest |logit|. float16: the
# CPU measured at most 1 spacing between one-row and several-row forwards
# (tests/test_float16_methods.py, which accepts 8); GPU kernels chosen by row count round
# differently, so 16. float32: 64 spacings (~2.4e-4 at a logit of 32) is far above float32
# noise and far below any real difference in a logit.
TIE_SPACINGS = {torch.float32: 64, torch.float16: 16}
# Lossless at T=0 (beam and dsbd sample and refuse T=0). The tree methods run the paper's
# settings (config/paper_ddd.yaml); the OPT family has no EAGLE head, so sps only.
LOSSLESS: dict[str, dict] = {
    "sps": {},
    "eagle": {},
    "eagle2": {"top_k": 10, "depth": 6, "total_tokens": 60},
    "ddd": {},  # the paper's S = {5, 7, 9}, x = -0.3, n = 11
    "ddd_async": {},
}
# A round that commits this many tokens accepted at least two drafted ones.
MIN_BEST_ROUND = 3


@dataclass
class GreedyPath:
    tokens: list[int]
    logits: torch.Tensor  # [len(tokens), V]: the logits each token was the argmax of


@dataclass
class Comparison:
    ties: list[tuple[int, float]] = field(default_factory=list)  # (position, logit gap)
    failure: str | None = None


def spacing(value: float, dtype: torch.dtype) -> float:
    """The gap between adjacent numbers of `dtype` at magnitude |value|."""
    return math.ldexp(torch.finfo(dtype).eps, math.frexp(abs(value))[1] - 1)


def compare_greedy(
    reference: Callable[[list[int], int], GreedyPath],
    candidate: Callable[[list[int], int], list[int]],
    prompt: list[int],
    new_tokens: int,
    dtype: torch.dtype,
) -> Comparison:
    """Candidate against reference over `new_tokens` greedy tokens after `prompt`, near ties
    allowed (see the module docstring)."""
    out = Comparison()
    ids, done = list(prompt), 0
    while done < new_tokens:
        ref = reference(ids, new_tokens - done)
        got = candidate(ids, new_tokens - done)
        pairs = zip(ref.tokens, got, strict=False)
        at = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
        if at is None:
            if len(got) != len(ref.tokens):
                out.failure = f"{len(got)} tokens after {done}, the reference {len(ref.tokens)}"
            return out
        row, chosen, expected = ref.logits[at].float(), got[at], ref.tokens[at]
        if not 0 <= chosen < row.shape[0]:
            out.failure = f"token {done + at}: id {chosen} outside the vocabulary"
            return out
        gap = float(row[expected] - row[chosen])
        tolerance = TIE_SPACINGS[dtype] * spacing(float(row.abs().max()), dtype)
        if not gap <= tolerance:
            out.failure = (
                f"token {done + at}: {chosen} where the reference has {expected} (logit gap "
                f"{gap:.3g} > near-tie tolerance {tolerance:.3g})"
            )
            return out
        out.ties.append((done + at, gap))
        ids += ref.tokens[: at + 1]
        done += at + 1
    return out


@torch.no_grad()
def transformers_greedy(model: PreTrainedModel, ids: list[int], new_tokens: int) -> GreedyPath:
    """transformers' own greedy `generate` (its DynamicCache, its masks) and its step logits."""
    device = next(model.parameters()).device
    prompt = torch.tensor([ids], device=device)
    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        max_new_tokens=new_tokens,
        pad_token_id=0,
        eos_token_id=None,
        output_logits=True,
        return_dict_in_generate=True,
    )
    tokens = out.sequences[0, len(ids) :].tolist()
    return GreedyPath(tokens, torch.stack(out.logits)[:, 0].float().cpu())


@torch.no_grad()
def forced_logits(model: PreTrainedModel, ids: list[int], tokens: list[int]) -> torch.Tensor:
    """transformers' logits for `tokens` after `ids`, all in one causal forward."""
    device = next(model.parameters()).device
    logits = model(torch.tensor([ids + tokens], device=device)).logits[0].float().cpu()
    return logits[len(ids) - 1 : len(ids) - 1 + len(tokens)]


def hf_greedy(model: PreTrainedModel) -> Callable[[list[int], int], GreedyPath]:
    return lambda ids, n: transformers_greedy(model, ids, n)


def vanilla_greedy(fam: Family) -> Callable[[list[int], int], GreedyPath]:
    """Our vanilla's tokens, with transformers' logits along them (for judging near ties)."""
    vanilla = decoder_for(fam.target, None, None, "vanilla", 0.0, {})

    def reference(ids: list[int], n: int) -> GreedyPath:
        tokens = vanilla.generate(ids, n, 0)[0].tokens
        return GreedyPath(tokens, forced_logits(fam.target, ids, tokens))

    return reference


def method_tokens(
    fam: Family, method: str, params: dict, rounds: list[int]
) -> Callable[[list[int], int], list[int]]:
    """A method's T=0 tokens; every round's committed count is appended to `rounds`."""
    decoder = decoder_for(fam.target, fam.draft, fam.head, method, 0.0, params)

    def run(ids: list[int], n: int) -> list[int]:
        result = decoder.generate(ids, n, 0)[0]
        rounds.extend(result.accept_lengths)
        return result.tokens

    return run


@dataclass
class Tally:
    """The cases of one check: failures named, near ties noted."""

    cases: int = 0
    failures: list[str] = field(default_factory=list)
    ties: list[str] = field(default_factory=list)

    def add(self, what: str, label: str, out: Comparison) -> None:
        self.cases += 1
        if out.failure:
            self.failures.append(f"{what} [{label}] at {out.failure}")
        if out.ties:
            self.ties.append(f"{label} at " + ", ".join(f"{p} (gap {g:.2g})" for p, g in out.ties))

    def result(self, tokens: int) -> CheckResult:
        if self.failures:
            return failed(self.failures)
        ties = f"; near ties accepted: {'; '.join(self.ties)}" if self.ties else ""
        return CheckResult(True, f"{self.cases} cases x {tokens} tokens equal{ties}")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_vanilla_is_transformers(ctx: CheckContext) -> CheckResult:
    """Our vanilla decoder's tokens = transformers' greedy `generate` on the same model, for the
    LLaMA and OPT families, in every dtype the device runs."""
    shapes = ctx.shapes
    prompts = check_prompts(shapes.vocab, shapes.prompts, shapes.prompt_len)
    tally = Tally()
    for dtype in ctx.dtypes:
        for name in ("llama", "opt"):
            fam = ctx.family(name, dtype)
            ours = method_tokens(fam, "vanilla", {}, [])
            for index, prompt in enumerate(prompts):
                out = compare_greedy(hf_greedy(fam.target), ours, prompt, shapes.new_tokens, dtype)
                label = f"{name} {_dtype_name(dtype)} prompt {index}"
                tally.add("vanilla != transformers greedy", label, out)
    return tally.result(shapes.new_tokens)


def check_lossless_is_vanilla(ctx: CheckContext) -> CheckResult:
    """Every lossless method's tokens at T=0 = our vanilla's (LLaMA: sps and the tree methods
    with a trained head; OPT: sps), in every dtype the device runs, and some round of each
    accepted two or more drafted tokens (else acceptance went unexercised)."""
    shapes = ctx.shapes
    prompts = check_prompts(shapes.vocab, shapes.prompts, shapes.prompt_len)
    tally = Tally()
    for dtype in ctx.dtypes:
        for name in ("llama", "opt"):
            fam = ctx.family(name, dtype)
            reference = vanilla_greedy(fam)
            methods = LOSSLESS if fam.head is not None else {"sps": LOSSLESS["sps"]}
            for method, params in methods.items():
                rounds: list[int] = []
                run = method_tokens(fam, method, params, rounds)
                where = f"{name} {_dtype_name(dtype)}"
                for index, prompt in enumerate(prompts):
                    out = compare_greedy(reference, run, prompt, shapes.new_tokens, dtype)
                    tally.add(f"{method} != vanilla", f"{where} prompt {index}", out)
                if max(rounds, default=0) < MIN_BEST_ROUND:
                    tally.failures.append(
                        f"{method} [{where}]: no round accepted 2+ drafted tokens (best round "
                        f"{max(rounds, default=0)} tokens): acceptance went unchecked"
                    )
    return tally.result(shapes.new_tokens)
