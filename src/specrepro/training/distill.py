"""Building a draft model by distillation from its target, on the target's own generations.

The student shares the teacher's tokenizer. At the teacher's hidden size it shares its frozen
embedding / lm_head; at another hidden size (the wide family, training/family.py) it has its own,
started as an isometric image of the teacher's (E P, P a seeded semi-orthogonal matrix: every
inner product of the teacher's embedding kept) and trained with it when `train_embeddings`.
Its decoder layers start from the teacher's first layers (`init_from_teacher`, the pair's own
draft) or from the model's random initialisation, the same start for every member of a study
family whatever its shape. It learns from the teacher corpus (training/teacher.py): the
teacher's top-k next-token distribution at every generated position, soft targets that carry far
more signal per token than the sampled tokens alone (a few thousand tokens overfit otherwise).

Training runs `steps` updates (warm-up and cosine decay), or with `plateau_window` until the
loss curve flattens: a warm-up then a constant learning rate, stopping at the first check where
the mean training loss of the last window improved on the window before by less than
`plateau_tol` (relative), after `min_steps`, with `steps` as the cap.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from specrepro.models.artifact import publish_model_dir
from specrepro.models.loader import add_legacy_rope_keys
from specrepro.training.family import Shape, equal_size_shape, family_budget, widened
from specrepro.training.on_policy import rollouts
from specrepro.training.schedule import optimizer_step, split_holdout, warmup_cosine
from specrepro.training.teacher import Sample


@dataclass
class DistillConfig:
    num_layers: int
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    # Set: the widths are solved so that the draft's non-embedding parameters equal this many
    # of the teacher's layers (training/family.py); the explicit widths above must then be unset.
    budget_layers: int | None = None
    init_from_teacher: bool = True
    # Own embedding (hidden size other than the teacher's): trained, or kept at its start.
    train_embeddings: bool = False
    steps: int = 200  # the number of updates, or the cap with plateau_window
    batch_size: int = 8
    lr: float = 5e-4
    seed: int = 0
    holdout_fraction: float = 0.1
    # The stopping rule: None trains `steps` updates (cosine schedule).
    plateau_window: int | None = None
    plateau_tol: float = 0.02
    min_steps: int = 0
    # Training cost on CPU: prompt tokens kept before each response (None: all), and the
    # response positions per sequence that carry loss (None: all), drawn at random each step.
    context_tokens: int | None = None
    loss_positions: int | None = None
    eval_every: int | None = None  # held-out evaluation every this many steps (default: 5 times)
    # On-policy distillation (training/on_policy.py): this share of every batch is the
    # student's own rollouts of `rollout_tokens` tokens, labelled by the teacher.
    on_policy_fraction: float = 0.0
    rollout_tokens: int = 32

    @classmethod
    def from_config(cls, entry: dict) -> DistillConfig:
        values = {k: v for k, v in entry.items() if k != "teacher"}
        return cls(**values)


WIDTHS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")


def student_shape(teacher_config: object, cfg: DistillConfig) -> Shape:
    base = Shape.of(teacher_config)
    explicit = {key: getattr(cfg, key) for key in WIDTHS if getattr(cfg, key) is not None}
    hidden = explicit.get("hidden_size", base.hidden_size)
    if hidden != base.hidden_size and cfg.init_from_teacher:
        raise ValueError(
            f"a draft of hidden size {hidden} cannot start from the teacher's {base.hidden_size}-"
            "wide layers (set init_from_teacher: false)"
        )
    if cfg.budget_layers is None:
        return replace(widened(base, hidden), num_layers=cfg.num_layers, **explicit)
    others = sorted(k for k in explicit if k != "hidden_size")
    if others:
        raise ValueError(f"budget_layers solves the widths; do not also set {others}")
    budget = family_budget(base, cfg.budget_layers)
    return equal_size_shape(widened(base, hidden), cfg.num_layers, budget)


def own_embedding(teacher_weight: torch.Tensor, hidden_size: int, seed: int) -> torch.Tensor:
    """The teacher's embedding [vocab, H] mapped into `hidden_size` > H dimensions by a seeded
    semi-orthogonal P (P P^T = I): the rows' inner products, hence the teacher's logits for
    any hidden state in P's row space, are kept."""
    width = teacher_weight.shape[1]
    if hidden_size < width:
        raise ValueError(f"an own embedding narrower ({hidden_size}) than the teacher's ({width})")
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(hidden_size, width, generator=generator))
    return teacher_weight.float() @ q.T  # q: [hidden, width], orthonormal columns


def build_student(teacher: PreTrainedModel, cfg: DistillConfig) -> PreTrainedModel:
    """A student of `student_shape`: at the teacher's hidden size sharing its frozen embedding
    and lm_head, at another with its own (`own_embedding`, trained with `train_embeddings`).

    With init_from_teacher, layer i starts from the teacher's layer i cut to the student's
    widths (its first heads and feed-forward units: structured pruning); units beyond the
    teacher's widths start with zero output weights, so the student starts as that pruned
    stack whatever its shape. Without it every layer keeps the model's random initialisation
    (seeded by `seed`): the same start for every shape.
    """
    config = copy.deepcopy(teacher.config)
    shape = student_shape(teacher.config, cfg)
    for key, value in shape.config_overrides().items():
        setattr(config, key, value)
    torch.manual_seed(cfg.seed)
    student = type(teacher)(config)
    if shape.hidden_size != teacher.config.hidden_size:
        return _own_embedding_student(teacher, student, shape, cfg)
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


def _own_embedding_student(
    teacher: PreTrainedModel, student: PreTrainedModel, shape: Shape, cfg: DistillConfig
) -> PreTrainedModel:
    """A wider student's own embedding and LM head (the teacher's mapped by `own_embedding`,
    tied when the teacher's are); its layers and final norm keep their initialisation."""
    with torch.no_grad():
        embed = own_embedding(teacher.get_input_embeddings().weight, shape.hidden_size, cfg.seed)
        student.get_input_embeddings().weight.copy_(embed)
        head = student.get_output_embeddings()
        if head.weight is not student.get_input_embeddings().weight:
            source = teacher.get_output_embeddings().weight
            head.weight.copy_(own_embedding(source, shape.hidden_size, cfg.seed))
    for module in (student.get_input_embeddings(), student.get_output_embeddings()):
        module.weight.requires_grad_(cfg.train_embeddings)
    return student


@dataclass
class Batch:
    ids: torch.Tensor
    attention: torch.Tensor
    loss_mask: torch.Tensor  # position t carries loss when token t+1 is a response token
    top_ids: torch.Tensor  # [positions with loss, k], in the row-major order of loss_mask
    top_logp: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(*(getattr(self, f.name).to(device) for f in fields(self)))


def trimmed(sample: Sample, context_tokens: int | None) -> Sample:
    """The sample with its prompt cut to its last `context_tokens` tokens (at least one)."""
    if context_tokens is None or sample.n_prompt <= context_tokens:
        return sample
    keep = max(1, context_tokens)
    return replace(sample, ids=sample.ids[sample.n_prompt - keep :], n_prompt=keep, features=None)


def _batch(
    samples: list[Sample],
    pad: int,
    positions: int | None = None,
    rng: random.Random | None = None,
) -> Batch:
    """Right-padded ids with the loss mask and the teacher's targets in its order; with
    `positions`, only that many response positions per sequence (drawn by `rng`) carry loss."""
    picks = []
    for s in samples:
        n = len(s.ids) - s.n_prompt
        if positions is None or n <= positions:
            picks.append(list(range(n)))
        else:
            picks.append(sorted((rng or random.Random(0)).sample(range(n), positions)))
    # Positions after a row's last loss position change nothing (causal): they are cut.
    width = max(s.n_prompt + (p[-1] + 1 if p else 0) for s, p in zip(samples, picks, strict=True))
    ids = torch.full((len(samples), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    loss_mask = torch.zeros_like(ids, dtype=torch.bool)
    for row, (s, pick) in enumerate(zip(samples, picks, strict=True)):
        used = s.ids[:width]
        ids[row, : len(used)] = torch.tensor(used)
        attn[row, : len(used)] = 1
        loss_mask[row, [s.n_prompt - 1 + j for j in pick]] = True
    return Batch(
        ids,
        attn,
        loss_mask,
        torch.cat([s.top_ids[pick] for s, pick in zip(samples, picks, strict=True)]),
        torch.cat([s.top_logp[pick] for s, pick in zip(samples, picks, strict=True)]),
    )


def _response_loss(
    student: PreTrainedModel, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy against the teacher's top-k distribution (renormalised); the rate at
    which the student's argmax equals the teacher's (what greedy speculation accepts); and the
    mean negative log-likelihood of the tokens the teacher generated (for perplexity)."""
    # Batches are built on the host; the student sits on the job's device.
    batch = batch.to(student.lm_head.weight.device)
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


def warmup_constant(lr: float, steps: int) -> Callable[[int], float]:
    """Linear warm-up over the first 5% of the cap, then constant (a stopping rule decides)."""
    warmup = max(1, steps // 20)
    return lambda step: lr * min(1.0, (step + 1) / warmup)


def plateaued(losses: list[float], window: int, tol: float) -> bool:
    """Has the smoothed loss flattened? The mean of the last `window` losses improved on the
    mean of the `window` before it by less than `tol` (relative)."""
    if len(losses) < 2 * window:
        return False
    last = sum(losses[-window:]) / window
    before = sum(losses[-2 * window : -window]) / window
    return (before - last) < tol * abs(before)


def train_student(
    student: PreTrainedModel,
    samples: list[Sample],
    cfg: DistillConfig,
    pad: int,
    teacher: PreTrainedModel | None = None,
    eos: int | None = None,
) -> list[dict]:
    """One entry per update (loss, smoothed loss, agreement, learning rate), the held-out
    figures at step 0, every `eval_every` steps and at the end; the last entry says why it
    stopped (`stop`: "plateau" or "cap"). With `on_policy_fraction`, the `teacher` labels the
    student's rollouts (which stop at `eos`)."""
    on_policy = round(cfg.batch_size * cfg.on_policy_fraction)
    if on_policy and teacher is None:
        raise ValueError("on_policy_fraction > 0 needs the teacher to label the rollouts")
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    holdout, train = split_holdout(samples, cfg.holdout_fraction, rng)
    train = [trimmed(s, cfg.context_tokens) for s in train]
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rule = cfg.plateau_window is not None
    lr_at = (warmup_constant if rule else warmup_cosine)(cfg.lr, cfg.steps)
    eval_every = cfg.eval_every or max(1, cfg.steps // 5)
    smooth = cfg.plateau_window or max(1, cfg.steps // 20)

    log: list[dict] = [{"step": 0, **_evaluate(student, holdout, pad)}]
    losses: list[float] = []
    student.train()
    bar = tqdm(range(cfg.steps), desc="distilling draft")
    stop = "cap"
    for step in bar:
        batch = [train[rng.randrange(len(train))] for _ in range(cfg.batch_size)]
        if on_policy:
            top_k = batch[0].top_ids.shape[1]
            rolled = rollouts(
                student, teacher, batch[:on_policy], cfg.rollout_tokens, top_k, pad, eos
            )
            batch = rolled + batch[on_policy:]
        loss, agree, _ = _response_loss(student, _batch(batch, pad, cfg.loss_positions, rng))
        optimizer_step(opt, params, loss, lr_at(step))
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}", agree=f"{agree.item():.2f}")
        entry = {
            "step": step + 1,
            "loss": loss.item(),
            "smoothed_loss": sum(losses[-smooth:]) / len(losses[-smooth:]),
            "train_agreement": agree.item(),
            "lr": lr_at(step),
        }
        done = step + 1 == cfg.steps
        if rule and (step + 1) >= cfg.min_steps and (step + 1) % smooth == 0:
            if plateaued(losses, smooth, cfg.plateau_tol):
                done, stop = True, "plateau"
        if (step + 1) % eval_every == 0 or done:
            student.eval()
            entry.update(_evaluate(student, holdout, pad))
            student.train()
        log.append(entry)
        if done:
            break
    log[-1]["stop"] = stop
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
    log = train_student(student, samples, cfg, pad, teacher, tokenizer.eos_token_id)
    summary = {
        "config": asdict(cfg),
        "shape": shape.as_dict(),
        "counted_parameters": shape.counted_parameters(),
        "holdout": {k: v for k, v in log[-1].items() if k.startswith("holdout_")},
        "steps_run": log[-1]["step"],
        "stop": log[-1].get("stop", "cap"),
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
