"""The models `gpu-check` runs on: random targets, their drafts and EAGLE heads.

Random weights suffice: every check compares two code paths on the same models (or watches for
host syncs), it never judges output quality. Two sets:
  - `check_models`: the tiny target of the sync and stream checks (or a local one), a 1-layer
    random draft over its vocabulary and an untrained head;
  - `family`: the exactness checks' pairs, a LLaMA with LLaMA-2's head_dim 128 and a tiny OPT,
    each with a draft that agrees with it often (its own layers, perturbed) and, for the LLaMA,
    a head trained on its greedy continuations. A random head's drafts are almost all rejected,
    and a T=0 comparison then never exercises accepting a drafted token.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedModel,
)

from specrepro.config import MethodChoice
from specrepro.decoding.base import make_params
from specrepro.engine.runner import ModelRunner
from specrepro.models.eagle_head import EagleHead, build_head, head_config_for
from specrepro.run.decoder import Decoder, LoadedPair
from specrepro.training.teacher import Sample
from specrepro.training.train_head import HeadTrainConfig, train_head


@dataclass
class CheckModels:
    target: PreTrainedModel
    draft: PreTrainedModel  # for sps and dsbd: a random model over the target's vocabulary
    head: torch.nn.Module  # an untrained EAGLE head over the target


@dataclass(frozen=True)
class Shapes:
    """The exactness checks' sizes: real ones by default, TINY for the CPU test suite."""

    vocab: int = 1024
    llama_hidden: int = 512  # 4 heads of 128: LLaMA-2's head_dim, which the GPU kernels see
    opt_hidden: int = 256
    prompts: int = 3
    prompt_len: int = 24
    new_tokens: int = 48


TINY = Shapes(vocab=64, llama_hidden=64, opt_hidden=32, prompts=2, prompt_len=12, new_tokens=24)


@dataclass
class Family:
    """A target with the draft (sps) and head (tree methods) the methods run it with."""

    name: str
    target: PreTrainedModel
    draft: PreTrainedModel
    head: EagleHead | None  # None: no EAGLE head over this architecture (OPT)


def llama_config(
    vocab_size: int, hidden: int, max_positions: int = 4096, init: float = 0.02
) -> LlamaConfig:
    """A random LLaMA's config: 2 layers, 4 heads (head_dim hidden / 4), 2 key/value heads."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        initializer_range=init,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def tiny_check_config(vocab_size: int = 1024) -> LlamaConfig:
    """The random target of the sync and stream checks: small, with positions past 2,000."""
    return llama_config(vocab_size, 256)


def llama_check_config(shapes: Shapes) -> LlamaConfig:
    """The exactness checks' LLaMA. Initialised at 0.05 (not 0.02, with a smaller head scale)
    so that greedy paths depend on the context: at 0.02 they fall into 2-token cycles that a
    model ignoring its cache reproduces."""
    return llama_config(shapes.vocab, shapes.llama_hidden, init=0.05)


def opt_check_config(shapes: Shapes) -> OPTConfig:
    """A random OPT with facebook/opt-*'s structure: learned positions (offset 2), LayerNorms
    with biases, lm_head tied to the input embedding. init_std 0.1: at OPT's 0.02 the residual
    stream is the token embedding and every argmax echoes the last input token."""
    return OPTConfig(
        vocab_size=shapes.vocab,
        hidden_size=shapes.opt_hidden,
        word_embed_proj_dim=shapes.opt_hidden,
        ffn_dim=2 * shapes.opt_hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=2048,
        init_std=0.1,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def random_model(
    config: LlamaConfig, seed: int, device: torch.device, head_scale: float = 40.0
) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    # Random init gives near-uniform logits; a scaled head makes drafts agree now and then.
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    return model.to(device)


def random_opt(config: OPTConfig, seed: int, device: torch.device) -> OPTForCausalLM:
    torch.manual_seed(seed)
    model = OPTForCausalLM(config).eval()
    # Peaked distributions; the lm_head is tied to the input embedding, so the final
    # LayerNorm's gain scales the logits alone.
    with torch.no_grad():
        model.model.decoder.final_layer_norm.weight.mul_(5.0)
    return model.to(device)


def perturbed_draft(target: PreTrainedModel, seed: int, noise: float = 0.1) -> PreTrainedModel:
    """A draft that agrees with the target often, not always: the target with its layers'
    weights perturbed by `noise` x each weight's std (two independent random models almost
    never agree). At 0.1 an sps round commits ~1.5-2 tokens (gamma 4): rejections and
    acceptances both."""
    draft = copy.deepcopy(target)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in draft.named_parameters():
            if ".layers." in name and param.numel() > 1:
                scale = noise * float(param.std())
                param.add_(scale * torch.randn(param.shape, generator=generator).to(param))
    return draft.eval()


def check_prompts(vocab_size: int, count: int, length: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab_size, (count, length), generator=generator).tolist()


def trained_head(target: PreTrainedModel, prompts: list[list[int]], new_tokens: int) -> EagleHead:
    """A head trained (seconds) on the target's greedy continuations of `prompts`, so that tree
    rounds accept several drafted tokens there."""
    samples = []
    vanilla = decoder_for(target, None, None, "vanilla", 0.0, {})
    runner = ModelRunner(target, "teacher")
    for ids in prompts:
        tokens = vanilla.generate(ids, new_tokens, 0)[0].tokens
        runner.reset(len(ids) + len(tokens))
        out = runner.forward(ids + tokens, logits_from=len(ids) - 1, want_hidden=True)
        top_logp, top_ids = torch.log_softmax(out.logits[: len(tokens)], -1).topk(4, dim=-1)
        top_ids, top_logp, hidden = top_ids.cpu(), top_logp.cpu(), out.hidden.cpu()  # as stored
        samples.append(Sample(ids + tokens, len(ids), top_ids, top_logp, hidden))
    torch.manual_seed(11)
    head = build_head(head_config_for(target), target)
    config = HeadTrainConfig(steps=80, batch_size=4, lr=3e-3, noise=0.0, holdout_fraction=0.0)
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar, amid the check table
        train_head(head, samples, config, desc="gpu-check head")
    return head


def family(name: str, shapes: Shapes, device: torch.device) -> Family:
    """The exactness checks' "llama" or "opt" family, in float32 (`cast` gives other dtypes)."""
    if name == "llama":
        target = random_model(llama_check_config(shapes), 0, device, head_scale=10.0)
        prompts = check_prompts(shapes.vocab, shapes.prompts, shapes.prompt_len)
        head: EagleHead | None = trained_head(target, prompts, shapes.new_tokens)
    else:
        target = random_opt(opt_check_config(shapes), 0, device)
        head = None
    return Family(name, target, perturbed_draft(target, 1), head)


def cast(family: Family, dtype: torch.dtype) -> Family:
    """A copy of `family` in `dtype`: the same weights, rounded."""
    target = copy.deepcopy(family.target).to(dtype)
    head = None
    if family.head is not None:
        head = build_head(head_config_for(target), target)  # over the copy, in its dtype
        head.load_state_dict(family.head.head_state_dict(), strict=False)
    return Family(family.name, target, copy.deepcopy(family.draft).to(dtype), head)


def check_models(
    device: torch.device, model_path: str | None = None, config: LlamaConfig | None = None
) -> CheckModels:
    """The target (random from `config`, default tiny_check_config(), unless `model_path`), a
    1-layer random draft over its vocabulary and a random EAGLE head over it."""
    if model_path is None:
        target = random_model(config or tiny_check_config(), 0, device)
    else:
        target = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        target = target.eval().to(device)
    text = target.config.get_text_config()
    draft_config = copy.deepcopy(config or tiny_check_config())
    draft_config.vocab_size = text.vocab_size
    draft_config.num_hidden_layers = 1
    draft = random_model(draft_config, 1, device)
    torch.manual_seed(2)
    head = build_head(head_config_for(target), target)
    return CheckModels(target, draft, head)


def decoder_for(
    target: PreTrainedModel,
    draft: PreTrainedModel | None,
    head: torch.nn.Module | None,
    algorithm: str,
    temperature: float,
    params: dict,
) -> Decoder:
    loaded = LoadedPair(
        name="gpu-check",
        target=target,
        tokenizer=None,  # type: ignore[arg-type]  # token ids in, token ids out
        draft=draft,
        conversation="plain",
        eos_ids=frozenset(),
        token_text=(),
        head=head,
    )
    choice = MethodChoice(algorithm, algorithm, make_params(algorithm, params))
    return Decoder(loaded, choice, temperature)


def check_decoder(models: CheckModels, algorithm: str, temperature: float, params: dict) -> Decoder:
    return decoder_for(models.target, models.draft, models.head, algorithm, temperature, params)


def proxy_models(device: torch.device) -> CheckModels:
    """tests/test_host_reads.py's models (vocabulary 8, hidden 32, the same seeds): the sync
    counts on a GPU are then comparable with that CPU proxy's host reads, read for read."""
    config = llama_config(8, 32, max_positions=512)
    target = random_model(config, 0, device)
    draft = random_model(config, 1, device)
    torch.manual_seed(11)
    return CheckModels(target, draft, build_head(head_config_for(target), target))
