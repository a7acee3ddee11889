"""One teacher corpus per target, shared by every student (drafts, EAGLE heads).

The target runs once over the training prompts (never the evaluated questions) and continues
each; the corpus keeps what any student needs: the tokens, the target's top-k next-token
log-probs at every generated position (soft targets for a draft), and its final-norm hidden
states at every position (features for an EAGLE head). Stored as one torch file of plain
tensors, read back with `weights_only=True`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from specrepro.engine.runner import ModelRunner
from specrepro.prompting import encode_turn

FEATURE_DTYPE = torch.bfloat16  # halves the file; features are regression targets, not logits


@dataclass
class CorpusConfig:
    train_prompts: int = 128
    gen_tokens: int = 128
    gen_temperature: float = 0.7
    gen_batch_size: int = 8
    top_k: int = 32
    max_seq_len: int = 512
    seed: int = 0

    @classmethod
    def from_config(cls, entry: dict) -> CorpusConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in entry.items() if k in known})


@dataclass
class Sample:
    """One teacher generation: prompt + response ids, the teacher's top-k distribution for every
    response token (log-probabilities at temperature 1), and its final-norm features."""

    ids: list[int]
    n_prompt: int
    top_ids: torch.Tensor  # [n_response, k]
    top_logp: torch.Tensor  # [n_response, k]
    features: torch.Tensor | None = None  # [len(ids), H]


@torch.inference_mode()
def teacher_generations(
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[dict],
    cfg: CorpusConfig,
    conversation: str,
) -> list[Sample]:
    """One Sample per prompt; the teacher samples the continuation."""
    torch.manual_seed(cfg.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [encode_turn(tokenizer, p, 0, [], conversation) for p in prompts]
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


def add_features(teacher: PreTrainedModel, samples: list[Sample]) -> None:
    """The teacher's final-norm hidden state at every position of every sample, in place (one
    unpadded forward per sequence, through the same runtime that decodes)."""
    runner = ModelRunner(teacher, "teacher")
    for sample in tqdm(samples, desc="teacher features"):
        runner.reset(len(sample.ids))
        out = runner.forward(sample.ids, logits_from=len(sample.ids), want_hidden=True)
        sample.features = out.hidden.to("cpu", FEATURE_DTYPE)


def build_corpus(
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[dict],
    cfg: CorpusConfig,
    conversation: str,
    out: Path,
) -> list[Sample]:
    t0 = time.perf_counter()
    samples = teacher_generations(teacher, tokenizer, prompts, cfg, conversation)
    t1 = time.perf_counter()
    add_features(teacher, samples)
    summary = {
        "config": asdict(cfg),
        "n_sequences": len(samples),
        "response_tokens": sum(len(s.ids) - s.n_prompt for s in samples),
        "generation_seconds": t1 - t0,
        "feature_seconds": time.perf_counter() - t1,
        "prompt_ids": [p["question_id"] for p in prompts],
    }
    save_corpus(samples, summary, out)
    return samples


def save_corpus(samples: list[Sample], summary: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "ids": [torch.tensor(s.ids) for s in samples],
        "n_prompt": torch.tensor([s.n_prompt for s in samples]),
        "top_ids": [s.top_ids for s in samples],
        "top_logp": [s.top_logp for s in samples],
        "features": [s.features for s in samples],
        "summary": json.dumps(summary),
    }
    tmp = out.with_name(out.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))


def load_corpus(path: Path) -> tuple[list[Sample], dict]:
    if not path.exists():
        raise FileNotFoundError(f"teacher corpus {path} not found (built by the DAG)")
    data = torch.load(path, map_location="cpu", weights_only=True)
    samples = [
        Sample(ids.tolist(), int(n), top_ids, top_logp, features)
        for ids, n, top_ids, top_logp, features in zip(
            data["ids"],
            data["n_prompt"],
            data["top_ids"],
            data["top_logp"],
            data["features"],
            strict=True,
        )
    ]
    return samples, json.loads(data["summary"])
