"""The models `gpu-check` runs on: a tiny random target (or a local one), draft and EAGLE head.

Random weights suffice: every check compares two code paths on the same models (or watches for
host syncs), it never judges output quality. The draft is a 1-layer random model over the
target's vocabulary (for dsbd), the head an untrained EAGLE head over the target.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from specrepro.config import MethodChoice
from specrepro.decoder import Decoder, LoadedPair
from specrepro.decoding.base import make_params
from specrepro.models.eagle_head import build_head, head_config_for


@dataclass
class CheckModels:
    target: PreTrainedModel
    draft: PreTrainedModel  # for dsbd: a 1-layer random model over the target's vocabulary
    head: torch.nn.Module  # an untrained EAGLE head over the target


def tiny_check_config(vocab_size: int = 1024) -> LlamaConfig:
    """The random target of the GPU check: small, with room for positions past 2,000."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def random_model(config: LlamaConfig, seed: int, device: torch.device) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    # Random init gives near-uniform logits; a scaled head makes drafts agree now and then.
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    return model.to(device)


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


def check_decoder(models: CheckModels, algorithm: str, temperature: float, params: dict) -> Decoder:
    loaded = LoadedPair(
        name="gpu-check",
        target=models.target,
        tokenizer=None,  # type: ignore[arg-type]  # token ids in, token ids out
        draft=models.draft,
        conversation="plain",
        eos_ids=frozenset(),
        token_text=(),
        head=models.head,
    )
    choice = MethodChoice(algorithm, algorithm, make_params(algorithm, params))
    return Decoder(loaded, choice, temperature)
