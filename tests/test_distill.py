"""Draft distillation: the student shares the teacher's embedding and learns from its outputs."""

from __future__ import annotations

import pytest
import torch

from specrepro.training.distill import DistillConfig, build_student, train_student
from specrepro.training.teacher import Sample
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
    samples = _counting_samples()
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
    from specrepro.training.distill import student_shape
    from specrepro.training.family import Shape

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
    with pytest.raises(ValueError, match="cannot start from the teacher"):
        build_student(teacher, DistillConfig(num_layers=1, hidden_size=48))
    with pytest.raises(ValueError, match="solves the widths"):
        build_student(teacher, DistillConfig(num_layers=1, budget_layers=2, intermediate_size=8))


def _count(model) -> int:
    return sum(
        p.numel() for name, p in model.named_parameters()
        if "embed" not in name and "lm_head" not in name
    )  # fmt: skip


def test_random_init_gives_every_shape_the_same_start() -> None:
    """Without init_from_teacher no layer is a cut of the teacher's: every member starts from
    the model's seeded random initialisation (same distribution whatever its shape)."""
    teacher = tiny_llama(vocab_size=32, seed=0, layers=4, hidden=32)
    stds = []
    for depth in (1, 4):
        cfg = DistillConfig(num_layers=depth, budget_layers=2, init_from_teacher=False, seed=3)
        student = build_student(teacher, cfg)
        up = student.model.layers[0].mlp.up_proj.weight
        source = teacher.model.layers[0].mlp.up_proj.weight
        block = up[: source.shape[0], : source.shape[1]]
        assert not torch.allclose(block, source[: block.shape[0], : block.shape[1]])
        stds.append(float(up.detach().std()))
        # the same seed gives the same start
        again = build_student(teacher, cfg).model.layers[0].mlp.up_proj.weight
        torch.testing.assert_close(up, again)
        # the shared embedding is the teacher's, frozen
        assert student.get_input_embeddings().weight is not None
        torch.testing.assert_close(
            student.get_input_embeddings().weight, teacher.get_input_embeddings().weight
        )
    assert stds[0] == pytest.approx(stds[1], rel=0.2)


def test_a_wider_student_has_its_own_embedding_an_isometric_image_of_the_teachers() -> None:
    from specrepro.training.distill import own_embedding, student_shape

    teacher = tiny_llama(vocab_size=32, seed=0, layers=2, hidden=32)
    cfg = DistillConfig(
        num_layers=1, budget_layers=2, hidden_size=48, init_from_teacher=False,
        train_embeddings=True,
    )  # fmt: skip
    student = build_student(teacher, cfg)
    shape = student_shape(teacher.config, cfg)
    assert student.config.hidden_size == 48 and student.config.vocab_size == 32
    assert _count(student) == shape.counted_parameters()
    target = 2 * student_shape(teacher.config, DistillConfig(num_layers=1)).layer_parameters()
    assert abs(_count(student) - target - 32) / target < 0.25  # the teacher's 2 layers
    embed = student.get_input_embeddings().weight
    assert embed.shape == (32, 48) and embed.requires_grad
    source = teacher.get_input_embeddings().weight
    # every inner product of the teacher's embedding is kept
    torch.testing.assert_close(embed @ embed.T, source @ source.T, rtol=1e-4, atol=1e-4)
    head = student.get_output_embeddings().weight
    torch.testing.assert_close(head @ head.T, teacher.lm_head.weight @ teacher.lm_head.weight.T,
                               rtol=1e-3, atol=1e-2)  # fmt: skip
    frozen = build_student(teacher, DistillConfig(
        num_layers=1, budget_layers=2, hidden_size=48, init_from_teacher=False))  # fmt: skip
    assert not frozen.get_input_embeddings().weight.requires_grad
    with pytest.raises(ValueError, match="narrower"):
        own_embedding(source, 16, 0)


def test_the_plateau_rule_stops_when_the_smoothed_loss_flattens() -> None:
    from specrepro.training.distill import plateaued

    assert not plateaued([5.0, 4.0, 3.0], 2, 0.02)  # too short to compare two windows
    assert not plateaued([8.0, 7.0, 4.0, 3.0], 2, 0.02)  # 7.5 -> 3.5: still falling
    assert plateaued([3.0, 3.1, 3.05, 3.02], 2, 0.02)  # 3.05 -> 3.035: flat
    assert plateaued([3.0, 3.0, 3.5, 3.5], 2, 0.02)  # rising counts as flat
    teacher = tiny_llama(vocab_size=32, seed=0, layers=3)
    samples = _counting_samples()
    cfg = DistillConfig(num_layers=1, steps=400, batch_size=8, lr=3e-3, seed=0,
                        plateau_window=10, plateau_tol=0.02, min_steps=20)  # fmt: skip
    log = train_student(build_student(teacher, cfg), samples, cfg, pad=0)
    assert log[-1]["stop"] == "plateau" and log[-1]["step"] < 400
    assert "holdout_loss" in log[-1] and log[-1]["holdout_loss"] < log[0]["holdout_loss"]
    assert all("smoothed_loss" in e for e in log[1:])
    capped = DistillConfig(num_layers=1, steps=15, batch_size=8, lr=3e-3, seed=0,
                           plateau_window=10, min_steps=20)  # fmt: skip
    log = train_student(build_student(teacher, capped), samples, capped, pad=0)
    assert log[-1]["stop"] == "cap" and log[-1]["step"] == 15


def test_training_batches_can_cut_context_and_sample_loss_positions() -> None:
    import random

    from specrepro.training.distill import _batch, trimmed

    sample = _counting_samples()[0]  # 3 prompt tokens, 17 response tokens
    short = trimmed(sample, 2)
    assert short.n_prompt == 2 and short.ids == sample.ids[1:]
    assert trimmed(sample, 10) is sample
    full = _batch([sample], pad=0)
    assert int(full.loss_mask.sum()) == 17 and full.top_ids.shape[0] == 17
    some = _batch([sample], pad=0, positions=5, rng=random.Random(0))
    assert int(some.loss_mask.sum()) == 5 and some.top_ids.shape[0] == 5
    # each kept position is paired with the teacher's target for the token after it
    positions = some.loss_mask[0].nonzero().flatten().tolist()
    for row, position in enumerate(positions):
        assert int(some.top_ids[row, 0]) == sample.ids[position + 1]
    # nothing after the token the last loss position predicts (the perplexity reads it)
    assert some.ids.shape[1] == positions[-1] + 2


def _counting_samples() -> list[Sample]:
    samples = []
    for start in range(40):
        seq = [(start + i) % 7 + 3 for i in range(20)]
        nxt = torch.tensor(seq[3:])
        top_ids = torch.stack([nxt, (nxt + 1) % 32], dim=-1)
        top_logp = torch.log(torch.tensor([0.9, 0.1])).expand(len(nxt), 2)
        samples.append(Sample(seq, 3, top_ids, top_logp))
    return samples
