"""Draft distillation: the student shares the teacher's embedding and learns from its outputs."""

from __future__ import annotations

import torch

from specrepro.models.distill import DistillConfig, build_student, train_student
from specrepro.models.teacher import Sample
from tests.conftest import tiny_llama


def test_student_starts_from_teacher_layers_and_freezes_embeddings() -> None:
    teacher = tiny_llama(vocab_size=32, seed=0, layers=3)
    student = build_student(teacher, DistillConfig(num_layers=1))
    assert student.config.num_hidden_layers == 1
    torch.testing.assert_close(
        student.model.layers[0].mlp.up_proj.weight, teacher.model.layers[0].mlp.up_proj.weight
    )
    assert not student.get_input_embeddings().weight.requires_grad
    assert not student.get_output_embeddings().weight.requires_grad


def test_training_fits_teacher_sequences() -> None:
    teacher = tiny_llama(vocab_size=32, seed=0, layers=3)
    torch.manual_seed(0)
    # A pattern the student can learn: counting modulo 7 after a 3-token prompt, with a teacher
    # distribution that puts 0.9 on the next count.
    samples = []
    for start in range(40):
        seq = [(start + i) % 7 + 3 for i in range(20)]
        nxt = torch.tensor(seq[3:])
        top_ids = torch.stack([nxt, (nxt + 1) % 32], dim=-1)
        top_logp = torch.log(torch.tensor([0.9, 0.1])).expand(len(nxt), 2)
        samples.append(Sample(seq, 3, top_ids, top_logp))
    cfg = DistillConfig(num_layers=1, steps=60, batch_size=8, lr=3e-3, seed=0)
    student = build_student(teacher, cfg)
    log = train_student(student, samples, cfg, pad=0)
    assert log[-1]["holdout_loss"] < 0.6 * log[0]["holdout_loss"]
    assert log[-1]["holdout_agreement"] > 0.9
