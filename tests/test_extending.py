"""Extending specrepro as docs/extending.md says, through the real DAG: a method in a package
of its own and a dataset of one's own (a jsonl file with a named scorer) are a file and a config
entry each, with no other edit; then `make report`'s command builds the HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import copy_workflow
from tests.test_method_registry import GREEDY_METHOD, write_method_package
from tests.test_workflow import snakemake

QUESTIONS = [
    ("capital-fr", "What is the capital of France?", ["Paris"]),
    ("two-plus-two", "What is two plus two?", ["4", "four"]),
]


def extension_config(model_dir: Path, algorithm: str) -> dict:
    """The tiny target, vanilla and the new method, on the new dataset only. Merged over
    config/config.yaml, so the default's blocks it has no use for are switched off (null)."""
    return {
        "models": {
            "cache_dir": "resources/models",
            "registry": {"tiny": {"source": "local", "path": str(model_dir)}},
        },
        "pairs": {"tiny": {"target": "tiny", "conversation": "chat_template"}},
        "methods": {"next-token": {"algorithm": algorithm}},
        "datasets": {
            "myqa": {
                "kind": "jsonl",
                "path": "ext/myqa.jsonl",
                "scorer": "squad_em_f1",
                "n": None,
                "max_new_tokens": 5,
                "tuning": 0,
            }
        },
        "runs": {
            "pairs": ["tiny"],
            "methods": ["vanilla", "next-token"],
            "datasets": ["myqa"],
            "temperatures": [0.0],
            "seeds": [0],
            "dtype": "float32",
            "device": "cpu",
            "warmup": 0,
            "repeats": 1,
            "only": None,
            "only_temperatures": None,
        },
        "tree_tuning": None,
        "sweeps": {"ddd": None},
        "studies": {"draft_design": None},
        "energy": {"sample_hz": 20, "idle_seconds": 2},
        "claims": ["config/claims/control.yaml"],
    }


def snakemake_with(workdir: Path, *args: str) -> str:
    """Snakemake as a user runs it, with the new package on PYTHONPATH."""
    result = snakemake(*args, cwd=workdir, env={"PYTHONPATH": str(workdir / "ext")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def extended_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("extended"))
    algorithm = write_method_package(workdir / "ext", GREEDY_METHOD)
    with (workdir / "ext" / "myqa.jsonl").open("w") as f:
        for qid, question, answers in QUESTIONS:
            record = {"question_id": qid, "turns": [question], "reference": {"answers": answers}}
            f.write(json.dumps(record) + "\n")
    config = workdir / "config" / "ext.yaml"
    config.write_text(yaml.safe_dump(extension_config(tiny_model_dir, algorithm)))
    snakemake_with(workdir, "--configfile", "config/ext.yaml", "--cores", "2")
    return workdir


def test_a_new_method_and_a_new_dataset_run_through_the_dag(extended_run: Path) -> None:
    tidy = pd.read_csv(extended_run / "results" / "ext" / "tidy.csv")
    assert set(tidy["dataset"]) == {"myqa"}
    assert set(tidy["method"]) == {"vanilla", "vanilla-aa", "next-token"}
    ours = tidy[tidy["method"] == "next-token"]
    assert set(ours["algorithm"]) == {"my_methods.greedy"}
    assert len(ours) == len(QUESTIONS) and (ours["lossless_match"] == 1).all()
    # The named scorer's columns, computed for the new dataset.
    assert {"em", "f1"} <= set(tidy.columns) and tidy["f1"].notna().all()
    table = (extended_run / "figures" / "ext" / "tables" / "table_myqa.md").read_text()
    assert "| next-token |" in table


def test_make_reports_command_builds_the_report_of_the_run(extended_run: Path) -> None:
    # What `make report CONFIG=config/ext.yaml` runs (tests/test_workflow.py checks the target).
    snakemake_with(
        extended_run, "--configfile", "config/ext.yaml", "--report", "results/ext/report.html"
    )
    report = extended_run / "results" / "ext" / "report.html"
    assert report.stat().st_size > 10_000
    assert "table_myqa" in report.read_text(errors="replace")
