"""Building a draft model by distillation from its target, on the target's own generations.

The student shares the teacher's tokenizer and (frozen, tied) embedding / lm_head; its decoder
layers start from the teacher's first layers. It learns from the teacher corpus
(models/teacher.py): the teacher's top-k next-token distribution at every generated position,
soft targets that carry far more signal per token than the sampled tokens alone (a few thousand
tokens overfit otherwise).
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from specrepro.models.artifact import publish_model_dir
from specrepro.models.schedule import optimizer_step, split_holdout, warmup_cosine
from specrepro.models.teacher import Sample


@dataclass
class DistillConfig:
    num_layers: int
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
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


def build_student(teacher: PreTrainedModel, cfg: DistillConfig) -> PreTrainedModel:
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = cfg.num_layers
    changed_shape = False
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"):
        value = getattr(cfg, key)
        if value is not None and value != getattr(config, key):
            setattr(config, key, value)
            changed_shape = True
    if changed_shape and config.hidden_size != teacher.config.hidden_size:
        raise ValueError("a student with another hidden size cannot share the teacher's embedding")
    if getattr(config, "head_dim", None) and config.hidden_size % config.num_attention_heads == 0:
        config.head_dim = config.hidden_size // config.num_attention_heads
    student = type(teacher)(config)
    state = teacher.state_dict()
    own = student.state_dict()
    shared = {}
    for key, value in state.items():
        is_layer = key.startswith("model.layers.")
        if is_layer and not (cfg.init_from_teacher and not changed_shape):
            continue
        if is_layer and int(key.split(".")[2]) >= cfg.num_layers:
            continue
        if key in own and own[key].shape == value.shape:
            shared[key] = value
    student.load_state_dict(shared, strict=False)
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


def _response_loss(student: PreTrainedModel, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy against the teacher's top-k distribution (renormalised), and the rate at
    which the student's argmax equals the teacher's (what greedy speculation accepts)."""
    hidden = student.model(input_ids=batch.ids, attention_mask=batch.attention).last_hidden_state
    # Project only the positions that carry loss: the lm_head is most of the cost.
    logits = student.lm_head(hidden[batch.loss_mask]).float()
    logq = torch.log_softmax(logits, dim=-1).gather(-1, batch.top_ids)
    p = torch.softmax(batch.top_logp, dim=-1)
    loss = -(p * logq).sum(-1).mean()
    agree = (logits.argmax(-1) == batch.top_ids[:, 0]).float().mean()
    return loss, agree


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
        loss, agree = _response_loss(student, _batch(batch, pad))
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
    losses, agrees, counts = [], [], []
    for i in range(0, len(holdout), 8):
        batch = _batch(holdout[i : i + 8], pad)
        loss, agree = _response_loss(student, batch)
        n = int(batch.loss_mask.sum())
        losses.append(loss.item() * n)
        agrees.append(agree.item() * n)
        counts.append(n)
    total = max(sum(counts), 1)
    return {"holdout_loss": sum(losses) / total, "holdout_agreement": sum(agrees) / total}


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
    student = build_student(teacher, cfg)
    t1 = time.perf_counter()
    log = train_student(student, samples, cfg, pad)
    summary = {
        "config": asdict(cfg),
        "corpus": corpus_summary,
        "training_seconds": time.perf_counter() - t1,
        "student_parameters": sum(p.numel() for p in student.parameters()),
        "trainable_parameters": sum(p.numel() for p in student.parameters() if p.requires_grad),
        "log": log,
    }

    def save(folder: Path) -> None:
        student.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return publish_model_dir(out_dir, save, summary)
