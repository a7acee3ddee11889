"""Twins: weights."""

from __future__ import annotations

import hashlib
import math
import unicodedata
from dataclasses import dataclass

import torch

from specrepro.models.loader import ModelError
from specrepro.models.twins.shapes import TwinShape
from specrepro.models.twins.vocab import TOKEN_IDS

RANK = 16  # dimension of the shared next-token law
LOGIT_STD = 7.0  # the law's logits' spread over the vocabulary: peaked, not one-hot
LAW_NOISE = 0.08  # each model's own deviation from its family's law (target/draft disagreement)
RARE_NORM = 0.3  # special tokens (EOS among them) and control or partial bytes: rarely predicted
OPT_SHIFT = 2.0  # OPT's first MLP moves the residual from c u_t P to OPT_SHIFT c (L u_t) P
RESIDUAL_SHIFT = 0.25  # how far the layers move the residual from the law's (relative norm)
INIT_STD = 0.02


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "big")


def _generator(text: str) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(text))


@dataclass(frozen=True)
class Factors:
    """A vocabulary family's next-token law: token t predicts logits U R u_t (u_t = U[t])."""

    u: torch.Tensor  # [V, RANK] float64, unit rows (rare tokens shorter, padding rows zero)
    rotation: torch.Tensor  # [RANK, RANK] orthogonal
    tokenizer_size: int


def family_factors(family: str, vocab: int, tokenizer) -> Factors:
    """The law of the family whose twin tokenizer is `tokenizer` (its model has `vocab` rows)."""
    gen = _generator(f"specrepro-twin-family:{family}")
    u = torch.randn(vocab, RANK, generator=gen, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    u[rare_tokens(tokenizer)] *= RARE_NORM
    u[len(tokenizer) :] = 0.0  # OPT's padding rows: never predicted, as in the real model
    q, _ = torch.linalg.qr(torch.randn(RANK, RANK, generator=gen, dtype=torch.float64))
    return Factors(u, q, len(tokenizer))


def rare_tokens(tokenizer) -> list[int]:
    """Special tokens, and byte tokens that decode alone to a control character or a partial
    UTF-8 sequence: what a trained model seldom emits."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    special = set(tokenizer.all_special_ids)

    def rare(text: str) -> bool:
        return "\ufffd" in text or any(c != "\n" and unicodedata.category(c) == "Cc" for c in text)

    return [i for i, text in enumerate(texts) if i in special or rare(text)]


@dataclass(frozen=True)
class Basis:
    """One model's view of its family's law: its rank, projection P and own law L."""

    u: torch.Tensor  # [V, r]
    p: torch.Tensor  # [r, H], orthonormal rows orthogonal to the all-ones vector
    law: torch.Tensor  # [r, r]: (R + LAW_NOISE M) / sqrt(1 + LAW_NOISE^2), M this model's


def model_basis(factors: Factors, hidden: int, gen: torch.Generator) -> Basis:
    """The norms (OPT's LayerNorm centres) leave the law alone: P's rows sum to zero."""
    r = min(RANK, hidden - 1)
    a = torch.randn(hidden, r + 1, generator=gen, dtype=torch.float64)
    a[:, 0] = 1.0
    q, _ = torch.linalg.qr(a)
    noise = torch.randn(r, r, generator=gen, dtype=torch.float64) / math.sqrt(r)
    law = (factors.rotation[:r, :r] + LAW_NOISE * noise) / math.sqrt(1 + LAW_NOISE**2)
    return Basis(factors.u[:, :r], q[:, 1 : r + 1].T.contiguous(), law)


def _fill(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Every parameter from `gen`: norms one, biases zero, matrices INIT_STD (transformers' own
    initialisation may change between versions; these weights must not)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * INIT_STD)


def _calibrate(
    model: torch.nn.Module,
    writers: list[tuple[torch.nn.Parameter, torch.Tensor]],
    final_norm: torch.nn.Module,
    ids: torch.Tensor,
) -> None:
    """Scale the residual writers' random part (`writers`: parameter, its fixed part) so the
    layers move the final residual RESIDUAL_SHIFT (relative) from where the law alone puts it:
    the same context effect, and the same logit scale after the final norm, at every depth
    and width."""
    randoms = [(p, fixed, p.detach().clone() - fixed) for p, fixed in writers]
    seen: list[torch.Tensor] = []
    hook = final_norm.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))

    def residual(scale: float) -> torch.Tensor:
        with torch.no_grad():
            for p, fixed, rand in randoms:
                p.copy_(fixed + scale * rand)
            seen.clear()
            model(ids)
        return seen[-1][0]

    try:
        base = residual(0.0)
        scale = 1.0
        for _ in range(3):
            moved = ((residual(scale) - base).norm(dim=-1) / base.norm(dim=-1)).mean().item()
            scale *= RESIDUAL_SHIFT / max(moved, 1e-6)
        residual(scale)
    finally:
        hook.remove()


def _probe_ids(factors: Factors, gen: torch.Generator, n: int = 32) -> torch.Tensor:
    return torch.randint(4, factors.tokenizer_size, (1, n), generator=gen)


def llama_twin(shape: TwinShape, factors: Factors, seed: str):
    """A LlamaForCausalLM whose embedding carries u_t through its projection P and whose LM
    head reads its law back: logits = s U L P . RMSNorm(h), spread about LOGIT_STD."""
    from transformers import LlamaConfig, LlamaForCausalLM

    ids = TOKEN_IDS["llama"]
    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.hidden // shape.heads,
        max_position_embeddings=shape.max_positions,
        rms_norm_eps=shape.rms_norm_eps,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=None,
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    )
    model = LlamaForCausalLM(config).eval()
    gen = _generator(seed)
    _fill(model, gen)
    basis = model_basis(factors, shape.hidden, gen)
    r, h = basis.p.shape
    noise = torch.randn(shape.vocab, h, generator=gen, dtype=torch.float64) * (0.1 / math.sqrt(h))
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(basis.u @ basis.p + noise)
        model.lm_head.weight.copy_(LOGIT_STD * math.sqrt(r / h) * basis.u @ basis.law @ basis.p)
    writers = [
        (p, torch.zeros_like(p))
        for layer in model.model.layers
        for p in (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight)
    ]
    _calibrate(model, writers, model.model.norm, _probe_ids(factors, gen))
    return model, basis


def opt_twin(shape: TwinShape, factors: Factors, seed: str):
    """An OPTForCausalLM, whose embedding c U P is also its LM head (tied): two ReLU units per
    rank dimension of the first MLP (relu(a) - relu(-a) = a) move the residual from c u_t P to
    OPT_SHIFT c (L u_t) P, which the tied head reads as the law U L u_t."""
    from transformers import OPTConfig, OPTForCausalLM

    ids = TOKEN_IDS["opt"]
    config = OPTConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        ffn_dim=shape.intermediate,
        num_attention_heads=shape.heads,
        max_position_embeddings=shape.max_positions,
        word_embed_proj_dim=shape.hidden,
        do_layer_norm_before=True,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
        architectures=["OPTForCausalLM"],
    )
    model = OPTForCausalLM(config).eval()
    gen = _generator(seed)
    _fill(model, gen)
    basis = model_basis(factors, shape.hidden, gen)
    r, h = basis.p.shape
    if shape.intermediate < 2 * r:
        raise ModelError(f"OPT twin of hidden {h}: feed-forward size below {2 * r}")
    c = LOGIT_STD * math.sqrt(r / h)
    move = c * (OPT_SHIFT * basis.law.T - torch.eye(r, dtype=torch.float64)) @ basis.p  # [r, H]
    decoder = model.model.decoder
    first = decoder.layers[0]
    with torch.no_grad():
        decoder.embed_tokens.weight.copy_(c * basis.u @ basis.p)
        first.fc1.weight[:r] = basis.p / math.sqrt(h)  # LayerNorm(c u P) P^T / sqrt(H) = u
        first.fc1.weight[r : 2 * r] = -basis.p / math.sqrt(h)
    fixed = torch.zeros_like(first.fc2.weight)
    fixed[:, :r], fixed[:, r : 2 * r] = move.T, -move.T
    with torch.no_grad():
        first.fc2.weight[:, : 2 * r] = fixed[:, : 2 * r]
    writers = [
        (p, fixed if p is first.fc2.weight else torch.zeros_like(p))
        for layer in decoder.layers
        for p in (layer.self_attn.out_proj.weight, layer.fc2.weight)
    ]
    _calibrate(model, writers, decoder.final_layer_norm, _probe_ids(factors, gen))
    return model, basis


def eagle_head_state(
    target_shape: TwinShape, embedding: torch.Tensor, basis: Basis, seed: str
) -> dict[str, torch.Tensor]:
    """A head in the published EAGLE format over a twin LLaMA target. Its fc maps the next
    token's embedding u P (norm 1) to a feature of the target's scale, sqrt(H) (u A) P with
    A = I + LAW_NOISE M its own deviation, which the target's LM head reads as the target's
    law of that token; its one layer (random, small writers) adds the context."""
    gen = _generator(seed)
    h, i = target_shape.hidden, target_shape.intermediate
    head_dim = h // target_shape.heads
    q, kv = target_shape.heads * head_dim, target_shape.kv_heads * head_dim

    def rand(rows: int, cols: int, std: float = INIT_STD) -> torch.Tensor:
        return torch.randn(rows, cols, generator=gen, dtype=torch.float64) * std

    p = basis.p
    r = p.shape[0]
    own = LAW_NOISE * torch.randn(r, r, generator=gen, dtype=torch.float64) / math.sqrt(r)
    fc = rand(h, 2 * h, 0.1 / math.sqrt(2 * h))
    fc[:, :h] += math.sqrt(h) * (torch.eye(h, dtype=torch.float64) + p.T @ own @ p)
    writer_std = INIT_STD * RESIDUAL_SHIFT / math.sqrt(h)
    state = {
        "fc.weight": fc,
        "fc.bias": torch.zeros(h, dtype=torch.float64),
        "layers.0.self_attn.q_proj.weight": rand(q, h),
        "layers.0.self_attn.k_proj.weight": rand(kv, h),
        "layers.0.self_attn.v_proj.weight": rand(kv, h),
        "layers.0.self_attn.o_proj.weight": rand(h, q, writer_std),
        "layers.0.mlp.gate_proj.weight": rand(i, h),
        "layers.0.mlp.up_proj.weight": rand(i, h),
        "layers.0.mlp.down_proj.weight": rand(h, i, writer_std),
        "layers.0.post_attention_layernorm.weight": torch.ones(h, dtype=torch.float64),
        "embed_tokens.weight": embedding.to(torch.float64),
    }
    return {k: v.to(torch.float16).contiguous() for k, v in state.items()}


def eagle_head_config(shape: TwinShape):
    """The Llama config of a head over a twin target (its shapes, one layer; EAGLE-1 Vicuna
    heads' token ids). save_published_head writes it in the published 4.28-era form."""
    from transformers import LlamaConfig

    ids = TOKEN_IDS["llama"]
    return LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=1,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_positions,
        rms_norm_eps=shape.rms_norm_eps,
        initializer_range=INIT_STD,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=0,
    )
