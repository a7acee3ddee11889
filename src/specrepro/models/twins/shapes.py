"""Twins: the real models' shapes (and chat templates), and how a twin scales them down."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from specrepro.models.loader import ModelError

# The chat templates the real tokenizers ship, in their published form.
CHAT_TEMPLATES = {
    "llama-2": (
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}{% else %}"
        "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
        "{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/"
        "...') }}{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}"
        "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
        "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
        "{% if message['role'] == 'user' %}"
        "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
    ),
    "zephyr": (
        "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
        "{{ '<|user|>\\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'system' %}\n"
        "{{ '<|system|>\\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'assistant' %}\n"
        "{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n"
        "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
        "{% endfor %}"
    ),
    # For a twin whose pair asks for the chat template but whose real model has none known
    # here: the "plain" conversation format as a template.
    "generic": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + '\\n' }}"
        "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}"
        "{% else %}{{ 'Assistant: ' + message['content'] + '\\n\\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    ),
}


@dataclass(frozen=True)
class RealShape:
    """A hub model's published shape (or what a registry entry's `twin:` says of it)."""

    family: str  # "llama" or "opt"; EAGLE heads take their target's shape (head_shape)
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    parameters: float
    max_positions: int
    rms_norm_eps: float = 1e-5
    chat_template: str | None = None  # a key of CHAT_TEMPLATES
    estimate: bool = False  # shape inferred, not read from the published config


@dataclass(frozen=True)
class EagleHeadId:
    """A published EAGLE head: one decoder layer at its target's shape."""

    target: str  # the hub id of the model it was trained on


def _llama(layers, hidden, heads, intermediate, parameters, max_positions, eps=1e-5, **kw):
    return RealShape(
        "llama", layers, hidden, heads, kw.pop("kv_heads", heads), intermediate, 32000,
        parameters, max_positions, eps, **kw,
    )  # fmt: skip


def _opt(layers, hidden, heads, ffn, parameters):
    return RealShape("opt", layers, hidden, heads, heads, ffn, 50272, parameters, 2048)


def _wide_sheared(layers: int, parameters: float) -> RealShape:
    """The Wide-Sheared-LLaMA releases (arXiv 2402.01528): the 1.3B one is 12 layers of width
    2560 (the paper's Table 1). The smaller ones are ESTIMATES, not read from their configs
    (offline here): the same layer at hidden 2560 with fewer layers, the depth whose parameter
    count (untied 32000 x 2560 embedding and LM head included) comes nearest the name."""
    return _llama(layers, 2560, 20, 9280, parameters, 4096, estimate=parameters < 1e9)


LLAMA2_7B = _llama(32, 4096, 32, 11008, 6.74e9, 4096)
LLAMA2_13B = _llama(40, 5120, 40, 13824, 13.0e9, 4096)
SHEARED_1P3B = _llama(24, 2048, 16, 5504, 1.3e9, 4096)
SHEARED_2P7B = _llama(32, 2560, 20, 6912, 2.7e9, 4096)
TINYLLAMA = _llama(22, 2048, 32, 5632, 1.1e9, 2048, kv_heads=4)

KNOWN: dict[str, RealShape | EagleHeadId] = {
    "meta-llama/Llama-2-7b-hf": LLAMA2_7B,
    "meta-llama/Llama-2-7b-chat-hf": replace(LLAMA2_7B, chat_template="llama-2"),
    "meta-llama/Llama-2-13b-hf": LLAMA2_13B,
    "meta-llama/Llama-2-13b-chat-hf": replace(LLAMA2_13B, chat_template="llama-2"),
    "meta-llama/Llama-2-70b-hf": _llama(80, 8192, 64, 28672, 69.0e9, 4096, kv_heads=8),
    "lmsys/vicuna-7b-v1.3": _llama(32, 4096, 32, 11008, 6.74e9, 2048, 1e-6),
    "lmsys/vicuna-13b-v1.3": _llama(40, 5120, 40, 13824, 13.0e9, 2048, 1e-6),
    "JackFram/llama-68m": _llama(2, 768, 12, 3072, 68e6, 2048, 1e-6),
    "JackFram/llama-160m": _llama(12, 768, 12, 3072, 160e6, 2048, 1e-6),
    "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T": TINYLLAMA,
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": replace(TINYLLAMA, chat_template="zephyr"),
    "TinyLlama/TinyLlama_v1.1": TINYLLAMA,
    "princeton-nlp/Sheared-LLaMA-1.3B": SHEARED_1P3B,
    "princeton-nlp/Sheared-LLaMA-1.3B-ShareGPT": SHEARED_1P3B,
    "princeton-nlp/Sheared-LLaMA-1.3B-Pruned": SHEARED_1P3B,
    "princeton-nlp/Sheared-LLaMA-2.7B": SHEARED_2P7B,
    "princeton-nlp/Sheared-LLaMA-2.7B-ShareGPT": SHEARED_2P7B,
    "princeton-nlp/Sheared-LLaMA-2.7B-Pruned": SHEARED_2P7B,
    "minghaoyan/Wide-Sheared-LLaMA-1.3B": _wide_sheared(12, 1.3e9),
    # Estimates (see _wide_sheared): 6 layers ~0.75B, 4 ~0.55B, 1 ~0.26B.
    "minghaoyan/Wide-Sheared-LLaMA-796M": _wide_sheared(6, 796e6),
    "minghaoyan/Wide-Sheared-LLaMA-543M": _wide_sheared(4, 543e6),
    "minghaoyan/Wide-Sheared-LLaMA-290M": _wide_sheared(1, 290e6),
    "facebook/opt-125m": _opt(12, 768, 12, 3072, 125e6),
    "facebook/opt-1.3b": _opt(24, 2048, 32, 8192, 1.3e9),
    "facebook/opt-2.7b": _opt(32, 2560, 32, 10240, 2.7e9),
    "facebook/opt-6.7b": _opt(32, 4096, 32, 16384, 6.7e9),
    "facebook/opt-13b": _opt(40, 5120, 40, 20480, 12.85e9),
    "facebook/opt-30b": _opt(48, 7168, 56, 28672, 30.0e9),
    "yuhuili/EAGLE-Vicuna-7B-v1.3": EagleHeadId("lmsys/vicuna-7b-v1.3"),
    "yuhuili/EAGLE-Vicuna-13B-v1.3": EagleHeadId("lmsys/vicuna-13b-v1.3"),
    "yuhuili/EAGLE-llama2-chat-7B": EagleHeadId("meta-llama/Llama-2-7b-chat-hf"),
    "yuhuili/EAGLE-llama2-chat-13B": EagleHeadId("meta-llama/Llama-2-13b-chat-hf"),
}

FAMILIES = ("llama", "opt")
TWIN_KEYS = {
    "family", "layers", "hidden", "heads", "kv_heads", "intermediate", "max_positions",
    "rms_norm_eps", "parameters", "chat_template",
}  # fmt: skip


def real_shape_from_twin(name: str, model_id: str, twin: dict) -> RealShape:
    """The RealShape a registry entry's `twin:` describes (for a hub id this module does not
    know): family and the real layers and hidden size at least; heads default to a head size
    of 128 (LLaMA) or 64 (OPT), the feed-forward size to LLaMA's ~8/3 or OPT's 4 x hidden."""
    where = f"model {name!r} ({model_id}): twin"
    unknown = set(twin) - TWIN_KEYS
    if unknown:
        raise ModelError(f"{where} has unknown keys {sorted(unknown)}; known: {sorted(TWIN_KEYS)}")
    family = twin.get("family")
    if family not in FAMILIES:
        raise ModelError(f"{where}.family must be one of {FAMILIES}, got {family!r}")
    for key in ("layers", "hidden"):
        if not isinstance(twin.get(key), int) or twin[key] < 1:
            raise ModelError(f"{where}.{key} must be a positive integer (the real model's)")
    hidden = twin["hidden"]
    heads = twin.get("heads") or max(1, hidden // (128 if family == "llama" else 64))
    if family == "llama":
        ffn = twin.get("intermediate") or 256 * math.ceil(hidden * 8 / 3 / 256)
        vocab, positions = 32000, 4096
    else:
        ffn, vocab, positions = twin.get("intermediate") or 4 * hidden, 50272, 2048
    if hidden % heads:
        raise ModelError(f"{where}: hidden {hidden} is not a multiple of heads {heads}")
    kv = twin.get("kv_heads") or heads
    if heads % kv:
        raise ModelError(f"{where}: heads {heads} is not a multiple of kv_heads {kv}")
    template = twin.get("chat_template")
    if template is not None and template not in CHAT_TEMPLATES:
        raise ModelError(f"{where}.chat_template must be one of {sorted(CHAT_TEMPLATES)}")
    shape = RealShape(
        family, twin["layers"], hidden, heads, kv, ffn, vocab, 0.0,
        twin.get("max_positions", positions), twin.get("rms_norm_eps", 1e-5), template,
    )  # fmt: skip
    return replace(shape, parameters=float(twin.get("parameters") or shape_parameters(shape)))


def shape_parameters(shape: RealShape | TwinShape) -> int:
    """Parameters of a decoder of this shape (embedding and LM head counted once each; OPT
    ties them and learns its positions)."""
    h, head_dim = shape.hidden, shape.hidden // shape.heads
    attention = 2 * h * shape.heads * head_dim + 2 * h * shape.kv_heads * head_dim
    if shape.family == "opt":
        layer = attention + 4 * h + 2 * h * shape.intermediate + shape.intermediate + h + 4 * h
        return shape.layers * layer + shape.vocab * h + (shape.max_positions + 2) * h + 2 * h
    layer = attention + 3 * h * shape.intermediate + 2 * h
    return shape.layers * layer + 2 * shape.vocab * h + h


# Every size scaled alike: layers / 4, heads / 4, head size / 8, hence hidden / 32; the
# feed-forward size keeps its ratio to the hidden size. 13B: 40 x 5120 -> 10 x 160;
# Sheared-1.3B: 24 x 2048 -> 6 x 64; Wide-1.3B: 12 x 2560 -> 3 x 80.
LAYER_DIVISOR = 4
HEAD_DIVISOR = 4
HEAD_DIM_DIVISOR = 8
MIN_HEAD_DIM = 4


@dataclass(frozen=True)
class TwinShape:
    """A twin's shape; `vocab` is the twin tokenizer's (padded for OPT, as OPT's is)."""

    family: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    max_positions: int
    rms_norm_eps: float


def twin_shape(real: RealShape, vocab: int) -> TwinShape:
    """The real shape scaled down (see LAYER_DIVISOR), keeping the query-to-key/value grouping."""
    heads = math.ceil(real.heads / HEAD_DIVISOR)
    head_dim = max(MIN_HEAD_DIM, round(real.hidden / real.heads / HEAD_DIM_DIVISOR))
    hidden = heads * head_dim
    group = real.heads // real.kv_heads
    kv = max(1, heads // group)
    while heads % kv:
        kv -= 1
    return TwinShape(
        family=real.family,
        layers=math.ceil(real.layers / LAYER_DIVISOR),
        hidden=hidden,
        heads=heads,
        kv_heads=kv,
        intermediate=max(8, round(real.intermediate * hidden / real.hidden)),
        vocab=vocab,
        max_positions=real.max_positions,
        rms_norm_eps=real.rms_norm_eps,
    )
