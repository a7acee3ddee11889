"""Draft vocabulary subsets (models/vocab_subset.py): the subset head's logits, exactness of sps
and the EAGLE family with a subset drafter at T=0 and T>0, the runner's finiteness check, the
frequency choice, the saved file and the config value."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from specrepro.config import ConfigError, validate_config
from specrepro.engine.packed import pack_linears, packing_available
from specrepro.engine.runner import ModelRunner, NonFiniteLogitsError
from specrepro.models.eagle_head import build_head, head_config_for
from specrepro.models.vocab_subset import (
    SUBSET_FILE,
    SubsetLmHead,
    VocabSubsetError,
    apply_saved_subset,
    apply_subset,
    check_subset_size,
    frequent_tokens,
    load_subset,
    save_subset,
    subset_size,
)
from specrepro.training.teacher import Sample
from tests.conftest import tiny_llama
from tests.helpers import decoder_for
from tests.test_sps import (
    PROMPT,
    VOCAB,
    chi_square_p,
    exact_two_token_distribution,
    sampled_counts,
)
from tests.test_tree import TREE_METHODS

# 6 of the 8 tokens (wide enough for the tree methods' top-3 expansions), without 0 and 4, on
# which the tiny target puts about 0.4 and 0.1 of its mass.
SUBSET = torch.tensor([1, 2, 3, 5, 6, 7])


def subset_draft(seed: int = 1) -> torch.nn.Module:
    return apply_subset(tiny_llama(vocab_size=VOCAB, seed=seed), SUBSET)


# -- the subset head -----------------------------------------------------------------------------


def test_the_subset_head_gives_the_full_logits_on_the_subset_and_minus_inf_elsewhere(
    monkeypatch,
) -> None:
    import specrepro.engine.packed as packed

    monkeypatch.setattr(packed, "MIN_PACK_WEIGHTS", 0)  # pack these tiny layers too
    model = tiny_llama(vocab_size=64, seed=0)
    ids = torch.tensor([3, 5, 7, 11, 40, 63])
    head = SubsetLmHead(model.lm_head, ids)
    x = torch.randn(2, 5, 32)
    with torch.inference_mode():
        full, sub = model.lm_head(x), head(x)
        outside = torch.ones(64, dtype=torch.bool)
        outside[ids] = False
        assert sub.shape == full.shape
        assert torch.isneginf(sub[..., outside]).all()
        torch.testing.assert_close(sub[..., ids], full[..., ids], rtol=0, atol=1e-5)
        if packing_available(model):
            # The engine's packed kernels (both heads packed, as runners do) agree bitwise.
            pack_linears(model)
            pack_linears(head)
            assert torch.equal(head(x)[..., ids], model.lm_head(x)[..., ids])
    # The runner sees the full vocabulary width; the original module is not replaced.
    assert head.weight is model.lm_head.weight
    assert ModelRunner(apply_subset(tiny_llama(vocab_size=64), ids)).vocab_size == 64


def test_a_subset_eagle_head_leaves_the_targets_lm_head_alone() -> None:
    target = tiny_llama(vocab_size=VOCAB, seed=0)
    original = target.lm_head
    torch.manual_seed(11)
    head = apply_subset(build_head(head_config_for(target), target), SUBSET)
    assert target.lm_head is original and target.get_output_embeddings() is original
    assert isinstance(head.lm_head, SubsetLmHead) and head.lm_head.full is original
    assert subset_size(head) == len(SUBSET) and subset_size(target) is None
    # The head's own weights (what save_head writes) do not change.
    assert not any(k.startswith("lm_head.") for k in head.head_state_dict())


# -- T=0: exactly vanilla ----------------------------------------------------------------------


def test_sps_with_a_subset_draft_equals_vanilla_greedy() -> None:
    target = tiny_llama(vocab_size=VOCAB, seed=0)
    draft = subset_draft()
    for prompt, max_new in [(PROMPT, 30), ([4, 4, 1], 12), ([7], 17)]:
        ref, _ = decoder_for(target, None, "vanilla", 0.0).generate(prompt, max_new, seed=0)
        for gamma in (1, 3, 5):
            got, _ = decoder_for(target, draft, "sps", 0.0, gamma=gamma).generate(
                prompt, max_new, seed=0
            )
            assert got.tokens == ref.tokens
            assert sum(got.accept_lengths) == got.new_tokens


@pytest.mark.parametrize("method", ["eagle", "eagle2"])
def test_eagle_with_a_subset_head_equals_vanilla_greedy(method: str) -> None:
    target = tiny_llama(vocab_size=VOCAB, seed=0)
    torch.manual_seed(11)
    head = apply_subset(build_head(head_config_for(target), target), SUBSET)
    for prompt, max_new in [(PROMPT, 25), ([4, 4, 1], 9), ([7], 14)]:
        ref, _ = decoder_for(target, None, "vanilla", 0.0).generate(prompt, max_new, seed=0)
        gen = decoder_for(target, None, method, 0.0, head=head, **TREE_METHODS[method])
        got, _ = gen.generate(prompt, max_new, seed=0)
        assert got.tokens == ref.tokens
        # Vanilla emits tokens outside the subset, which only the target could have supplied.
        assert set(ref.tokens) - set(SUBSET.tolist())


# -- T>0: the target's distribution ------------------------------------------------------------


# Fewer draws than test_sps's: the subset's effect (about half the mass out of the draft's
# reach) is large, and the draft's own distribution is still rejected with this many.
N_DRAWS = 1200


def test_sps_with_a_subset_draft_samples_from_the_target_distribution() -> None:
    target, draft = tiny_llama(vocab_size=VOCAB, seed=0), subset_draft()
    exact = exact_two_token_distribution(target, 1.0)
    outside = np.ones(VOCAB, dtype=bool)
    outside[SUBSET.numpy()] = False
    # The target puts real mass on pairs with a token the draft can never propose.
    expected = exact[outside].sum() + exact[:, outside].sum()
    assert expected > 0.3
    gen = decoder_for(target, draft, "sps", 1.0, gamma=2)
    counts, full_rounds = sampled_counts(gen, N_DRAWS)
    assert chi_square_p(counts, exact) > 1e-3
    assert 0.05 * N_DRAWS < full_rounds < 0.95 * N_DRAWS
    # Tokens outside the subset come out (from the residual) as often as the target says.
    observed = (counts[outside].sum() + counts[:, outside].sum()) / counts.sum()
    assert abs(observed - expected) < 0.06
    # Power: the subset draft's own distribution is far away and clearly rejected.
    draft_exact = exact_two_token_distribution(draft, 1.0)
    assert chi_square_p(counts, draft_exact) < 1e-6


# -- the runner's finiteness check -------------------------------------------------------------


def test_the_runner_accepts_minus_inf_but_still_raises_on_nan_and_plus_inf() -> None:
    runner = ModelRunner(subset_draft(), name="draft")
    runner.forward(PROMPT)
    runner.ensure_finite()  # -inf outside the subset is a zero probability, not an error
    for bad in (float("nan"), float("inf")):
        model = subset_draft()
        with torch.no_grad():
            model.lm_head.proj.weight[0, 0] = bad
        runner = ModelRunner(model, name="draft")
        runner.forward(PROMPT)
        with pytest.raises(NonFiniteLogitsError, match="draft: non-finite logits"):
            runner.ensure_finite()


def test_nan_logits_still_stop_a_generation() -> None:
    from tests.test_engine import nan_model

    decoder = decoder_for(nan_model(), None, "vanilla", 1.0)
    with pytest.raises(NonFiniteLogitsError, match="target: non-finite logits"):
        decoder.generate([1, 2, 3], 5, seed=0)


# -- choosing, saving and configuring a subset -------------------------------------------------


def sample(ids: list[int], n_prompt: int, argmax: list[int]) -> Sample:
    top = torch.tensor(argmax).view(-1, 1)
    return Sample(ids=ids, n_prompt=n_prompt, top_ids=top, top_logp=torch.zeros_like(top).float())


def test_frequent_tokens_picks_the_most_frequent_response_ids_deterministically() -> None:
    samples = [
        # Prompt tokens (9, 9, 9) are not counted.
        sample([9, 9, 9, 4, 4, 7, 2], 3, argmax=[4, 4, 7, 1]),
        sample([9, 5, 7, 1], 1, argmax=[5, 7, 3]),
    ]
    # Counts: 4 -> 4, 7 -> 4, 5 -> 2, 1 -> 2, 2 -> 1, 3 -> 1; ties by lower id.
    assert frequent_tokens(samples, 2, vocab_size=12).tolist() == [4, 7]
    assert frequent_tokens(samples, 3, vocab_size=12).tolist() == [1, 4, 7]
    assert frequent_tokens(samples, 5, vocab_size=12).tolist() == [1, 2, 4, 5, 7]
    # More than the distinct ids: unseen ids fill up from the lowest.
    assert frequent_tokens(samples, 8, vocab_size=12).tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert frequent_tokens(list(reversed(samples)), 3, 12).tolist() == [1, 4, 7]
    with pytest.raises(VocabSubsetError, match="exceeds the vocabulary size 12"):
        frequent_tokens(samples, 13, vocab_size=12)


def test_save_and_load_round_trip(tmp_path) -> None:
    assert load_subset(tmp_path) is None
    assert apply_saved_subset(tiny_llama(vocab_size=VOCAB), tmp_path) is None
    save_subset(tmp_path, torch.tensor([6, 0, 3]))
    assert (tmp_path / SUBSET_FILE).is_file()
    assert load_subset(tmp_path).tolist() == [0, 3, 6]
    model = tiny_llama(vocab_size=VOCAB)
    assert apply_saved_subset(model, tmp_path) == 3
    assert model.lm_head.ids.tolist() == [0, 3, 6]


@pytest.mark.parametrize("bad", [0, -3, 2.5, "4096", True])
def test_a_bad_vocab_subset_is_refused_with_a_clear_message(default_config, bad) -> None:
    for section in ("drafts", "heads"):
        config = copy.deepcopy(default_config)
        name = next(iter(config[section]))
        config[section][name]["vocab_subset"] = bad
        with pytest.raises(ConfigError, match=f"{section}/{name}/vocab_subset"):
            validate_config(config)
        config[section][name]["vocab_subset"] = None  # null: the full vocabulary
        validate_config(config)
    with pytest.raises(VocabSubsetError, match=r"drafts\.d: vocab_subset 50000 exceeds"):
        check_subset_size(50000, 49152, "drafts.d")
    with pytest.raises(VocabSubsetError, match="positive integer"):
        check_subset_size(True, 49152, "drafts.d")


def test_training_chooses_the_subset_before_training_and_refuses_a_too_large_one() -> None:
    from specrepro.cli.training import _subset_ids, _training_entry

    teacher = tiny_llama(vocab_size=12)
    samples = [sample([9, 4, 4, 7], 1, argmax=[4, 4, 7])]
    assert _subset_ids({"teacher": "t"}, samples, teacher, "drafts.d") is None
    assert _subset_ids({"vocab_subset": 2}, samples, teacher, "drafts.d").tolist() == [4, 7]
    with pytest.raises(VocabSubsetError, match=r"heads\.h: vocab_subset 13 exceeds .* 12"):
        _subset_ids({"vocab_subset": 13}, samples, teacher, "heads.h")
    # The training configs never see the key (their from_config takes only their fields).
    assert _training_entry({"teacher": "t", "steps": 3, "vocab_subset": 2}) == {
        "teacher": "t",
        "steps": 3,
    }


def test_load_pair_applies_a_saved_subset_to_the_draft_only(tmp_path, tiny_model_dir) -> None:
    import shutil

    import yaml

    from specrepro.config import load_config
    from specrepro.run.harness import load_pair
    from tests.conftest import write_tiny_config

    draft_dir = tmp_path / "draft"
    shutil.copytree(tiny_model_dir, draft_dir)
    save_subset(draft_dir, torch.arange(100))
    config_path = write_tiny_config(tmp_path, tiny_model_dir)
    config = yaml.safe_load(config_path.read_text())
    config["models"]["registry"]["tiny-draft"]["path"] = str(draft_dir)
    config_path.write_text(yaml.safe_dump(config))
    loaded = load_pair(load_config(config_path), "tiny", "float32", "cpu", roles=("draft",))
    assert subset_size(loaded.draft) == 100 and subset_size(loaded.target) is None
    assert loaded.fingerprints["draft_vocab_subset"] == "100"
    got, _ = decoder_for(loaded.target, loaded.draft, "sps", 0.0, gamma=3).generate(
        [1, 2, 3], 12, seed=0
    )
    ref, _ = decoder_for(loaded.target, None, "vanilla", 0.0).generate([1, 2, 3], 12, seed=0)
    assert got.tokens == ref.tokens
