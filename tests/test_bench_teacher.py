"""The `teacher` bench: per-dtype corpus generation speed against float32 in one run, and the
dtype's features teacher-forced over the float32 tokens against float32's stored ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specrepro.bench import main
from specrepro.bench.teacher import teacher_forced, tolerance
from specrepro.engine.runner import ModelRunner
from specrepro.training.teacher import CorpusConfig, generate_batch
from tests.conftest import tiny_llama, write_prompts, write_tiny_config

TEACHER = {"gen_tokens": 64, "gen_temperature": 0.7, "gen_batch_size": 2, "top_k": 4, "seed": 0}


def _bench(tmp_path: Path, model_dir: Path, *dtypes: str) -> dict:
    config = write_tiny_config(tmp_path, model_dir, teachers={"tiny": TEACHER})
    prompts = write_prompts(tmp_path / "train_prompts.jsonl", n=4)
    out = tmp_path / "teacher.json"
    argv = ["teacher", "--config", str(config), "--prompts", str(prompts), "--n", "3"]
    main([*argv, "--gen-tokens", "8", "--dtypes", *dtypes, "--out", str(out)])
    return json.loads(out.read_text())


@pytest.mark.usefixtures("one_torch_thread")
def test_each_dtype_is_timed_and_compared_with_float32(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    report = _bench(tmp_path, tiny_model_dir, "bfloat16", "int4")
    printed = capsys.readouterr().out
    assert report["teacher"] == "tiny" and report["n"] == 3  # the config's first teacher
    assert report["corpus"]["gen_tokens"] == 8 and report["corpus"]["top_k"] == 4
    rows = {r["dtype"]: r for r in report["rows"]}
    assert list(rows) == ["float32", "bfloat16", "int4"]  # float32 first, though not asked
    reference = rows["float32"]
    assert reference["over_float32"] == 1.0
    assert reference["rel_error_median"] == reference["rel_error_p95"] == 0.0
    assert reference["cosine_mean"] == pytest.approx(1.0)
    assert reference["argmax_agreement"] == reference["topk_overlap"] == 1.0
    # Every row is measured on the float32 run's positions (3 prompts, up to 8 tokens each).
    assert 3 <= reference["positions"] <= 24
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and row["response_tokens"] > 0
        assert row["positions"] == reference["positions"]
    for low in ("bfloat16", "int4"):
        row = rows[low]
        assert 0 < row["rel_error_median"] <= row["rel_error_p95"] < 0.5
        assert 0.8 < row["cosine_mean"] < 1
        assert 0 < row["argmax_agreement"] <= 1 and 0 < row["topk_overlap"] <= 1
    # bfloat16 rounds every activation; int4 only the linear layers' weights and inputs, and
    # those far more coarsely.
    assert rows["bfloat16"]["rel_error_median"] < rows["int4"]["rel_error_median"]
    lines = printed.splitlines()
    assert "relerr = ||f - f32|| / ||f32||" in printed and "top-4" in printed
    assert [line.split()[0] for line in lines[-3:]] == ["float32", "bfloat16", "int4"]


@pytest.mark.usefixtures("one_torch_thread")
def test_a_dtype_that_cannot_generate_is_reported_not_fatal(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    from specrepro.models import gguf_q4

    def no_kernel(*_: object) -> None:
        raise RuntimeError("no int4 kernel in this build")

    monkeypatch.setattr(gguf_q4, "quantise_model_int4", no_kernel)
    report = _bench(tmp_path, tiny_model_dir, "float32", "int4")
    assert report["rows"][1] == {
        "dtype": "int4",
        "error": "RuntimeError: no int4 kernel in this build",
    }
    assert "int4      cannot run teacher generation: RuntimeError" in capsys.readouterr().out


def test_missing_training_prompts_name_the_command_that_writes_them(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = write_tiny_config(tmp_path, tiny_model_dir, teachers={"tiny": TEACHER})
    with pytest.raises(FileNotFoundError, match="specrepro train-prompts --teacher tiny"):
        main(["teacher", "--config", str(config)])


def test_float32_teacher_forced_over_its_own_tokens_matches_its_stored_corpus() -> None:
    """One unpadded forward over a sample's tokens gives the batched generation's features at
    the same positions (up to the corpus's bfloat16 storage) and its top-k: the positions are
    aligned (one position off, the error would be of order 1)."""
    model = tiny_llama(vocab_size=32, seed=1, layers=2)
    prompts = [[3, 5, 7, 9, 11, 2, 4], [6, 1], [8, 8, 3, 12, 5]]
    cfg = CorpusConfig(gen_tokens=12, gen_temperature=0.7, top_k=4)
    samples = generate_batch(ModelRunner(model, pack=False), prompts, cfg, {0}, pad=0)
    same = tolerance(samples, teacher_forced(model, samples))
    assert same["positions"] == sum(len(s.ids) - s.n_prompt for s in samples)
    assert same["rel_error_p95"] < 2**-8  # at most a bfloat16 rounding step apart
    assert same["argmax_agreement"] == same["topk_overlap"] == 1.0
    lower = tolerance(samples, teacher_forced(model.bfloat16(), samples))
    assert same["rel_error_median"] < lower["rel_error_median"] < 0.1
