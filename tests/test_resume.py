"""Result files are written as they go; a killed run resumes with each question exactly once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from specrepro.records import ResultWriter, partial_path, read_records
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


RUN = {"pair": "p", "method": "sps"}


def test_torn_last_line_is_dropped_and_rewritten(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    meta = {"record": "meta", **RUN, "seed": 0}
    writer = ResultWriter(out, [meta], ("method", "seed"))
    writer.append({**RUN, "question_id": "a", "turns": []})
    writer.close()
    with partial_path(out).open("a") as f:
        f.write('{"question_id": "b", "tur')  # killed mid-write
    writer = ResultWriter(out, [meta], ("method", "seed"))
    assert writer.done == {("p/sps", "a")}
    writer.append({**RUN, "question_id": "b", "turns": []})
    writer.finish()
    lines = out.read_text().splitlines()
    assert [json.loads(line).get("question_id") for line in lines] == [None, "a", "b"]


def test_a_file_from_other_settings_is_set_aside_not_resumed(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.jsonl"
    old_meta, new_meta = ({"record": "meta", **RUN, "seed": seed} for seed in (0, 1))
    old = ResultWriter(out, [old_meta], ("seed",))
    old.append({**RUN, "question_id": "a", "turns": []})
    old.close()
    writer = ResultWriter(out, [new_meta], ("seed",))
    assert writer.done == set()
    assert "differ in seed; starting over" in capsys.readouterr().err
    writer.finish()
    assert read_records(out) == ({"p/sps": new_meta}, [])
    stale = writer.set_aside
    assert stale == out.with_name("r.jsonl.stale1")
    assert read_records(stale) == ({"p/sps": old_meta}, [{**RUN, "question_id": "a", "turns": []}])


def test_a_group_with_other_runs_is_set_aside(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.jsonl"
    meta = {"record": "meta", **RUN, "seed": 0}
    ResultWriter(out, [meta], ("seed",)).close()
    other = {"record": "meta", "pair": "p", "method": "vanilla", "seed": 0}
    writer = ResultWriter(out, [meta, other], ("seed",))
    assert "differ in runs; starting over" in capsys.readouterr().err
    writer.finish()
    assert set(read_records(out)[0]) == {"p/sps", "p/vanilla"}


def test_rerun_after_a_retrained_draft_or_new_prompts_starts_over(
    tmp_path: Path, tiny_model_dir: Path, capsys
) -> None:
    from specrepro import cli
    from tests.conftest import tiny_llama

    draft_dir = tmp_path / "draft"
    shutil.copytree(tiny_model_dir, draft_dir)
    config = write_tiny_config(tmp_path, tiny_model_dir)
    cfg = yaml.safe_load(config.read_text())
    cfg["models"]["registry"]["tiny-draft"]["path"] = str(draft_dir)
    config.write_text(yaml.safe_dump(cfg))
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=2, turns=1)
    out = tmp_path / "run.jsonl"
    argv = generate_cmd(config, prompts, out)[3:]
    argv[argv.index("40")] = "4"

    def run() -> tuple[dict, str]:
        assert cli.main(argv) == 0
        return read_records(out)[0]["tiny/sps"], capsys.readouterr().err

    first, _ = run()
    assert set(first["model_fingerprints"]) == {"target", "draft"}
    assert len(first["code_sha256"]) == 64 and len(first["prompts_sha256"]) == 64
    same, err = run()  # nothing changed: the finished file is kept as it is
    assert "starting over" not in err and same == first

    retrained = tiny_llama(vocab_size=cfg_vocab(tiny_model_dir), seed=99, hidden=32)
    retrained.save_pretrained(draft_dir)
    after_training, err = run()
    assert "differ in model_fingerprints; starting over" in err
    assert after_training["model_fingerprints"]["draft"] != first["model_fingerprints"]["draft"]
    assert after_training["model_fingerprints"]["target"] == first["model_fingerprints"]["target"]

    write_prompts(prompts, n=3, turns=1)
    after_prompts, err = run()
    assert "differ in prompts_sha256; starting over" in err
    assert len(read_records(out)[1]) == 3
    assert sorted(p.name for p in tmp_path.glob("run.jsonl.stale*")) == [
        "run.jsonl.stale1",
        "run.jsonl.stale2",
    ]


def cfg_vocab(model_dir: Path) -> int:
    return json.loads((model_dir / "config.json").read_text())["vocab_size"]


def test_a_timing_group_interleaves_its_runs_in_a_balanced_order_and_repeats(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from specrepro import cli
    from specrepro.run.timing_group import williams_rows

    config = write_tiny_config(tmp_path, tiny_model_dir)
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=4, turns=1)
    out = tmp_path / "group.jsonl"
    argv = generate_cmd(config, prompts, out)[3:]
    argv[argv.index("40")] = "4"
    argv[argv.index("--pair") : argv.index("--prompts")] = [
        "--member", "tiny/vanilla", "--member", "tiny/sps", "--member", "tiny/sps-first@2",
    ]  # fmt: skip
    argv += ["--repeats", "2"]
    cfg = yaml.safe_load(config.read_text())
    cfg["methods"]["sps-first"] = {"algorithm": "sps", "gamma": 2}
    config.write_text(yaml.safe_dump(cfg))
    assert cli.main(argv) == 0
    metas, records = read_records(out)
    assert list(metas) == ["tiny/vanilla", "tiny/sps", "tiny/sps-first"]
    assert metas["tiny/sps-first"]["questions"] == 2
    assert all(m["timing_group"] == list(metas) for m in metas.values())
    assert all(m["timing_repeats"] == 2 for m in metas.values())
    rows = williams_rows(3)
    names = ["vanilla", "sps", "sps-first"]
    for record in records:
        index = int(record["question_id"][1:])
        timing = record["timing"]
        assert timing["repeats"] == 2 and timing["same_tokens"]
        # Repeat r of question i ran in order row i + r * (period // 2) of the design; the member
        # limited to the first 2 prompts drops out of the order after them.
        expected = []
        for repeat in range(2):
            order = [names[k] for k in rows[(index + repeat * len(rows) // 2) % len(rows)]]
            order = [m for m in order if m != "sps-first" or index < 2]
            expected.append(order.index(record["method"]))
        assert timing["positions"] == expected
        totals = [sum(times) for times in timing["wall_times"]]
        assert timing["kept"] == totals.index(min(totals))
        assert record["turns"][0]["wall_time"] == min(totals)
        assert record["turns"][0]["target_loglik"] is not None
    assert sorted((r["question_id"], r["method"]) for r in records) == sorted(
        [(f"q{i}", m) for i in range(4) for m in ("vanilla", "sps")]
        + [("q0", "sps-first"), ("q1", "sps-first")]
    )
    # At T=1 with per-question seeds a run draws the same tokens alone or in a group.
    alone = tmp_path / "alone.jsonl"
    solo = generate_cmd(config, prompts, alone)[3:]
    solo[solo.index("40")] = "4"
    assert cli.main(solo) == 0
    by_id = {r["question_id"]: r["turns"][0]["token_ids"] for r in read_records(alone)[1]}
    grouped = {
        r["question_id"]: r["turns"][0]["token_ids"] for r in records if r["method"] == "sps"
    }
    assert grouped == by_id
