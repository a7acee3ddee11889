"""Building a draft model by distillation from its target, on the target's own generations.

The student shares the teacher's tokenizer and (frozen, tied) embedding / lm_head; its decoder
layers start from the teacher's first layers. It learns from the teacher corpus
(models/teacher.py): the teacher's top-k next-token distribution at every generated position,
soft targets that carry far more signal per token than the sampled tokens alone (a few thousand
tokens overfit otherwise).
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from specrepro.models.artifact import publish_model_dir
from specrepro.models.family import Shape, equal_size_shape
from specrepro.models.loader import add_legacy_rope_keys
from specrepro.models.schedule import optimizer_step, split_holdout, warmup_cosine
from specrepro.models.teacher import Sample


@dataclass
class DistillConfig:
    num_layers: int
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    # Set: the widths are solved so that the draft's non-embedding parameters equal this many
    # of the teacher's layers (models/family.py); the explicit widths above must then be unset.
    budget_layers: int | None = None
    init_from_teacher: bool = True
    steps: int = 200
    batch_size: int = 8
    lr: float = 5e-4
    seed: int = 0
    holdout_fraction: float = 0.1

    @classmethod
    def from_config(cls, entry: dict) -> DistillConfig:
        values = {k: v for k, v in entry.items() if k != "teacher"}
        return cls(**values)


WIDTHS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")


def student_shape(teacher_config: object, cfg: DistillConfig) -> Shape:
    base = Shape.of(teacher_config)
    explicit = {key: getattr(cfg, key) for key in WIDTHS if getattr(cfg, key) is not None}
    if explicit.get("hidden_size", base.hidden_size) != base.hidden_size:
        raise ValueError(
            f"a draft of hidden size {explicit['hidden_size']} cannot share the teacher's "
            f"{base.hidden_size}-wide embedding and lm_head"
        )
    if cfg.budget_layers is None:
        return replace(base, num_layers=cfg.num_layers, **explicit)
    if explicit:
        raise ValueError(f"budget_layers solves the widths; do not also set {sorted(explicit)}")
    budget = replace(base, num_layers=cfg.budget_layers).counted_parameters()
    return equal_size_shape(base, cfg.num_layers, budget)


def build_student(teacher: PreTrainedModel, cfg: DistillConfig) -> PreTrainedModel:
    """A student of `student_shape`, sharing the teacher's frozen embedding and lm_head.

    With init_from_teacher, layer i starts from the teacher's layer i cut to the student's
    widths (its first heads and feed-forward units: structured pruning); units beyond the
    teacher's widths start with zero output weights, so the student starts as that pruned
    stack whatever its shape.
    """
    config = copy.deepcopy(teacher.config)
    for key, value in student_shape(teacher.config, cfg).config_overrides().items():
        setattr(config, key, value)
    student = type(teacher)(config)
    teacher_state = teacher.state_dict()
    state = student.state_dict()
    for key, value in state.items():
        source = teacher_state.get(key)
        if source is None or source.dim() != value.dim():
            continue
        if key.startswith("model.layers.") and not cfg.init_from_teacher:
            continue
        block = tuple(slice(0, min(a, b)) for a, b in zip(value.shape, source.shape, strict=True))
        value[block] = source[block]
        if key.endswith(("o_proj.weight", "down_proj.weight")):
            value[:, source.shape[1] :] = 0
    student.load_state_dict(state)
    student.get_input_embeddings().weight.requires_grad_(False)
    student.get_output_embeddings().weight.requires_grad_(False)
    return student


@dataclass
class Batch:
    ids: torch.Tensor
    attention: torch.Tensor
    loss_mask: torch.Tensor  # position t carries loss when token t+1 is a response token
    top_ids: torch.Tensor  # [positions with loss, k], in the row-major order of loss_mask
    top_logp: torch.Tensor


def _batch(samples: list[Sample], pad: int) -> Batch:
    width = max(len(s.ids) for s in samples)
    ids = torch.full((len(samples), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    loss_mask = torch.zeros_like(ids, dtype=torch.bool)
    for row, s in enumerate(samples):
        ids[row, : len(s.ids)] = torch.tensor(s.ids)
        attn[row, : len(s.ids)] = 1
        loss_mask[row, s.n_prompt - 1 : len(s.ids) - 1] = True
    return Batch(
        ids,
        attn,
        loss_mask,
        torch.cat([s.top_ids for s in samples]),
        torch.cat([s.top_logp for s in samples]),
    )


def _response_loss(
    student: PreTrainedModel, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy against the teacher's top-k distribution (renormalised); the rate at
    which the student's argmax equals the teacher's (what greedy speculation accepts); and the
    mean negative log-likelihood of the tokens the teacher generated (for perplexity)."""
    hidden = student.model(input_ids=batch.ids, attention_mask=batch.attention).last_hidden_state
    # Project only the positions that carry loss: the lm_head is most of the cost.
    logits = student.lm_head(hidden[batch.loss_mask]).float()
    log_probs = torch.log_softmax(logits, dim=-1)
    logq = log_probs.gather(-1, batch.top_ids)
    p = torch.softmax(batch.top_logp, dim=-1)
    loss = -(p * logq).sum(-1).mean()
    agree = (logits.argmax(-1) == batch.top_ids[:, 0]).float().mean()
    # A position with loss is never a row's last, so the roll never wraps into it.
    generated = batch.ids.roll(-1, dims=1)[batch.loss_mask]
    nll = -log_probs.gather(-1, generated[:, None]).mean()
    return loss, agree, nll


def train_student(
    student: PreTrainedModel, samples: list[Sample], cfg: DistillConfig, pad: int
) -> list[dict]:
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    holdout, train = split_holdout(samples, cfg.holdout_fraction, rng)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    lr_at = warmup_cosine(cfg.lr, cfg.steps)

    log: list[dict] = [{"step": 0, **_evaluate(student, holdout, pad)}]
    student.train()
    bar = tqdm(range(cfg.steps), desc="distilling draft")
    for step in bar:
        batch = [train[rng.randrange(len(train))] for _ in range(cfg.batch_size)]
        loss, agree, _ = _response_loss(student, _batch(batch, pad))
        optimizer_step(opt, params, loss, lr_at(step))
        bar.set_postfix(loss=f"{loss.item():.3f}", agree=f"{agree.item():.2f}")
        entry = {
            "step": step + 1,
            "loss": loss.item(),
            "train_agreement": agree.item(),
            "lr": lr_at(step),
        }
        if (step + 1) % max(1, cfg.steps // 5) == 0 or step + 1 == cfg.steps:
            student.eval()
            entry.update(_evaluate(student, holdout, pad))
            student.train()
        log.append(entry)
    student.eval()
    return log


@torch.no_grad()
def _evaluate(student: PreTrainedModel, holdout: list[Sample], pad: int) -> dict:
    """Held-out loss, agreement with the teacher's argmax, and perplexity on the teacher's own
    generations (the draft's language-modelling quality on the target's distribution)."""
    sums = {"holdout_loss": 0.0, "holdout_agreement": 0.0, "nll": 0.0}
    total = 0
    for i in range(0, len(holdout), 8):
        batch = _batch(holdout[i : i + 8], pad)
        n = int(batch.loss_mask.sum())
        for key, value in zip(sums, _response_loss(student, batch), strict=True):
            sums[key] += value.item() * n
        total += n
    total = max(total, 1)
    return {
        "holdout_loss": sums["holdout_loss"] / total,
        "holdout_agreement": sums["holdout_agreement"] / total,
        "holdout_perplexity": math.exp(sums["nll"] / total),
    }


def draft_quality(
    draft: PreTrainedModel, samples: list[Sample], pad: int, seed: int = 0, fraction: float = 0.1
) -> dict:
    """A draft's held-out loss, agreement with its target and perplexity on the target's
    generations, on the holdout split training uses with the same seed and fraction (so a DAG-built
    draft is scored on text it never saw), with its shape and counted size."""
    holdout, _ = split_holdout(samples, fraction, random.Random(seed))
    shape = Shape.of(draft.config)
    return {
        **_evaluate(draft.eval(), holdout, pad),
        "holdout_samples": len(holdout),
        "shape": shape.as_dict(),
        "counted_parameters": shape.counted_parameters(),
    }


def distill(
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    samples: list[Sample],
    cfg: DistillConfig,
    out_dir: Path,
    corpus_summary: dict,
) -> Path:
    """Train on the teacher corpus, save the student with tokenizer and a training log."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    shape = student_shape(teacher.config, cfg)
    student = build_student(teacher, cfg)
    t1 = time.perf_counter()
    log = train_student(student, samples, cfg, pad)
    summary = {
        "config": asdict(cfg),
        "shape": shape.as_dict(),
        "counted_parameters": shape.counted_parameters(),
        "holdout": {k: v for k, v in log[-1].items() if k.startswith("holdout_")},
        "corpus": corpus_summary,
        "training_seconds": time.perf_counter() - t1,
        "student_parameters": sum(p.numel() for p in student.parameters()),
        "trainable_parameters": sum(p.numel() for p in student.parameters() if p.requires_grad),
        "log": log,
    }

    def save(folder: Path) -> None:
        student.save_pretrained(folder)
        add_legacy_rope_keys(folder)
        tokenizer.save_pretrained(folder)

    return publish_model_dir(out_dir, save, summary)
