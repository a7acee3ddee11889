"""Benches choose settings on tuning questions, and the DDD probe reports H at every level."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from specrepro.bench.common import bench_prompts
from specrepro.bench.trees import tree_ratios
from specrepro.config import ConfigError, MethodChoice
from specrepro.data import load_prompts, load_training_prompts
from specrepro.decoding.base import make_params
from specrepro.models.eagle_head import build_head, head_config_for
from specrepro.run.decoder import LoadedPair
from specrepro.tree_tuning import h_probe
from tests.conftest import tiny_llama
from tests.test_sps import PROMPT, VOCAB


def _config(mirror: Path) -> dict:
    return {
        "data": {"dir": str(mirror)},
        "datasets": {"squad": {"n": 2, "max_new_tokens": 8, "tuning": 1}},
        "runs": {"subsample_seed": 0},
    }


def test_bench_questions_come_from_the_tuning_split(data_mirror: Path) -> None:
    config = _config(data_mirror)
    tuning = bench_prompts(config, "squad", 1, "tuning")
    evaluated = load_prompts("squad", data_mirror, 2, 0)
    trained = load_training_prompts(["squad"], data_mirror, {"squad": 2}, 0, 100, 0, {"squad": 1})
    assert len(tuning) == 1
    ids = {r["question_id"] for r in tuning}
    assert not ids & {r["question_id"] for r in evaluated + trained}
    assert bench_prompts(config, "squad", 2, "eval") == evaluated
    with pytest.raises(ConfigError, match=r"holds out 1 \(datasets.squad.tuning\)"):
        bench_prompts(config, "squad", 2, "tuning")
    with pytest.raises(ConfigError, match="'spider' is not configured"):
        bench_prompts(config, "spider", 1, "tuning")


def test_h_probe_reports_the_median_h_at_every_level() -> None:
    target = tiny_llama(vocab_size=VOCAB, seed=0)
    torch.manual_seed(11)
    head = build_head(head_config_for(target), target)
    loaded = LoadedPair(
        name="tiny", target=target, tokenizer=None, draft=None, conversation="plain",  # type: ignore[arg-type]
        eos_ids=frozenset(), token_text=(), head=head,
    )  # fmt: skip
    base_values = {"top_k": 3, "total_tokens": 8, "check_levels": [2], "max_levels": 4}
    base = MethodChoice("ddd-small", "ddd", make_params("ddd", base_values))
    probe = h_probe(base)
    assert probe.params.check_levels == [1, 2, 3, 4] and probe.params.threshold == -1e9
    vanilla = MethodChoice("vanilla", "vanilla", make_params("vanilla", {}))
    report = tree_ratios(loaded, {"vanilla": vanilla, "h-probe": probe}, [PROMPT], 12)
    medians = report["h-probe"]["h_median_by_level"]
    assert list(medians) == [1, 2, 3, 4]
    # H is the log of the kept beams' total draft probability: it never grows with depth.
    values = list(medians.values())
    assert all(b <= a + 1e-6 for a, b in zip(values, values[1:], strict=False))
    assert report["h-probe"]["match_vanilla"] == 1.0  # the probe is still exact at T=0
    assert report["vanilla"]["h_median_by_level"] is None
    # Acceptance by depth, consistent with tau: the shares reached sum to tau - 1.
    depth = report["h-probe"]["depth"]
    assert sum(depth["reached"]) == pytest.approx(report["h-probe"]["tau"] - 1)
