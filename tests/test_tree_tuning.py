"""The CPU trees' `tuned` values: chosen on tuning questions by tune-trees, read by generate."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from specrepro.config import ConfigError, MethodChoice, load_config, resolve_method
from specrepro.decoding.base import make_params
from specrepro.models.eagle_head import build_head, head_config_for
from specrepro.planning import make_plan
from specrepro.run.decoder import LoadedPair
from specrepro.tree_tuning import apply_tuning, h_medians, h_probe, interleaved_stats, tune_trees
from tests.conftest import tiny_llama
from tests.test_sps import PROMPT, VOCAB

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def _loaded() -> LoadedPair:
    target = tiny_llama(vocab_size=VOCAB, seed=0)
    torch.manual_seed(11)
    head = build_head(head_config_for(target), target)
    return LoadedPair(
        name="tiny", target=target, tokenizer=None, draft=None, conversation="plain",  # type: ignore[arg-type]
        eos_ids=frozenset(), token_text=(), head=head,
    )  # fmt: skip


def test_the_size_is_the_fastest_and_x_the_median_h_at_the_first_check() -> None:
    loaded = _loaded()
    size = MethodChoice("e2", "eagle2", make_params("eagle2", {"top_k": 3, "depth": 4}))
    values = {"top_k": 3, "check_levels": [2, 3], "max_levels": 4, "threshold": 0.0}
    ddd = MethodChoice("d", "ddd", make_params("ddd", values))
    prompts = [PROMPT, PROMPT[:-2]]
    result = tune_trees(loaded, size, ddd, [6, 10], prompts, 10)
    speeds = {int(s): m["tokens_per_s"] for s, m in result["sizes"].items()}
    assert set(speeds) == {6, 10}
    assert result["chosen"]["total_tokens"] == max(speeds, key=speeds.get)
    assert result["first_check_level"] == 2
    # At T=0 the probe is deterministic: the same probe gives the same median at level 2.
    probe = h_probe(
        MethodChoice(
            "d",
            "ddd",
            make_params("ddd", {**values, "total_tokens": result["chosen"]["total_tokens"]}),
        )
    )
    again = h_medians(
        interleaved_stats(loaded, {"h-probe": probe}, prompts, 10)["h-probe"]["checks"]
    )
    assert again is not None
    assert result["chosen"]["threshold"] == pytest.approx(round(again[2], 3))
    assert result["h_median_by_level"] == {str(k): v for k, v in again.items()}


def test_tuned_values_come_from_the_tuning_file_or_a_clear_error() -> None:
    config = load_config(DEFAULT_CONFIG)
    assert config["methods"]["ddd-cpu"]["threshold"] == "tuned"
    with pytest.raises(ConfigError, match="tune-trees"):
        resolve_method(config, "ddd-cpu")
    tuning = {"chosen": {"total_tokens": 12, "threshold": -4.5}}
    methods = apply_tuning(config["methods"], tuning, "trees.json")
    assert methods["ddd-cpu"]["threshold"] == -4.5 and methods["ddd-cpu"]["total_tokens"] == 12
    assert methods["eagle2-cpu"]["total_tokens"] == 12
    assert config["methods"]["ddd-cpu"]["threshold"] == "tuned"  # the config is not changed
    choice = resolve_method({**config, "methods": methods}, "ddd-cpu")
    assert choice.params.threshold == -4.5
    with pytest.raises(ConfigError, match=r"trees.json chose no threshold"):
        apply_tuning(config["methods"], {"chosen": {"total_tokens": 12}}, "trees.json")


def test_a_tuned_value_without_its_block_or_on_another_key_is_refused(tmp_path: Path) -> None:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    bad = copy.deepcopy(config)
    del bad["tree_tuning"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="tree_tuning block, which the config lacks"):
        load_config(path)
    bad = copy.deepcopy(config)
    bad["methods"]["ddd-cpu"]["top_k"] = "tuned"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"\['top_k'\] cannot be `tuned`"):
        load_config(path)
    bad = copy.deepcopy(config)
    bad["tree_tuning"]["size_entry"] = "ddd-cpu"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="size_entry 'ddd-cpu' is not a eagle2 entry"):
        load_config(path)


def test_the_plan_tunes_once_per_pair_and_the_tree_group_reads_it() -> None:
    plan = make_plan(load_config(DEFAULT_CONFIG))
    assert plan.tuning_pairs() == ["smollm2"]
    assert [j.outputs for j in plan.jobs() if j.rule == "tune_trees"] == [
        ("results/default/tuning/smollm2/trees.json",)
    ]

    class W:
        target, dataset, group = "smollm2-135m-instruct", "mtbench", "T0.0-s0"

    class Input:
        tuning = ["results/default/tuning/smollm2/trees.json"]

    assert plan.group_tuning(W) == Input.tuning
    assert (
        plan.tuning_args(W, Input) == "--tuning smollm2=results/default/tuning/smollm2/trees.json"
    )
    W.dataset = "squad"
    assert plan.group_tuning(W) == []
