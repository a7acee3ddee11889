"""The EAGLE draft head (docs/methods.md#eagle-head) and its published checkpoint format.

The head reads the target's final-norm feature f_t and the embedding of the next token x_{t+1},
`fc(concat(embed(x_{t+1}), f_t))`, then one Llama decoder layer without its input norm, and
predicts the next feature; the target's own lm_head turns a feature into logits. Embedding and
lm_head are the target's modules (shared, frozen), so a head is small.

A head is driven by `ModelRunner` like any model: its forward takes `features` beside the
tokens and writes its own KV cache at explicit positions under the runner's masks.

Checkpoint format (the one yuhuili/EAGLE-* heads use, so any EAGLE implementation can read ours):
`config.json` (a Llama config with num_hidden_layers 1, optional `bias` for fc) and
`model.safetensors` or `pytorch_model.bin` holding `fc.weight`, `fc.bias`,
`layers.0.self_attn.{q,k,v,o}_proj.weight`, `layers.0.mlp.{gate,up,down}_proj.weight`,
`layers.0.post_attention_layernorm.weight`, and optionally `embed_tokens.weight`.
`save_head` writes our heads (model.safetensors, a transformers 5 config with the legacy rope
keys added); `save_published_head` writes a folder exactly as the hub serves the published heads
(pytorch_model.bin in float16 with embed_tokens.weight, a transformers 4.28-era config.json).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Cache, LlamaConfig, PreTrainedModel
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from specrepro.models.loader import ModelError, ModelSpec, legacy_rope_keys, resolve

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# The architecture name of the published EAGLE-3 heads (models/eagle3_head.py).
EAGLE3_ARCHITECTURE = "LlamaForCausalLMEagle3"
OPTIONAL_KEYS = {"embed_tokens.weight"}


@dataclass
class HeadOutput:
    logits: torch.Tensor  # [1, n_kept, V]
    hidden_states: tuple[torch.Tensor, ...]  # (predicted features [1, n, H],)


class Float32Rotary(LlamaRotaryEmbedding):
    """RoPE whose frequencies stay float32 whatever dtype the head is cast to.

    `head.to(bfloat16)` would round inv_freq (angle error ~0.24 rad at position 1,000); the
    official EAGLE head computes cos/sin in float32, and so does the parent's forward as long
    as inv_freq itself is float32. Casts and moves go through `_apply`, so the exact float32
    frequencies are put back after each one, on whatever device they now live.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        # A plain attribute, not a buffer: `_apply` leaves it alone.
        self._float32_freqs = self.inv_freq.detach().to("cpu", torch.float32).clone()

    def _apply(
        self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
    ) -> Float32Rotary:
        super()._apply(fn, recurse)
        device = self.inv_freq.device
        self.inv_freq = self._float32_freqs.to(device)
        self.original_inv_freq = self._float32_freqs.to(device)
        return self


def causal_mask(
    n: int, cache: Cache | None, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """[1, 1, n, past + n] additive causal mask of n new tokens after the cache's past ones
    (sdpa's own causal flag aligns to the top-left, wrong once a cache precedes)."""
    past = 0 if cache is None else cache.get_seq_length()
    allowed = torch.ones(n, past + n, dtype=torch.bool, device=device).tril(past)
    mask = torch.zeros(n, past + n, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.view(1, 1, n, past + n)


class EagleHead(nn.Module):
    """fc + one decoder layer (input norm skipped) over the target's embedding and lm_head."""

    # The target feature it reads: its final-norm hidden state (EAGLE-3 heads read several
    # layers', models/eagle3_head.py).
    feature_layers: tuple[int, ...] | None = None

    def __init__(
        self, config: LlamaConfig, embed_tokens: nn.Embedding, lm_head: nn.Module, fc_bias: bool
    ) -> None:
        super().__init__()
        config._attn_implementation = "sdpa"
        self.config = config
        hidden = config.hidden_size
        self.fc = nn.Linear(2 * hidden, hidden, bias=fc_bias)
        layer = LlamaDecoderLayer(config, layer_idx=0)
        layer.input_layernorm = nn.Identity()
        self.layers = nn.ModuleList([layer])
        self.rotary = Float32Rotary(config)
        # The target's modules, shared; excluded from the head's own weights (head_state_dict).
        self.embed_tokens = embed_tokens
        self.lm_head = lm_head

    @property
    def dtype(self) -> torch.dtype:
        return self.fc.weight.dtype

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.Tensor,
        features: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Cache | None,
        attention_mask: torch.Tensor | None = None,
        logits_to_keep: int = 1,
        **_: object,
    ) -> HeadOutput:
        embeds = self.embed_tokens(input_ids).to(self.dtype)
        x = self.fc(torch.cat([embeds, features.to(self.dtype).view_as(embeds)], dim=-1))
        n = x.shape[1]
        if attention_mask is None:
            attention_mask = causal_mask(n, cache, self.dtype, x.device)
        x = self.layers[0](
            x,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=cache is not None,
            position_embeddings=self.rotary(x, position_ids),
        )
        return HeadOutput(logits=self.logits(x[:, n - logits_to_keep :]), hidden_states=(x,))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Next-token logits of predicted features: the target's lm_head reads them as they are."""
        return self.lm_head(features)

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """The head's own weights under the published names (no shared target modules)."""
        return {
            k: v
            for k, v in self.state_dict().items()
            if not k.startswith(("embed_tokens.", "lm_head.", "rotary."))
        }


def expected_keys(config: LlamaConfig, fc_bias: bool) -> set[str]:
    keys = {"fc.weight", "layers.0.post_attention_layernorm.weight"}
    keys |= {f"layers.0.self_attn.{p}_proj.weight" for p in "qkvo"}
    keys |= {f"layers.0.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
    if fc_bias:
        keys.add("fc.bias")
    if getattr(config, "attention_bias", False):
        keys |= {f"layers.0.self_attn.{p}_proj.bias" for p in "qkvo"}
    return keys


def build_head(config: LlamaConfig, target: PreTrainedModel, fc_bias: bool = True) -> EagleHead:
    """An (untrained) head over the target's embedding and lm_head, in the target's dtype."""
    text = target.config.get_text_config()
    for key in ("hidden_size", "vocab_size"):
        if getattr(config, key) != getattr(text, key):
            raise ModelError(
                f"EAGLE head {key} {getattr(config, key)} does not match the target's "
                f"{getattr(text, key)}"
            )
    head = EagleHead(config, target.get_input_embeddings(), target.get_output_embeddings(), fc_bias)
    device = next(target.parameters()).device
    return head.to(device=device, dtype=target.dtype).eval()


def head_config_for(target: PreTrainedModel) -> LlamaConfig:
    """The config of a head for this target: the target's shapes with one layer."""
    text = target.config.get_text_config()
    return LlamaConfig(
        hidden_size=text.hidden_size,
        intermediate_size=text.intermediate_size,
        num_attention_heads=text.num_attention_heads,
        num_key_value_heads=text.num_key_value_heads,
        head_dim=getattr(text, "head_dim", text.hidden_size // text.num_attention_heads),
        vocab_size=text.vocab_size,
        rms_norm_eps=text.rms_norm_eps,
        rope_parameters=getattr(text, "rope_parameters", None),
        max_position_embeddings=text.max_position_embeddings,
        num_hidden_layers=1,
        bias=True,
        architectures=["LlamaForCausalLM"],
    )


def is_eagle3_config(raw: dict) -> bool:
    """Whether a head's config.json describes an EAGLE-3 head: its draft vocabulary, or the
    architecture name the published EAGLE-3 heads carry."""
    return "draft_vocab_size" in raw or EAGLE3_ARCHITECTURE in (raw.get("architectures") or [])


def read_config(folder: Path) -> tuple[LlamaConfig, bool]:
    path = folder / "config.json"
    if not path.exists():
        raise ModelError(f"EAGLE head: no config.json in {folder}")
    raw = json.loads(path.read_text())
    layers = raw.get("num_hidden_layers", 1)
    if layers != 1:
        raise ModelError(f"EAGLE head {folder}: num_hidden_layers must be 1, got {layers}")
    fc_bias = bool(raw.pop("bias", True))
    return LlamaConfig(**raw), fc_bias


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The head's tensors; a pickle is read with weights_only=True and refused if it holds more
    than tensors (arbitrary objects in a pickle can run code when loaded)."""
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.exists():
            continue
        if name.endswith(".safetensors"):
            return load_file(str(path))
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ModelError(
                f"EAGLE head {path}: refused, the pickle holds more than tensors ({err}). "
                "Convert it to model.safetensors from a trusted environment."
            ) from err
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise ModelError(f"EAGLE head {path}: expected a mapping of names to tensors")
        return state
    raise ModelError(f"EAGLE head: none of {', '.join(WEIGHT_FILES)} in {folder}")


def load_head(folder: Path, target: PreTrainedModel) -> nn.Module:
    """Load a head saved in a published format, over the target's embedding (and lm_head): an
    EAGLE-1/2 head, or an EAGLE-3 head when its config says so (models/eagle3_head.py)."""
    path = folder / "config.json"
    if path.exists() and is_eagle3_config(json.loads(path.read_text())):
        # Imported here: eagle3_head builds on this module.
        from specrepro.models.eagle3_head import load_eagle3_head

        return load_eagle3_head(folder, target)
    config, fc_bias = read_config(folder)
    state = read_weights(folder)
    expected = expected_keys(config, fc_bias)
    missing = sorted(expected - set(state))
    unknown = sorted(set(state) - expected - OPTIONAL_KEYS)
    if missing or unknown:
        raise ModelError(
            f"EAGLE head {folder}: weights do not match the published format "
            f"(missing {missing or 'none'}, unknown {unknown or 'none'})"
        )
    head = build_head(config, target, fc_bias)
    own = {k: v for k, v in state.items() if k in expected}
    head.load_state_dict(own, strict=False)
    return head


def load_head_model(spec: ModelSpec, target: PreTrainedModel, cache_root: Path) -> nn.Module:
    """A registry entry's head: a local or DAG-built folder, or a hub id (config and weights
    fetched by huggingface_hub, which fails cleanly offline)."""
    if spec.source != "hub":
        return load_head(Path(resolve(spec, cache_root)), target)
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            spec.id, revision=spec.revision, allow_patterns=["config.json", *WEIGHT_FILES]
        )
    except Exception as err:  # network, auth, missing repo: all mean "cannot load this head"
        raise ModelError(f"EAGLE head {spec.name!r}: cannot fetch {spec.id}: {err}") from err
    return load_head(Path(folder), target)


def save_head(head: EagleHead, folder: Path) -> None:
    """Write config.json and model.safetensors in the published format."""
    folder.mkdir(parents=True, exist_ok=True)
    config = head.config.to_dict()
    config.update(legacy_rope_keys(config))
    config["bias"] = head.fc.bias is not None
    config.pop("_attn_implementation", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    state = {k: v.detach().to("cpu").contiguous() for k, v in head.head_state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))


# The config.json fields of the published EAGLE-1 heads (yuhuili/EAGLE-Vicuna-7B-v1.3 and its
# siblings), as transformers 4.28.1 wrote their training config (SafeAILab/EAGLE
# train/vicuna_7B_config.json): read from the config given, beside the constant ones below.
# There is no head_dim and no rope_parameters: the official code derives the head size from
# hidden_size / num_attention_heads and reads only the top-level rope keys.
PUBLISHED_FIELDS = (
    "bos_token_id", "eos_token_id", "hidden_act", "hidden_size", "initializer_range",
    "intermediate_size", "max_position_embeddings", "num_attention_heads", "pad_token_id",
    "rms_norm_eps", "vocab_size",
)  # fmt: skip
PUBLISHED_TRANSFORMERS_VERSION = "4.28.1"
DEFAULT_ROPE_THETA = 10000.0  # what the official code uses when a config has no rope_theta


def published_config(config: LlamaConfig, fc_bias: bool, dtype: torch.dtype) -> dict:
    """The config.json of a published-format head with `config`'s shapes (see save_published_head).

    Keys a default would restore are left out, as the Vicuna heads leave them out;
    num_key_value_heads, rope_theta and `"bias": false` appear only where they differ from the
    official code's defaults (num_attention_heads, 10,000, true), as in the LLaMA-3 heads."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if head_dim * heads != config.hidden_size:
        raise ModelError(
            f"published EAGLE head: head_dim {head_dim} x {heads} heads != hidden_size "
            f"{config.hidden_size}; the format has no head_dim (the official code divides)"
        )
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ModelError("published EAGLE head: its decoder layer has no attention or MLP biases")
    out = {key: getattr(config, key) for key in PUBLISHED_FIELDS}
    out.update(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        num_hidden_layers=1,
        tie_word_embeddings=False,
        torch_dtype=str(dtype).removeprefix("torch."),
        transformers_version=PUBLISHED_TRANSFORMERS_VERSION,
        use_cache=True,
    )
    if config.num_key_value_heads != heads:
        out["num_key_value_heads"] = config.num_key_value_heads
    rope = config.rope_parameters or {}
    if rope.get("rope_theta", DEFAULT_ROPE_THETA) != DEFAULT_ROPE_THETA:
        out["rope_theta"] = rope["rope_theta"]
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
        # The official config validation accepts exactly {"type", "factor"}, linear or dynamic.
        if rope_type not in ("linear", "dynamic"):
            raise ModelError(f"published EAGLE head: rope type {rope_type!r} has no 4.x form")
        out["rope_scaling"] = {"type": rope_type, "factor": float(rope["factor"])}
    if not fc_bias:
        out["bias"] = False
    return out


def save_published_head(
    state: dict[str, torch.Tensor],
    config: LlamaConfig,
    folder: Path,
    fc_bias: bool = True,
    dtype: torch.dtype = torch.float16,
) -> None:
    """Write a head folder exactly as the published yuhuili/EAGLE-* heads are laid out.

    `state` holds the head's tensors under the official names (expected_keys) plus
    `embed_tokens.weight` (a copy of the target's embedding): the official loader reads
    pytorch_model.bin with strict=True into a module that owns one. `config` is the target's
    Llama config or a head config (head_config_for); its shapes are written as a transformers
    4.28-era config.json with num_hidden_layers 1 (published_config), and `"bias": false` when
    fc has no bias. Tensors are saved in `dtype` (float16, as published) with torch.save, as a
    plain dict. load_head reads the folder back; so would the official EAGLE code.
    """
    layout = published_config(config, fc_bias, dtype)
    required = expected_keys(config, fc_bias) | OPTIONAL_KEYS
    missing, unknown = sorted(required - set(state)), sorted(set(state) - required)
    if missing or unknown:
        raise ModelError(
            f"published EAGLE head {folder}: tensors do not match the official names "
            f"(missing {missing or 'none'}, unknown {unknown or 'none'})"
        )
    folder.mkdir(parents=True, exist_ok=True)
    # load_head reads model.safetensors first: one left from an earlier write would shadow these.
    (folder / "model.safetensors").unlink(missing_ok=True)
    tensors = {k: state[k].detach().to("cpu", dtype, copy=True) for k in sorted(state)}
    torch.save(tensors, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(layout, indent=2, sort_keys=True) + "\n")
