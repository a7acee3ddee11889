"""Model jobs that are not timed runs (teacher corpus, draft quality, training) run on the run's
device: in the run's dtype when they only generate or score, in float32 when they train."""

from __future__ import annotations

import argparse

import pytest
import torch

from specrepro.cli import common, training
from specrepro.placement import job_placement
from specrepro.training.teacher import CorpusConfig, teacher_generations
from tests.conftest import tiny_llama


def runs(dtype: str, device: str) -> dict:
    return {"runs": {"dtype": dtype, "device": device}}


@pytest.mark.parametrize(
    ("dtype", "device", "generating", "training"),
    [
        ("float16", "cuda", ("float16", "cuda"), ("float32", "cuda")),
        ("bfloat16", "cuda:1", ("bfloat16", "cuda:1"), ("float32", "cuda:1")),
        ("float32", "cpu", ("float32", "cpu"), ("float32", "cpu")),
        ("int4", "cpu", ("float32", "cpu"), ("float32", "cpu")),
    ],
)
def test_jobs_follow_the_run(dtype, device, generating, training) -> None:
    assert job_placement(runs(dtype, device)) == generating
    assert job_placement(runs(dtype, device), training=True) == training


def test_each_model_job_loads_where_its_placement_says(monkeypatch) -> None:
    loads: list[tuple[str, str, str]] = []

    def fake_load(config: dict, name: str, training: bool = False, dtype: str | None = None):
        job_dtype, device = job_placement(config, training)
        loads.append((name, dtype or job_dtype, device))
        raise RuntimeError("loaded")  # stop the command here: the placement is what is tested

    monkeypatch.setattr(training, "load_teacher", fake_load)
    config = {
        **runs("float16", "cuda"),
        "teachers": {"big": {}, "own": {"dtype": "bfloat16"}},
        "heads": {"h": {"teacher": "big"}},
        "models": {"registry": {"h": {"path": "x"}}},
    }
    monkeypatch.setattr("specrepro.config.load_config", lambda *a, **k: config)
    monkeypatch.setattr("specrepro.training.teacher.load_corpus", lambda path: ([], {}))
    monkeypatch.setattr("specrepro.data.read_prompts_jsonl", lambda path: [])
    base = {"config": None, "set_json": {}, "corpus": "c", "out": None, "prompts": "p"}
    jobs = [
        (training.cmd_teacher_corpus, {"teacher": "big"}),
        (training.cmd_train_head, {"head": "h"}),
        (training.cmd_draft_quality, {"draft": "big"}),
        (training.cmd_teacher_corpus, {"teacher": "own"}),
    ]
    for command, extra in jobs:
        with pytest.raises(RuntimeError, match="loaded"):
            command(argparse.Namespace(**base, **extra))
    assert loads == [
        ("big", "float16", "cuda"),  # the teacher corpus samples from the target
        ("big", "float32", "cuda"),  # a head trains against its target
        ("big", "float16", "cuda"),  # draft quality scores the draft
        ("own", "bfloat16", "cuda"),  # a teacher with its own dtype generates in it
    ]
    assert common.load_teacher.__module__ == "specrepro.cli.common"


def test_the_teacher_corpus_runs_the_unpacked_model() -> None:
    teacher = tiny_llama(vocab_size=32, seed=0, hidden=256)  # big enough to be packed
    cfg = CorpusConfig.from_config({"gen_tokens": 3, "seed": 0})

    class Tokenizer:
        pad_token_id, eos_token_id = 0, 1

        def __call__(self, text: str) -> dict:
            return {"input_ids": [2, 3, 4]}

    prompts = [{"question_id": "q", "turns": ["hi"]}]
    samples = teacher_generations(teacher, Tokenizer(), prompts, cfg, "plain")
    assert len(samples) == 1
    assert not any("_packed" in m.__dict__ for m in teacher.modules())
    assert samples[0].top_ids.device == torch.device("cpu")
