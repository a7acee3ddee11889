"""End to end on the real default target: CLI generate -> result file -> tidy table -> report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from specrepro import cli
from specrepro.records import read_records
from tests.conftest import REPO


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, smollm_dir: Path) -> Path:
    """Vanilla and sps (untrained 4-layer draft cut from the target) on two made-up questions,
    and vanilla generating past the answer (stop_at_answer: false)."""
    import copy

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.test_sps import truncated_draft

    root = tmp_path_factory.mktemp("pipeline")
    target = AutoModelForCausalLM.from_pretrained(smollm_dir)
    draft = truncated_draft(target, layers=4)
    draft.save_pretrained(root / "draft")
    AutoTokenizer.from_pretrained(smollm_dir).save_pretrained(root / "draft")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config = copy.deepcopy(config)
    config["models"]["cache_dir"] = str(REPO / "resources" / "models")
    config["models"]["registry"]["smollm2-draft-2l"] = {
        "source": "local",
        "path": str(root / "draft"),
    }
    config["runs"]["warmup"] = 0
    config["methods"]["vanilla-full"] = {"algorithm": "vanilla", "stop_at_answer": False}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    prompts = root / "prompts.jsonl"
    records = [
        {
            "question_id": "m1",
            "dataset": "mtbench",
            "turns": ["Name a color.", "Name another one."],
        },
        {
            "question_id": "s1",
            "dataset": "squad",
            "answer_format": "line",
            "turns": [
                "Context: Paris is the capital of France.\nQuestion: What is the capital of France?"
            ],
            "reference": {"answers": ["Paris"]},
        },
        {
            # An answer line the model goes on after: the full-length run must too.
            "question_id": "s2",
            "dataset": "squad",
            "answer_format": "line",
            "turns": ["Name three colours, one word per line."],
            "reference": {"answers": ["waves"]},
        },
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in records))
    for method in ("vanilla", "sps", "vanilla-full"):
        argv = ["generate", "--config", str(root / "config.yaml"), "--pair", "smollm2",
                "--method", method, "--prompts", str(prompts), "--max-new-tokens", "24",
                "--out", str(root / f"{method}.jsonl"), "--no-progress"]  # fmt: skip
        assert cli.main(argv) == 0
    return root


@pytest.mark.slow
def test_result_records_have_every_field(run_dir: Path) -> None:
    metas, records = read_records(run_dir / "sps.jsonl")
    meta = metas["smollm2/sps"]
    assert meta["method"] == "sps" and meta["batch_size"] == 1
    assert meta["params"] == {"gamma": 3, "stop_at_answer": True}
    assert meta["hardware"]["packages"]["torch"].startswith("2.13")
    assert meta["config"]["pairs"]["smollm2"]["target"] == "smollm2-135m-instruct"
    assert "git_commit" in meta
    assert [r["question_id"] for r in records] == ["m1", "s1", "s2"]
    mt = records[0]
    assert len(mt["turns"]) == 2 and mt["choices"][0]["turns"] == [t["text"] for t in mt["turns"]]
    for turn in mt["turns"]:
        assert turn["new_tokens"] == len(turn["token_ids"]) == sum(turn["accept_lengths"])
        assert turn["target_forwards"] == len(turn["accept_lengths"])
        # sps verifies from the first forward on (the prompt rides along with the drafts).
        assert turn["verify_forwards"] == turn["target_forwards"]
        assert turn["verified_tokens"] == turn["new_tokens"]
        assert turn["kv_bytes_peak"] > 0 and turn["target_loglik"] < 0
        assert turn["wall_time"] > 0 and turn["draft_forwards"] > 0
        assert turn["time_draft"] + turn["time_verify"] <= turn["wall_time"] + 1e-6
        energy = turn["energy"]
        # The run is on device cpu: null with that reason, whether or not the host has a GPU.
        assert energy["energy_j"] is None and "run on device cpu" in energy["reason"]


@pytest.mark.slow
def test_tidy_and_report_from_real_results(run_dir: Path, tmp_path: Path) -> None:
    tidy_csv = tmp_path / "tidy.csv"
    files = [str(run_dir / "vanilla.jsonl"), str(run_dir / "sps.jsonl")]
    assert (
        cli.main(["tidy", "--config", str(run_dir / "config.yaml"), "--out", str(tidy_csv), *files])
        == 0
    )
    tidy = pd.read_csv(tidy_csv)
    assert len(tidy) == 2 * 4  # two methods x (two mtbench turns + two squad turns)
    sps = tidy[tidy["method"] == "sps"]
    assert (sps["lossless_match"] == 1).all()  # float32, T=0
    assert sps[sps["dataset"] == "squad"]["em"].notna().all()
    assert tidy["energy_j"].isna().all() and tidy["energy_reason"].notna().all()
    argv = ["report", "--tidy", str(tidy_csv), "--tables-dir", str(tmp_path / "t"),
            "--figures-dir", str(tmp_path / "f")]  # fmt: skip
    assert cli.main(argv) == 0
    table = (tmp_path / "t" / "table_mtbench.md").read_text()
    assert "sps" in table and "vanilla" in table
    assert (tmp_path / "f" / "speedup.pdf").stat().st_size > 0


@pytest.mark.slow
def test_full_length_runs_past_the_answer_and_scores_the_answer(
    run_dir: Path, tmp_path: Path
) -> None:
    """stop_at_answer: false generates to EOS or max_new_tokens (the DSBD paper's protocol);
    the answer is still cut out for scoring, and lossless checks compare like with like."""
    stopped = {r["question_id"]: r for r in read_records(run_dir / "vanilla.jsonl")[1]}
    metas, records = read_records(run_dir / "vanilla-full.jsonl")
    assert metas["smollm2/vanilla-full"]["params"] == {"stop_at_answer": False}
    squad_stopped = stopped["s2"]["turns"][0]
    squad_full = next(r for r in records if r["question_id"] == "s2")["turns"][0]
    assert squad_stopped["stop_reason"] == "stop_string"
    assert squad_full["stop_reason"] in ("eos", "max_new_tokens")
    assert squad_full["new_tokens"] > squad_stopped["new_tokens"]
    # Greedy: the full generation continues the stopped one.
    assert squad_full["token_ids"][: squad_stopped["new_tokens"]] == squad_stopped["token_ids"]
    tidy_csv = tmp_path / "tidy.csv"
    files = [str(run_dir / "vanilla.jsonl"), str(run_dir / "vanilla-full.jsonl")]
    argv = ["tidy", "--config", str(run_dir / "config.yaml"), "--out", str(tidy_csv), *files]
    assert cli.main(argv) == 0
    tidy = pd.read_csv(tidy_csv).set_index(["method", "question_id"])
    for qid in ("s1", "s2"):
        for score in ("em", "f1"):
            assert tidy.loc[("vanilla", qid), score] == tidy.loc[("vanilla-full", qid), score]
    assert not tidy.loc[("vanilla-full", "s2"), "stop_at_answer"]
    # Vanilla full-length is its own greedy reference, not a mismatch with the stopped run.
    assert (tidy.loc["vanilla-full", "lossless_match"] == 1).all()


def test_stop_at_answer_must_be_a_boolean() -> None:
    from specrepro.config import ConfigError, resolve_method

    config = {"methods": {"v": {"algorithm": "vanilla", "stop_at_answer": "no"}}}
    with pytest.raises(ConfigError, match="stop_at_answer must be true or false, got 'no'"):
        resolve_method(config, "v")
