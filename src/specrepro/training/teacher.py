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
from dataclasses import asdict, dataclass, fields, replace
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
    # Prompts keep their last this many tokens (the question and the assistant turn's start):
    # a long SQuAD context or Spider schema costs prefill time here and training time in every
    # student, and the students learn from the response positions, not the prompt's start.
    max_prompt_tokens: int = 192
    seed: int = 0
    # The precision the teacher generates in (None: the run's dtype). `bench teacher` measures
    # each one's speed and how far its features and top-k stray from float32's.
    dtype: str | None = None

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


def truncated_prompts(encoded: list[list[int]], cfg: CorpusConfig) -> list[list[int]]:
    """Each prompt's last `max_prompt_tokens` tokens, fewer if the response would not fit in
    `max_seq_len`."""
    keep = max(1, min(cfg.max_prompt_tokens, cfg.max_seq_len - cfg.gen_tokens))
    return [ids[-keep:] for ids in encoded]


@torch.inference_mode()
def teacher_generations(
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[dict],
    cfg: CorpusConfig,
    conversation: str,
) -> list[Sample]:
    """One Sample per prompt, in prompt order, features included: the teacher samples the
    continuation in batches of `gen_batch_size` through the runtime that decodes, and the
    hidden states of those same forwards are the features (no second pass over the text)."""
    torch.manual_seed(cfg.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [encode_turn(tokenizer, p, 0, [], conversation) for p in prompts]
    encoded = truncated_prompts(encoded, cfg)
    # Unpacked: a batch of generations gains nothing from the packed layout, whose second copy
    # of every weight would double the host memory of a large teacher on the CPU.
    runner = ModelRunner(teacher, "teacher", pack=False)
    stop = {tokenizer.eos_token_id, pad}
    out: dict[int, Sample] = {}
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # less padding per batch
    batches = [order[i : i + cfg.gen_batch_size] for i in range(0, len(order), cfg.gen_batch_size)]
    for batch in tqdm(batches, desc="teacher generations"):
        samples = generate_batch(runner, [encoded[i] for i in batch], cfg, stop, pad)
        out.update(zip(batch, samples, strict=True))
    return [out[i] for i in range(len(encoded))]


def generate_batch(
    runner: ModelRunner, prompts: list[list[int]], cfg: CorpusConfig, stop: set[int], pad: int
) -> list[Sample]:
    """Left-padded prompts continued together: sampled tokens, the top-k log-probs of every
    step's distribution (temperature 1) and the final-norm feature of every real position."""
    b, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((b, width), pad, dtype=torch.long)
    real = torch.zeros((b, width), dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        real[row, width - len(prompt) :] = True
    # Every row counts positions from its own first real token, as it would alone. A pad sees
    # only itself (a query that sees nothing gives NaN); no real token sees a pad.
    positions = (real.long().cumsum(-1) - 1).clamp(min=0)
    eye = torch.eye(width, dtype=torch.bool)
    span = torch.ones(width, width, dtype=torch.bool).tril() & (real[:, None, :] | eye)
    runner.reset(width + cfg.gen_tokens)
    step = runner.forward(ids, positions, span_mask=span, logits_from=width - 1, want_hidden=True)
    hidden, top_ids, top_logp, tokens = [step.hidden], [], [], []
    done = torch.zeros(b, dtype=torch.bool)
    for j in range(cfg.gen_tokens):
        logits = step.logits[:, -1]
        logp, top = torch.log_softmax(logits, dim=-1).topk(cfg.top_k, dim=-1)
        top_ids.append(top)
        top_logp.append(logp)
        if cfg.gen_temperature > 0:
            probs = torch.softmax(logits / cfg.gen_temperature, dim=-1)
            token = torch.multinomial(probs, 1)[:, 0]
        else:
            token = logits.argmax(-1)
        tokens.append(token)
        done |= torch.tensor([t in stop for t in token.tolist()])
        real = torch.cat([real, torch.ones(b, 1, dtype=torch.bool)], dim=1)
        # This forward's hidden state is the feature of the token just sampled; after the last
        # step it is needed for nothing else, so that step asks for no logits.
        last = j + 1 == cfg.gen_tokens or bool(done.all())
        step = runner.forward(
            token[:, None],
            positions[:, -1:] + j + 1,
            span_mask=real[:, None, :],
            logits_from=1 if last else 0,
            want_hidden=True,
        )
        hidden.append(step.hidden)
        if last:
            break
    features = torch.cat(hidden, dim=1)
    response = torch.stack(tokens, dim=1).tolist()
    ids_k, logp_k = torch.stack(top_ids, dim=1), torch.stack(top_logp, dim=1)
    samples = []
    for row, prompt in enumerate(prompts):
        cut = next((j + 1 for j, t in enumerate(response[row]) if t in stop), len(response[row]))
        first = width - len(prompt)
        samples.append(
            Sample(
                ids=prompt + response[row][:cut],
                n_prompt=len(prompt),
                top_ids=ids_k[row, :cut].cpu().clone(),
                top_logp=logp_k[row, :cut].cpu().clone(),
                features=features[row, first : width + cut].to("cpu", FEATURE_DTYPE),
            )
        )
    return samples


@torch.inference_mode()
def fused_layer_samples(
    target: PreTrainedModel, samples: list[Sample], layers: tuple[int, ...]
) -> list[Sample]:
    """The samples with their features replaced by the inputs of the target's decoder `layers`,
    concatenated (what an EAGLE-3 head reads), from one forward over each sample's tokens: the
    target's states at a position depend only on the tokens up to it, so this equals what the
    generation's own forwards computed (up to float rounding)."""
    device = next(target.parameters()).device
    out = []
    for sample in tqdm(samples, desc="fused target layers"):
        ids = torch.tensor([sample.ids], device=device)
        states = target(ids, output_hidden_states=True, logits_to_keep=1).hidden_states
        fused = torch.cat([states[i][0] for i in layers], dim=-1)
        out.append(replace(sample, features=fused.to("cpu", FEATURE_DTYPE)))
    return out


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
    summary = {
        "config": asdict(cfg),
        "n_sequences": len(samples),
        "response_tokens": sum(len(s.ids) - s.n_prompt for s in samples),
        "prompt_tokens": sum(s.n_prompt for s in samples),
        # Features included: they come from the generation's own forwards.
        "generation_seconds": time.perf_counter() - t0,
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
