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


def test_a_pruned_student_starts_as_the_teachers_layers_cut_to_its_widths() -> None:
    teacher = tiny_llama(vocab_size=32, seed=0, layers=3, hidden=32)
    cfg = DistillConfig(
        num_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=16
    )
    student = build_student(teacher, cfg)
    head_dim = teacher.config.head_dim
    assert student.config.head_dim == head_dim
    torch.testing.assert_close(
        student.model.layers[1].self_attn.q_proj.weight,
        teacher.model.layers[1].self_attn.q_proj.weight[: 2 * head_dim],
    )
    torch.testing.assert_close(
        student.model.layers[1].mlp.down_proj.weight,
        teacher.model.layers[1].mlp.down_proj.weight[:, :16],
    )


def test_a_wider_student_starts_as_the_teacher_its_extra_units_silent() -> None:
    """Heads and feed-forward units beyond the teacher's have zero output weights, so the
    student at step 0 computes exactly the teacher's first layers."""
    teacher = tiny_llama(vocab_size=32, seed=0, layers=2, hidden=32)
    wider = DistillConfig(
        num_layers=1, num_attention_heads=8, num_key_value_heads=4, intermediate_size=160
    )
    wide = build_student(teacher, wider)
    same = build_student(teacher, DistillConfig(num_layers=1))
    assert wide.config.intermediate_size == 160 and wide.config.num_attention_heads == 8
    ids = torch.randint(0, 32, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(wide(ids).logits, same(ids).logits, rtol=1e-5, atol=1e-5)


def test_budget_layers_gives_a_draft_of_the_budgets_size() -> None:
    from specrepro.models.distill import student_shape
    from specrepro.models.family import Shape

    teacher = tiny_llama(vocab_size=32, seed=0, layers=4, hidden=64)
    budget = Shape.of(teacher.config)
    for depth in (1, 2, 4):
        student = build_student(teacher, DistillConfig(num_layers=depth, budget_layers=2))
        counted = sum(
            p.numel()
            for name, p in student.named_parameters()
            if "embed" not in name and "lm_head" not in name
        )
        shape = student_shape(teacher.config, DistillConfig(num_layers=depth, budget_layers=2))
        assert counted == shape.counted_parameters()
        target = 2 * budget.layer_parameters() + budget.hidden_size
        assert abs(counted - target) / target < 0.15, (depth, counted, target)


def test_bad_student_shapes_are_refused() -> None:
    import pytest

    teacher = tiny_llama(vocab_size=32, seed=0, layers=2, hidden=32)
    with pytest.raises(ValueError, match="cannot share"):
        build_student(teacher, DistillConfig(num_layers=1, hidden_size=48))
    with pytest.raises(ValueError, match="solves the widths"):
        build_student(teacher, DistillConfig(num_layers=1, budget_layers=2, intermediate_size=8))
