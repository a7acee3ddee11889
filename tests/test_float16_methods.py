"""Every method in float16, on the CPU, on a tiny LLaMA pair (with an EAGLE head) and a tiny OPT
pair: the paper configs run float16 everywhere (on GPUs), and nothing else runs these paths.

Each method produces the requested number of tokens (or stops at EOS), every id is in the
vocabulary, and nothing it reports is NaN or inf. At T=0 the lossless methods (all but beam and
dsbd, which need T > 0) give float16 vanilla's tokens, up to vanilla's first near tie (see
`agreed_prefix` for why that, and not the whole output, is what float16 guarantees).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from specrepro.decoding.base import get_method
from specrepro.engine.runner import ModelRunner
from specrepro.models.eagle_head import EagleHead, build_head, head_config_for
from specrepro.planning import method_names
from specrepro.training.teacher import Sample
from specrepro.training.train_head import HeadTrainConfig, train_head
from tests.conftest import tiny_llama
from tests.helpers import decoder_for
from tests.test_opt import opt_draft, tiny_opt
from tests.test_sps import truncated_draft

VOCAB = 16
MAX_NEW = 40
# (id, algorithm, params): CPU-sized trees and beams; both DSBD cache layouts.
CASES = [
    ("vanilla", "vanilla", {}),
    ("sps", "sps", {"gamma": 3}),
    ("eagle", "eagle", {"tree": [[0], [1], [2], [0, 0], [0, 1], [1, 0], [0, 0, 0]]}),
    ("eagle2", "eagle2", {"top_k": 3, "depth": 3, "total_tokens": 8}),
    ("ddd", "ddd", {"top_k": 3, "total_tokens": 8, "check_levels": [2], "threshold": -0.4,
                    "max_levels": 4}),
    ("ddd_async", "ddd_async", {"top_k": 3, "total_tokens": 8, "check_levels": [2],
                                "threshold": -0.4, "max_levels": 4}),
    ("beam", "beam", {"width": 3, "top_k": 5}),
    ("dsbd-rows", "dsbd", {"width": 3, "gamma": 3, "top_k": 5, "layout": "rows"}),
    ("dsbd-shared", "dsbd", {"width": 3, "gamma": 3, "top_k": 5, "layout": "shared_prefix"}),
]  # fmt: skip
HEAD_METHODS = {"eagle", "eagle2", "ddd", "ddd_async"}
# The fewest leading tokens a T=0 comparison must cover for the fixture to be worth anything.
MIN_AGREED = 20

# Tiny models: one intra-op thread is ~10x faster than several contending for the CPUs.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class Family:
    target: torch.nn.Module
    draft: torch.nn.Module
    head: torch.nn.Module | None
    prompt: list[int]


def trained_head(target: torch.nn.Module, prompts: list[list[int]]) -> EagleHead:
    """A head trained (float32, ~0.3 s) on the target's greedy continuations of `prompts`, so
    that rounds accept several drafted tokens (a random head's are almost all rejected)."""
    samples = []
    for ids in prompts:
        ref, _ = decoder_for(target, None, "vanilla", 0.0).generate(ids, MAX_NEW, seed=0)
        out = ModelRunner(target).forward(ids + ref.tokens, logits_from=len(ids) - 1,
                                          want_hidden=True)  # fmt: skip
        top_logp, top_ids = torch.log_softmax(out.logits[: len(ref.tokens)], -1).topk(4, dim=-1)
        samples.append(Sample(ids + ref.tokens, len(ids), top_ids, top_logp, out.hidden))
    torch.manual_seed(11)
    head = build_head(head_config_for(target), target)
    train_head(head, samples, HeadTrainConfig(steps=80, batch_size=4, lr=3e-3, noise=0.0,
                                              holdout_fraction=0.0))  # fmt: skip
    return head


@pytest.fixture(scope="module")
def families() -> dict[str, Family]:
    # Seeds and prompts whose float16 greedy paths change token several times and have no
    # near tie within MAX_NEW here (most tiny random models have one within a few tokens).
    llama = tiny_llama(vocab_size=VOCAB, seed=6)
    prompt = [i % VOCAB for i in range(1, 30)]
    trained = trained_head(llama, [prompt, prompt[5:], prompt[::-1]])
    llama_small = truncated_draft(llama, 1).half()  # built from the float32 weights
    llama = llama.half()
    head = build_head(head_config_for(llama), llama)  # in the target's dtype
    head.load_state_dict(trained.head_state_dict(), strict=False)
    opt = tiny_opt(vocab_size=VOCAB, seed=2)
    opt_small = opt_draft(opt)  # built from the float32 weights, then both cast
    return {
        "llama": Family(llama, llama_small, head, prompt),
        "opt": Family(
            opt.half(),
            opt_small.half(),
            None,
            [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4, 3, 3, 8, 3],
        ),
    }


def needs_sampling(algorithm: str) -> bool:
    return bool(getattr(get_method(algorithm), "NEEDS_SAMPLING", False))


def cases(lossless: bool = False) -> list:
    """(family, algorithm, params) for every case; `lossless`: only those defined at T=0 (beam
    and dsbd refuse T=0, tested in tests/test_opt.py)."""
    out = []
    for family in ("llama", "opt"):
        for case_id, algorithm, params in CASES:
            if family == "opt" and algorithm in HEAD_METHODS:
                continue  # EAGLE heads are LLaMA layers over a LLaMA target's features
            if lossless and needs_sampling(algorithm):
                continue
            out.append(pytest.param(family, algorithm, params, id=f"{family}-{case_id}"))
    return out


def greedy_reference(family: Family) -> list[int]:
    ref, _ = decoder(family, "vanilla", 0.0, {}).generate(family.prompt, MAX_NEW, seed=0)
    return ref.tokens


def decoder(family: Family, algorithm: str, temperature: float, params: dict, eos=()):
    return decoder_for(
        family.target, family.draft if get_method(algorithm).NEEDS_DRAFT else None, algorithm,
        temperature, eos=eos, head=family.head, **params,
    )  # fmt: skip


def float16_spacing(x: float) -> float:
    """The gap between float16 numbers at magnitude |x| (10 stored mantissa bits)."""
    return math.ldexp(1.0, math.frexp(abs(x))[1] - 11)


def agreed_prefix(family: Family, ref: list[int]) -> int:
    """How many of vanilla's greedy tokens every lossless method must reproduce in float16.

    Exactness at T=0 holds in exact arithmetic. In float16 a verification forward scores
    several tokens at once, and a row's logits then differ from one-row decoding's by rounding
    (measured here: at most 1 spacing of float16, 0.0078 at these logits). Where vanilla's top
    two logits are within a few spacings of each other, a method may take the other token, a
    legitimate float16 outcome, and the sequences diverge after it. So the claim is: identical
    up to vanilla's first step whose top-two gap is under 8 spacings (the whole output when
    there is none, as with these fixtures here)."""
    runner = ModelRunner(family.target)
    logits = runner.forward(family.prompt + ref, logits_from=len(family.prompt) - 1).logits
    top2 = logits[: len(ref)].topk(2, dim=-1).values
    gaps = (top2[:, 0] - top2[:, 1]).tolist()
    tie = 8 * float16_spacing(float(logits.abs().max()))
    return next((i for i, gap in enumerate(gaps) if gap < tie), len(ref))


def reported_numbers(decoder_, prompt: list[int], result, timer) -> list[float]:
    """Every number a run reports: the result's counts and per-round statistics, the timing,
    and the target log-likelihood the harness scores the output with."""
    numbers = [result.target_forwards, result.draft_forwards, result.prefill_forwards]
    numbers += [result.kv_bytes_peak, timer.total, *timer.split().values()]
    numbers += result.accept_lengths

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, int | float):
            numbers.append(value)

    walk(result.extra)
    numbers.append(decoder_.target_loglik(prompt, result.tokens))
    return [float(x) for x in numbers]


def check_run(decoder_, family: Family, result, timer, eos: int | None = None) -> None:
    tokens = result.tokens
    assert all(0 <= t < VOCAB for t in tokens)
    if eos is not None and eos in tokens:
        assert tokens.index(eos) == len(tokens) - 1 and result.stop_reason == "eos"
    else:
        assert len(tokens) == MAX_NEW and result.stop_reason == "max_new_tokens"
    numbers = reported_numbers(decoder_, family.prompt, result, timer)
    assert all(math.isfinite(x) for x in numbers), numbers


def test_every_method_is_covered_and_the_models_are_float16(families) -> None:
    assert {algorithm for _, algorithm, _ in CASES} == set(method_names())
    for family in families.values():
        for model in (family.target, family.draft):
            assert {p.dtype for p in model.parameters()} == {torch.float16}
    head = families["llama"].head
    assert head.fc.weight.dtype == torch.float16
    assert head.rotary.inv_freq.dtype == torch.float32  # RoPE stays float32 (eagle_head.py)


@pytest.mark.parametrize(("family_name", "algorithm", "params"), cases(lossless=True))
def test_lossless_methods_at_t0_give_float16_vanillas_tokens(
    families, family_name, algorithm, params
) -> None:
    family = families[family_name]
    ref = greedy_reference(family)
    agreed = agreed_prefix(family, ref)
    assert agreed >= MIN_AGREED, f"fixture: vanilla has a near tie at step {agreed}"
    assert len(set(ref[:agreed])) >= 3  # not one repeated token
    gen = decoder(family, algorithm, 0.0, params)
    result, timer = gen.generate(family.prompt, MAX_NEW, seed=0)
    check_run(gen, family, result, timer)
    assert result.tokens[:agreed] == ref[:agreed]
    if algorithm != "vanilla":  # float16 verification of several tokens at once happened
        assert max(result.accept_lengths) >= 3
    # With EOS set to a token vanilla emits inside the agreed prefix, the output stops there.
    eos = ref[agreed // 2]
    gen = decoder(family, algorithm, 0.0, params, eos=(eos,))
    result, timer = gen.generate(family.prompt, MAX_NEW, seed=0)
    check_run(gen, family, result, timer, eos)
    assert result.tokens == ref[: ref.index(eos) + 1]


@pytest.mark.parametrize(("family_name", "algorithm", "params"), cases())
def test_every_method_samples_in_float16(families, family_name, algorithm, params) -> None:
    family = families[family_name]
    gen = decoder(family, algorithm, 1.0, params)
    outputs = set()
    for seed in range(2):
        result, timer = gen.generate(family.prompt, MAX_NEW, seed=seed)
        check_run(gen, family, result, timer)
        outputs.add(tuple(result.tokens))
    assert len(outputs) == 2  # it did sample
    # With EOS (a token greedy decoding reaches late): each output ends at its first EOS or
    # runs to the budget without one.
    eos = greedy_reference(family)[-1]
    gen = decoder(family, algorithm, 1.0, params, eos=(eos,))
    for seed in range(3):
        result, timer = gen.generate(family.prompt, MAX_NEW, seed=seed)
        check_run(gen, family, result, timer, eos)
