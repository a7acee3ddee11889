"""Generation stops before the models' position limit, and every turn says why it stopped."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from specrepro.decoding.base import MethodError, lookahead, make_params
from specrepro.engine.stopping import StopRule, token_budget
from specrepro.models.eagle_head import build_head, head_config_for
from specrepro.planning import method_names
from tests.conftest import tiny_llama
from tests.helpers import decoder_for

VOCAB = 32
LIMIT = 64
PROMPT = [3, 7, 1, 4, 9, 2, 5, 8]
SAMPLING = {"beam", "dsbd"}  # these need T > 0
PARAMS = {
    "sps": {"gamma": 4},
    "eagle": {"tree": [[0], [1], [0, 0], [0, 1], [0, 0, 0]]},
    "eagle2": {"top_k": 3, "depth": 3, "total_tokens": 8},
    "ddd": {"top_k": 3, "total_tokens": 8, "check_levels": [2], "threshold": -9.0, "max_levels": 4},
    "ddd_async": {
        "top_k": 3, "total_tokens": 8, "check_levels": [2], "threshold": -9.0, "max_levels": 4
    },
    "beam": {"width": 2, "top_k": 4},
    "dsbd": {"width": 2, "gamma": 3, "top_k": 4},
}  # fmt: skip


def limited(model: torch.nn.Module, limit: int = LIMIT) -> torch.nn.Module:
    model.config.max_position_embeddings = limit
    return model


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    target = limited(tiny_llama(vocab_size=VOCAB, seed=0))
    draft = limited(tiny_llama(vocab_size=VOCAB, seed=1, layers=1))
    torch.manual_seed(11)
    head = build_head(head_config_for(target), target)
    return {"target": target, "draft": draft, "head": head}


def watch_positions(*modules: torch.nn.Module) -> tuple[list[int], list]:
    """The largest position id each forward of these modules was given."""
    seen: list[int] = []

    def hook(_module, _args, kwargs) -> None:
        seen.append(int(kwargs["position_ids"].max()))

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in modules]
    return seen, handles


def run(models: dict, method: str, max_new: int, prompt: list[int] = PROMPT):
    temperature = 1.0 if method in SAMPLING else 0.0
    decoder = decoder_for(
        models["target"], models["draft"], method, temperature, head=models["head"],
        **PARAMS.get(method, {}),
    )  # fmt: skip
    seen, handles = watch_positions(models["target"], models["draft"], models["head"])
    try:
        result, _ = decoder.generate(prompt, max_new, seed=0)
    finally:
        for handle in handles:
            handle.remove()
    return result, seen


def test_token_budget_is_the_room_left_after_prompt_and_lookahead() -> None:
    assert token_budget(100, 10, None, 5) == (100, "max_new_tokens")
    assert token_budget(20, 10, 64, 5) == (20, "max_new_tokens")
    assert token_budget(100, 10, 64, 5) == (49, "context_limit")
    assert token_budget(100, 70, 64, 0) == (0, "context_limit")


def test_lookahead_is_the_deepest_position_a_round_drafts() -> None:
    assert lookahead(make_params("vanilla", {})) == 0
    assert lookahead(make_params("beam", {})) == 0
    assert lookahead(make_params("sps", {"gamma": 5})) == 5
    assert lookahead(make_params("dsbd", {"gamma": 2})) == 2
    assert lookahead(make_params("eagle", {})) == 5  # EAGLE-1's default tree: depth 5
    assert lookahead(make_params("eagle2", {"depth": 6})) == 6
    assert lookahead(make_params("ddd", {"max_levels": 11})) == 11
    assert lookahead(make_params("ddd_async", {"max_levels": 7, "check_levels": [3, 5]})) == 7
    # Every method declares it; a Params without it is refused, whatever its fields are named.
    for name in method_names():
        assert isinstance(lookahead(make_params(name, {})), int)

    @dataclass
    class NewMethodParams:
        k: int = 4  # a draft length under another name: no guess of 0

    with pytest.raises(MethodError, match=r"Params must define lookahead\(\)"):
        lookahead(NewMethodParams())


def test_stop_reasons_name_what_ended_the_output() -> None:
    rule = StopRule(eos_ids=frozenset({0}), max_new_tokens=4)
    assert rule.reason([5, 0]) == "eos"
    assert rule.reason([5, 6, 7, 8]) == "max_new_tokens"
    assert rule.reason([5, 6]) == "unfinished"
    assert rule.reason([5, 6, 7, 0]) == "eos"  # EOS as the last allowed token is still EOS
    limit = StopRule(eos_ids=frozenset(), max_new_tokens=3, budget_reason="context_limit")
    assert limit.reason([1, 2, 3]) == "context_limit"
    line = StopRule(frozenset(), 10, "line", token_text=("a", "\n", "b"))
    assert line.reason([0, 1]) == "stop_string"


@pytest.mark.parametrize("method", ["vanilla", "sps", "eagle", "eagle2", "ddd", "ddd_async"])
def test_greedy_methods_stop_at_the_limit_with_vanilla_s_tokens(models, method: str) -> None:
    reference, _ = run(models, "vanilla", 1000)
    assert reference.stop_reason == "context_limit"
    assert len(PROMPT) + reference.new_tokens == LIMIT  # vanilla drafts nothing: all of it
    result, seen = run(models, method, 1000)
    assert result.stop_reason == "context_limit"
    assert max(seen) < LIMIT
    budget = LIMIT - len(PROMPT) - lookahead(make_params(method, PARAMS.get(method)))
    assert result.new_tokens == budget
    assert result.tokens == reference.tokens[:budget]


@pytest.mark.parametrize("method", sorted(SAMPLING))
def test_beam_methods_stop_at_the_limit(models, method: str) -> None:
    result, seen = run(models, method, 1000)
    assert max(seen) < LIMIT
    # No EOS here: every beam runs until the limit cuts it.
    assert result.stop_reason == "context_limit"
    assert result.new_tokens == LIMIT - len(PROMPT) - lookahead(make_params(method, PARAMS[method]))


def test_every_method_is_covered() -> None:
    assert set(method_names()) == {"vanilla", *PARAMS}


def test_a_short_max_new_tokens_is_the_reason_when_it_binds_first(models) -> None:
    result, _ = run(models, "eagle2", 10)
    assert result.new_tokens == 10 and result.stop_reason == "max_new_tokens"


def test_a_draft_with_fewer_positions_bounds_the_generation(models) -> None:
    short = {**models, "draft": limited(tiny_llama(vocab_size=VOCAB, seed=1, layers=1), 40)}
    result, seen = run(short, "sps", 1000)
    assert max(seen) < 40
    assert result.stop_reason == "context_limit"
    assert result.new_tokens == 40 - len(PROMPT) - 4


def test_a_prompt_that_fills_the_positions_gives_no_tokens_and_no_forward(models) -> None:
    prompt = list(range(1, 32)) * 2  # 62 tokens: 64 positions leave no room for 3 levels
    result, seen = run(models, "eagle2", 100, prompt=prompt)
    assert result.tokens == [] and result.target_forwards == 0 and seen == []
    assert result.stop_reason == "context_limit"


def test_each_turn_records_why_it_stopped() -> None:
    """MT-bench's second turn carries the first answer: here only it meets the limit."""
    from specrepro.config import MethodChoice
    from specrepro.energy import EnergyMeter
    from specrepro.run.decoder import Decoder, LoadedPair
    from specrepro.run.question_run import run_question as _run_question
    from tests.test_hub import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    target = limited(tiny_llama(vocab_size=16, seed=2))
    loaded = LoadedPair(
        name="tiny", target=target, tokenizer=tokenizer, draft=None, conversation="completion",
        eos_ids=frozenset(), token_text=(),
    )  # fmt: skip
    decoder = Decoder(loaded, MethodChoice("vanilla", "vanilla", make_params("vanilla", {})), 0.0)
    prompt = {"question_id": "q0", "turns": ["w2 w3 w4 w5", "w6 w7"]}
    meta = {"pair": "tiny", "method": "vanilla", "algorithm": "vanilla", "temperature": 0.0,
            "seed": 0, "dtype": "float32"}  # fmt: skip
    meter = EnergyMeter.not_measured("test on CPU")
    record = _run_question(decoder, loaded, meter, prompt, 40, 0, meta)
    first, second = record["turns"]
    assert (first["prompt_tokens"], first["new_tokens"]) == (4, 40)
    assert first["stop_reason"] == "max_new_tokens"
    assert second["prompt_tokens"] > LIMIT - 40  # the first answer is in it
    assert second["stop_reason"] == "context_limit"
    assert second["prompt_tokens"] + second["new_tokens"] == LIMIT
