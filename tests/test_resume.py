"""Result files are written as they go; a killed run resumes with each question exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from specrepro.records import ResultsError, ResultWriter, partial_path, read_records
from tests.conftest import write_prompts, write_tiny_config


def generate_cmd(config: Path, prompts: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "specrepro.cli", "generate", "--config", str(config),
        "--pair", "tiny", "--method", "sps", "--prompts", str(prompts), "--max-new-tokens", "40",
        "--temperature", "1.0", "--seed", "3", "--out", str(out), "--no-progress",
    ]  # fmt: skip


def question_ids(path: Path) -> list[str]:
    return [r["question_id"] for r in read_records(path)[1]]


def test_killed_run_resumes_each_question_once(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = write_tiny_config(tmp_path, tiny_model_dir)
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=30, turns=2)
    out = tmp_path / "run.jsonl"
    part = partial_path(out)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(generate_cmd(config, prompts, out), env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if part.exists() and len(question_ids(part)) >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, (
        f"run ended before it could be killed: {proc.stderr.read().decode()}"
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = question_ids(part)
    assert 5 <= len(done_before) < 30
    assert not out.exists()

    subprocess.run(generate_cmd(config, prompts, out), env=env, check=True, capture_output=True)
    ids = question_ids(out)
    assert sorted(ids) == sorted(f"q{i}" for i in range(30))
    assert ids[: len(done_before)] == done_before
    assert not part.exists()

    # Per-question seeds: the resumed run drew exactly what an uninterrupted run draws.
    fresh = tmp_path / "fresh.jsonl"
    subprocess.run(generate_cmd(config, prompts, fresh), env=env, check=True, capture_output=True)
    by_id = {r["question_id"]: r for r in read_records(fresh)[1]}
    for record in read_records(out)[1]:
        assert [t["token_ids"] for t in record["turns"]] == [
            t["token_ids"] for t in by_id[record["question_id"]]["turns"]
        ]


def test_torn_last_line_is_dropped_and_rewritten(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    meta = {"record": "meta", "method": "sps", "seed": 0}
    writer = ResultWriter(out, meta, ("method", "seed"))
    writer.append({"question_id": "a", "turns": []})
    writer.close()
    with partial_path(out).open("a") as f:
        f.write('{"question_id": "b", "tur')  # killed mid-write
    writer = ResultWriter(out, meta, ("method", "seed"))
    assert writer.done == {"a"}
    writer.append({"question_id": "b", "turns": []})
    writer.finish()
    lines = out.read_text().splitlines()
    assert [json.loads(line).get("question_id") for line in lines] == [None, "a", "b"]


def test_resume_refuses_a_file_from_other_settings(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    ResultWriter(out, {"record": "meta", "seed": 0}, ("seed",)).close()
    with pytest.raises(ResultsError, match="seed=0"):
        ResultWriter(out, {"record": "meta", "seed": 1}, ("seed",))
