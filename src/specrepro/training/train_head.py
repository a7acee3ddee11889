"""Training an EAGLE head on the target's own generations (self-distillation; docs/methods.md).

The head reads (embed(x_{t+1}), f_t + noise) and is trained to predict the target's next
feature f_{t+1}: SmoothL1 on the feature (weight 1.0) plus cross-entropy through the frozen
lm_head against the target's next-token distribution (weight 0.1), the top-k log-probs the
teacher corpus stored for that token (renormalised over the k, as a draft learns them), so the
target's distribution costs no second lm_head pass. Uniform noise on the input features teaches
the head to continue from its own imperfect features, as it must when it drafts several levels.
The target's embedding and lm_head stay frozen.

An EAGLE-3 head (`format: eagle3`, models/eagle3_head.py) reads the target's fused layers in
place of f_t and has no feature target: it learns from the token loss alone, through its own
norm and lm_head over its draft vocabulary, unrolled on its own outputs as above.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from specrepro.models.artifact import publish_model_dir
from specrepro.models.eagle3_head import (
    Eagle3Head,
    build_eagle3_head,
    eagle3_config_for,
    save_eagle3_head,
)
from specrepro.models.eagle_head import EagleHead, build_head, head_config_for, save_head
from specrepro.training.head_unroll import unrolled_features
from specrepro.training.schedule import optimizer_step, split_holdout, warmup_cosine
from specrepro.training.teacher import Sample, fused_layer_samples

AnyHead = EagleHead | Eagle3Head

# Held-out agreement is reported k = 1..AHEAD tokens ahead at the end of training (the CPU
# trees draft 5-7 levels deep).
AHEAD = 6


@dataclass
class HeadTrainConfig:
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    feature_weight: float = 1.0
    token_weight: float = 0.1
    # The target's input features get uniform noise in [-noise/2, noise/2] (EAGLE's recipe:
    # the head learns to continue from features that are not exactly the target's).
    noise: float = 0.2
    # Steps unrolled on the head's own predicted features, the loss at every one (EAGLE-3's
    # training-time test; 1: teacher-forced features only).
    unroll_steps: int = 1
    holdout_fraction: float = 0.1
    seed: int = 0
    # Training cost on CPU grows with every position: prompt tokens kept before each training
    # response (None: all). The held-out figures always see the whole sample.
    context_tokens: int | None = None
    # "eagle": an EAGLE-1/2 head (models/eagle_head.py); "eagle3": an EAGLE-3 head
    # (models/eagle3_head.py), token loss only (feature_weight unused: its output is not a
    # target feature), over the target's fused layers recomputed from the corpus's tokens.
    format: str = "eagle"

    @classmethod
    def from_config(cls, entry: dict) -> HeadTrainConfig:
        return cls(**{k: v for k, v in entry.items() if k != "teacher"})


@dataclass
class _Batch:
    ids: torch.Tensor  # [B, W]
    features: torch.Tensor  # [B, W, H]
    valid: torch.Tensor  # [B, W - 1] position t predicts f_{t+1} of a real token
    response: torch.Tensor  # [B, W - 1] ... and x_{t+2} is a generated token
    top_ids: torch.Tensor  # [response positions, k] the target's top-k for x_{t+2}, in the
    top_logp: torch.Tensor  # row-major order of `response`


def _batch(samples: list[Sample], device: torch.device) -> _Batch:
    width = max(len(s.ids) for s in samples)
    hidden = samples[0].features.shape[-1]
    ids = torch.zeros(len(samples), width, dtype=torch.long)
    feats = torch.zeros(len(samples), width, hidden)
    valid = torch.zeros(len(samples), width - 1, dtype=torch.bool)
    response = torch.zeros_like(valid)
    top_ids, top_logp = [], []
    for row, s in enumerate(samples):
        n = len(s.ids)
        ids[row, :n] = torch.tensor(s.ids)
        feats[row, :n] = s.features.float()
        valid[row, : n - 1] = True
        # Prediction at t gives the distribution of x_{t+2}; keep those inside the response.
        # Response token j is x_{n_prompt + j}, so t holds the corpus's top-k row t + 2 - n_prompt
        # (a one-token prompt has no t for j = 0: the head needs f_t and x_{t+1} to start).
        first = max(s.n_prompt - 2, 0)
        response[row, first : n - 2] = True
        top_ids.append(s.top_ids[first + 2 - s.n_prompt :])
        top_logp.append(s.top_logp[first + 2 - s.n_prompt :])
    return _Batch(
        ids.to(device),
        feats.to(device),
        valid.to(device),
        response.to(device),
        torch.cat(top_ids).to(device),
        torch.cat(top_logp).float().to(device),
    )


def trimmed(sample: Sample, context_tokens: int | None) -> Sample:
    """The sample with its prompt cut to its last `context_tokens` tokens (at least two, so
    that the first response token keeps a position predicting it), features cut alike."""
    if context_tokens is None or sample.n_prompt <= max(2, context_tokens):
        return sample
    cut = sample.n_prompt - max(2, context_tokens)
    return replace(
        sample, ids=sample.ids[cut:], n_prompt=sample.n_prompt - cut, features=sample.features[cut:]
    )


def _losses(head: AnyHead, batch: _Batch, noise: float, steps: int = 1) -> dict:
    """Feature (EAGLE-1/2 heads only) and token losses averaged over `steps` unrolled steps
    (training/head_unroll.py: step j drafts from the head's own features of the j steps
    before), with top-1 / top-3 agreement at step 0 and the top-1 agreement at every step
    (`top1_ahead`, k = j + 1)."""
    predicted = unrolled_features(head, batch.ids, batch.features, steps, noise)
    wanted = batch.features[:, 1:]
    regress = isinstance(head, EagleHead)
    feature_losses, token_losses, ahead, counts = [], [], [], []
    for step, features in enumerate(predicted):
        # Step j at t is the chain anchored at t - j: no chain before position j.
        reach = batch.valid.clone()
        reach[:, :step] = False
        scored = batch.response.clone()
        scored[:, :step] = False
        rows = scored[batch.response]  # the corpus's top-k rows of those positions
        if regress:
            feature_losses.append(F.smooth_l1_loss(features[reach], wanted[reach]))
        # The lm_head is most of the cost: project only the positions with a token loss, and
        # only the head's prediction (the target's distribution is the corpus's stored top-k).
        pred_logits = head.logits(features[scored].to(head.dtype)).float()
        top_ids = batch.top_ids[rows]
        token_losses.append(_token_loss(pred_logits, top_ids, batch.top_logp[rows]))
        target_top1 = top_ids[:, 0]  # the target's argmax, as speculation accepts it
        top3 = pred_logits.topk(3, dim=-1).indices
        if step == 0:
            first = {
                "top1": (top3[:, 0] == target_top1).float().mean(),
                "top3": (top3 == target_top1[:, None]).any(-1).float().mean(),
                "n": torch.tensor(float(target_top1.numel())),
            }
        ahead.append((top3[:, 0] == target_top1).float().mean())
        counts.append(float(target_top1.numel()))
    zero = torch.zeros((), device=batch.ids.device)
    return {
        "feature_loss": torch.stack(feature_losses).mean() if feature_losses else zero,
        "token_loss": torch.stack(token_losses).mean(),
        **first,
        "top1_ahead": ahead,
        "n_ahead": counts,
    }


def _token_loss(
    logits: torch.Tensor, top_ids: torch.Tensor, top_logp: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the head's distribution against the target's top-k, renormalised over
    the k ids the head can propose (a head over a draft vocabulary gives -inf elsewhere, as the
    official EAGLE-3 trainer restricts the target's distribution to the draft vocabulary);
    positions whose top-k lies wholly outside it carry no loss."""
    logq = torch.log_softmax(logits, dim=-1).gather(-1, top_ids)
    proposable = torch.isfinite(logq)
    target_p = torch.softmax(top_logp.masked_fill(~proposable, float("-inf")), dim=-1)
    kept = proposable.any(-1)
    if not bool(kept.any()):
        return logits.sum() * 0.0
    per_row = -(target_p[kept] * logq[kept].masked_fill(~proposable[kept], 0.0)).sum(-1)
    return per_row.mean()


def train_head(
    head: AnyHead, samples: list[Sample], cfg: HeadTrainConfig, desc: str = "head"
) -> list[dict]:
    """Train in place; returns the log (losses per step, held-out agreement at checkpoints)."""
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    holdout, train = split_holdout(samples, cfg.holdout_fraction, rng)
    train = [trimmed(s, cfg.context_tokens) for s in train]
    device = head.fc.weight.device
    # The target's own modules stay frozen: its embedding, and an EAGLE-1/2 head's lm_head.
    shared = {"embed_tokens."} | ({"lm_head."} if isinstance(head, EagleHead) else set())
    params = []
    for name, param in head.named_parameters():
        if name.startswith(tuple(shared)):
            param.requires_grad_(False)
        else:
            params.append(param)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    lr_at = warmup_cosine(cfg.lr, cfg.steps)

    log: list[dict] = [{"step": 0, **evaluate_head(head, holdout)}] if holdout else []
    head.train()
    bar = tqdm(range(cfg.steps), desc=f"training {desc}")
    for step in bar:
        batch = _batch([train[rng.randrange(len(train))] for _ in range(cfg.batch_size)], device)
        losses = _losses(head, batch, cfg.noise, cfg.unroll_steps)
        loss = cfg.feature_weight * losses["feature_loss"] + cfg.token_weight * losses["token_loss"]
        optimizer_step(opt, params, loss, lr_at(step))
        bar.set_postfix(feat=f"{losses['feature_loss'].item():.3f}", top1=f"{losses['top1']:.2f}")
        entry = {
            "step": step + 1,
            "feature_loss": losses["feature_loss"].item(),
            "token_loss": losses["token_loss"].item(),
            "train_top1": losses["top1"].item(),
            "lr": lr_at(step),
        }
        if holdout and ((step + 1) % max(1, cfg.steps // 5) == 0 or step + 1 == cfg.steps):
            head.eval()
            # The last checkpoint also measures agreement k tokens ahead, k = 1..AHEAD.
            entry.update(evaluate_head(head, holdout, AHEAD if step + 1 == cfg.steps else 1))
            head.train()
        log.append(entry)
    head.eval()
    for p in params:
        p.requires_grad_(False)
    return log


@torch.no_grad()
def evaluate_head(head: AnyHead, samples: list[Sample], ahead: int = 1) -> dict:
    """Held-out feature loss, token loss and top-1 / top-3 agreement with the target's next
    token (without input noise, as the head runs when drafting its first level); with
    ahead > 1 also `holdout_top1_ahead`: the top-1 agreement k = 1..ahead tokens ahead, the
    head drafting from its own features (training/head_unroll.py), the losses then averaged over
    those steps."""
    device = head.fc.weight.device
    totals: dict[str, float] = {"feature_loss": 0.0, "token_loss": 0.0, "top1": 0.0, "top3": 0.0}
    count = 0.0
    hits, seen = [0.0] * ahead, [0.0] * ahead
    for i in range(0, len(samples), 8):
        losses = _losses(head, _batch(samples[i : i + 8], device), noise=0.0, steps=ahead)
        n = float(losses["n"])
        for key in totals:
            totals[key] += float(losses[key]) * n
        count += n
        for k, (rate, m) in enumerate(zip(losses["top1_ahead"], losses["n_ahead"], strict=True)):
            hits[k] += float(rate) * m
            seen[k] += m
    out = {f"holdout_{k}": v / max(count, 1.0) for k, v in totals.items()}
    if ahead > 1:
        out["holdout_top1_ahead"] = [h / max(m, 1.0) for h, m in zip(hits, seen, strict=True)]
    return out


def train_and_save(
    target: torch.nn.Module,
    samples: list[Sample],
    cfg: HeadTrainConfig,
    out_dir: Path,
    corpus_summary: dict,
    draft_vocab: torch.Tensor | None = None,
) -> Path:
    """A new head for `target`, trained on the corpus, saved in its published format with a
    training log beside it. An EAGLE-3 head drafts over `draft_vocab` (target ids; None: the
    whole vocabulary) and learns from the target's fused layers, recomputed here."""
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    if cfg.format == "eagle3":
        head = initial_eagle3_head(target, draft_vocab)
        samples = fused_layer_samples(target, samples, head.feature_layers)
        save = partial(save_eagle3_head, head)
    elif cfg.format == "eagle":
        head = build_head(head_config_for(target), target)
        save = partial(save_head, head)
    else:
        raise ValueError(f"heads: format must be 'eagle' or 'eagle3', got {cfg.format!r}")
    features_seconds = time.perf_counter() - t0
    log = train_head(head, samples, cfg, desc=out_dir.name)
    summary = {
        "config": asdict(cfg),
        "corpus": corpus_summary,
        "training_seconds": time.perf_counter() - t0,
        # An EAGLE-3 head's features are recomputed from the corpus (included above).
        "feature_seconds": features_seconds,
        "head_parameters": sum(v.numel() for v in head.head_state_dict().values()),
        "log": log,
    }
    return publish_model_dir(out_dir, save, summary)


def initial_eagle3_head(target: torch.nn.Module, draft_vocab: torch.Tensor | None) -> Eagle3Head:
    """An EAGLE-3 head for the target whose norm and lm_head start as the target's final norm
    and its lm_head rows of the draft vocabulary: its first prediction reads its output as the
    target reads its last hidden state."""
    vocab = int(target.get_output_embeddings().weight.shape[0])
    ids = torch.arange(vocab) if draft_vocab is None else draft_vocab
    head = build_eagle3_head(eagle3_config_for(target, int(ids.numel())), target, ids)
    with torch.no_grad():
        rows = target.get_output_embeddings().weight[ids.to(head.fc.weight.device)]
        head.lm_head.proj.weight.copy_(rows)
        final_norm = getattr(getattr(target, "model", None), "norm", None)
        if final_norm is not None:
            head.norm.weight.copy_(final_norm.weight)
    return head
