"""Building a draft model by distillation from its target, on the target's own generations.

The student shares the teacher's tokenizer and (frozen, tied) embedding / lm_head; its decoder
layers start from the teacher's first layers. The teacher generates continuations of training
prompts (never the evaluated questions) and keeps its top-k next-token distribution at every
generated position; the student is trained on those soft targets, which carry far more signal
per token than the sampled tokens alone (a few thousand tokens overfit otherwise).
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from specrepro.prompting import conversation as messages
from specrepro.prompting import encode


@dataclass
class DistillConfig:
    num_layers: int
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    init_from_teacher: bool = True
    train_prompts: int = 128
    gen_tokens: int = 128
    gen_temperature: float = 0.7
    steps: int = 200
    batch_size: int = 8
    lr: float = 5e-4
    seed: int = 0
    max_seq_len: int = 512
    gen_batch_size: int = 8
    holdout_fraction: float = 0.1
    top_k: int = 32

    @classmethod
    def from_config(cls, entry: dict) -> DistillConfig:
        values = {k: v for k, v in entry.items() if k != "teacher"}
        return cls(**values)


@dataclass
class Sample:
    """One teacher generation: prompt + response ids, and the teacher's top-k distribution for
    every response token (log-probabilities at temperature 1)."""

    ids: list[int]
    n_prompt: int
    top_ids: torch.Tensor  # [n_response, k]
    top_logp: torch.Tensor  # [n_response, k]


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


@torch.inference_mode()
def teacher_generations(
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[dict],
    cfg: DistillConfig,
    conversation: str,
) -> list[Sample]:
    """One Sample per prompt; the teacher samples the continuation."""
    torch.manual_seed(cfg.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [encode(tokenizer, messages(p, 0, []), conversation) for p in prompts]
    keep_prompt = cfg.max_seq_len - cfg.gen_tokens
    encoded = [ids[-keep_prompt:] for ids in encoded]
    out: list[Sample] = []
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # less padding per batch
    batches = [order[i : i + cfg.gen_batch_size] for i in range(0, len(order), cfg.gen_batch_size)]
    for batch in tqdm(batches, desc="teacher generations"):
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]) :] = 1
        gen = teacher.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=cfg.gen_tokens,
            do_sample=cfg.gen_temperature > 0,
            temperature=cfg.gen_temperature if cfg.gen_temperature > 0 else None,
            top_k=None,
            top_p=None,
            pad_token_id=pad,
            output_logits=True,
            return_dict_in_generate=True,
        )
        logp = torch.log_softmax(torch.stack(gen.logits, dim=1).float(), dim=-1)  # [B, steps, V]
        top_logp, top_ids = logp.topk(cfg.top_k, dim=-1)
        eos = {tokenizer.eos_token_id, pad}
        for row, i in enumerate(batch):
            response = gen.sequences[row, width:].tolist()
            cut = next((j + 1 for j, t in enumerate(response) if t in eos), len(response))
            out.append(
                Sample(
                    ids=encoded[i] + response[:cut],
                    n_prompt=len(encoded[i]),
                    top_ids=top_ids[row, :cut].clone(),
                    top_logp=top_logp[row, :cut].clone(),
                )
            )
    return out


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
    samples = samples[:]
    rng.shuffle(samples)
    n_hold = max(1, int(len(samples) * cfg.holdout_fraction))
    holdout, train = samples[:n_hold], samples[n_hold:]
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    warmup = max(1, cfg.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.steps - warmup)))

    log: list[dict] = [{"step": 0, **_evaluate(student, holdout, pad)}]
    student.train()
    bar = tqdm(range(cfg.steps), desc="distilling draft")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        batch = [train[rng.randrange(len(train))] for _ in range(cfg.batch_size)]
        loss, agree = _response_loss(student, _batch(batch, pad))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
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
    prompts: list[dict],
    cfg: DistillConfig,
    out_dir: Path,
    conversation: str,
) -> Path:
    """Generate, train, save the student with tokenizer and a training log; returns out_dir."""
    t0 = time.perf_counter()
    samples = teacher_generations(teacher, tokenizer, prompts, cfg, conversation)
    gen_time = time.perf_counter() - t0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    student = build_student(teacher, cfg)
    t1 = time.perf_counter()
    log = train_student(student, samples, cfg, pad)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    student.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    summary = {
        "config": asdict(cfg),
        "n_prompts": len(prompts),
        "n_sequences": len(samples),
        "response_tokens": sum(len(s.ids) - s.n_prompt for s in samples),
        "generation_seconds": gen_time,
        "training_seconds": time.perf_counter() - t1,
        "student_parameters": sum(p.numel() for p in student.parameters()),
        "trainable_parameters": sum(p.numel() for p in student.parameters() if p.requires_grad),
        "prompt_ids": [p["question_id"] for p in prompts],
        "log": log,
    }
    (tmp / "training_log.json").write_text(json.dumps(summary, indent=1))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
