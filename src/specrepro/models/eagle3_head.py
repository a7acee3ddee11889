"""The EAGLE-3 draft head (docs/eagle3.md) and its published checkpoint format.

What differs from the EAGLE-1/2 head (models/eagle_head.py):
- it reads three of the target's hidden states, the inputs of decoder layers 2, L // 2 and
  L - 3 of an L-layer target (the official code collects them in that order), concatenated and
  projected by `fc` (no bias) to the head's width; from its second draft level on it reads its
  own output instead, which is already that wide;
- its decoder layer (`midlayer`) normalises the token embedding and the feature separately
  (`input_layernorm`, `hidden_norm`) and attends over both side by side, so its q/k/v
  projections read 2 x hidden; the residual stream is the feature;
- its logits come from its own `norm` and `lm_head` over a draft vocabulary of `d` tokens;
  draft id i is target id i + d2t[i] (`t2d` marks the target ids covered). The head returns
  logits over the target's whole vocabulary, -inf outside the draft vocabulary (as a
  vocab-subset drafter does, models/vocab_subset.py), so every drafter runs it unchanged.

A head is driven by `ModelRunner` like an EAGLE-1/2 head, and the tree rounds ask the target
for `feature_layers` instead of its final-norm state (decoding/tree_rounds.py).

Checkpoint format (SafeAILab/EAGLE's eagle/model/cnets.py and its published EAGLE3-* heads):
`config.json`, a Llama config with num_hidden_layers 1, `draft_vocab_size` and optionally
`target_hidden_size`; weights `fc.weight`, `midlayer.self_attn.{q,k,v,o}_proj.weight`,
`midlayer.mlp.{gate,up,down}_proj.weight`, `midlayer.{hidden_norm,input_layernorm,
post_attention_layernorm}.weight`, `norm.weight`, `lm_head.weight`, and `d2t` / `t2d` unless the
draft vocabulary is the target's; `embed_tokens.weight` may be present (a copy of the target's
embedding, which the official trainer keeps frozen) and is not read: the head uses the target's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import Cache, LlamaConfig, PreTrainedModel
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaMLP, LlamaRMSNorm

from specrepro.models.eagle_head import (
    EAGLE3_ARCHITECTURE,
    Float32Rotary,
    HeadOutput,
    causal_mask,
    head_config_for,
    read_weights,
)
from specrepro.models.loader import ModelError, legacy_rope_keys

OPTIONAL_KEYS = {"embed_tokens.weight"}
VOCAB_MAP_KEYS = {"d2t", "t2d"}


def fused_layers(num_layers: int) -> tuple[int, ...]:
    """The target layers whose inputs an EAGLE-3 head fuses: 2, L // 2 and L - 3, as the official
    code collects them (ascending). A target too shallow to give three distinct ones is refused:
    the official code would collect fewer, and fc would not fit."""
    layers = (2, num_layers // 2, num_layers - 3)
    if len(set(layers)) != 3 or layers != tuple(sorted(layers)):
        raise ModelError(
            f"EAGLE-3 head: a {num_layers}-layer target has no three distinct layers 2, L // 2 and "
            "L - 3 in that order (it needs at least 7 layers)"
        )
    return layers


class DraftVocabLmHead(nn.Module):
    """The head's own lm_head over its draft vocabulary, returning logits over the target's whole
    vocabulary: draft row i lands on target id `token_ids[i]`, every other id gets -inf."""

    def __init__(self, hidden: int, token_ids: torch.Tensor, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, token_ids.numel(), bias=False)
        self.register_buffer("token_ids", token_ids.to(torch.long), persistent=False)
        # ModelRunner reads the width of a model's logits from here.
        self.vocab_size = int(vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        draft = self.proj(x)
        out = draft.new_full((*draft.shape[:-1], self.vocab_size), float("-inf"))
        return out.index_copy_(-1, self.token_ids, draft)


class Eagle3Layer(nn.Module):
    """The head's decoder layer: attention over (normed embedding, normed feature), 2 x hidden
    wide, added to the feature; then the usual MLP block."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.self_attn = LlamaAttention(config, layer_idx=0)
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        head_dim = self.self_attn.head_dim
        self.self_attn.q_proj = nn.Linear(2 * hidden, heads * head_dim, bias=False)
        self.self_attn.k_proj = nn.Linear(2 * hidden, kv_heads * head_dim, bias=False)
        self.self_attn.v_proj = nn.Linear(2 * hidden, kv_heads * head_dim, bias=False)
        self.mlp = LlamaMLP(config)
        self.hidden_norm = LlamaRMSNorm(hidden, eps=config.rms_norm_eps)
        self.input_layernorm = LlamaRMSNorm(hidden, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(hidden, eps=config.rms_norm_eps)

    def forward(
        self,
        embeds: torch.Tensor,
        features: torch.Tensor,
        attention_mask: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        cache: Cache | None,
    ) -> torch.Tensor:
        both = torch.cat([self.input_layernorm(embeds), self.hidden_norm(features)], dim=-1)
        attended, _ = self.self_attn(
            hidden_states=both,
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            cache=cache,
        )
        x = features + attended
        return x + self.mlp(self.post_attention_layernorm(x))


class Eagle3Head(nn.Module):
    """fc over three target layers + one EAGLE-3 decoder layer + its own norm and lm_head, over
    the target's (shared, frozen) embedding."""

    def __init__(
        self,
        config: LlamaConfig,
        embed_tokens: nn.Embedding,
        target_hidden: int,
        token_ids: torch.Tensor,
        vocab_size: int,
        feature_layers: tuple[int, ...],
    ) -> None:
        super().__init__()
        config._attn_implementation = "sdpa"
        self.config = config
        hidden = config.hidden_size
        self.fc = nn.Linear(len(feature_layers) * target_hidden, hidden, bias=False)
        self.midlayer = Eagle3Layer(config)
        self.norm = LlamaRMSNorm(hidden, eps=config.rms_norm_eps)
        self.lm_head = DraftVocabLmHead(hidden, token_ids, vocab_size)
        self.rotary = Float32Rotary(config)
        self.embed_tokens = embed_tokens
        self.feature_layers = feature_layers

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
        features = features.to(self.dtype).reshape(*embeds.shape[:-1], features.shape[-1])
        # The target's fused layers at the first level, the head's own output after it.
        if features.shape[-1] == self.fc.in_features:
            features = self.fc(features)
        n = embeds.shape[1]
        if attention_mask is None:
            attention_mask = causal_mask(n, cache, self.dtype, embeds.device)
        x = self.midlayer(
            embeds, features, attention_mask, self.rotary(features, position_ids), cache
        )
        return HeadOutput(logits=self.logits(x[:, n - logits_to_keep :]), hidden_states=(x,))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Next-token logits over the target's vocabulary of the head's own outputs."""
        return self.lm_head(self.norm(features))

    def draft_vocab_tensors(self) -> dict[str, torch.Tensor]:
        """d2t and t2d as the published format stores them."""
        ids = self.lm_head.token_ids.to("cpu")
        t2d = torch.zeros(self.lm_head.vocab_size, dtype=torch.bool)
        t2d[ids] = True
        return {"d2t": ids - torch.arange(ids.numel()), "t2d": t2d}

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """The head's own weights under the published names (no shared target modules)."""
        state = {
            k: v
            for k, v in self.state_dict().items()
            if not k.startswith(("embed_tokens.", "rotary.", "lm_head."))
        }
        state["lm_head.weight"] = self.lm_head.proj.weight
        if self.lm_head.proj.out_features != self.lm_head.vocab_size:
            state.update(self.draft_vocab_tensors())
        return state


def expected_keys(config: LlamaConfig) -> set[str]:
    keys = {"fc.weight", "norm.weight", "lm_head.weight"}
    keys |= {f"midlayer.self_attn.{p}_proj.weight" for p in "qkvo"}
    keys |= {f"midlayer.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
    keys |= {f"midlayer.{n}.weight" for n in ("hidden_norm", "input_layernorm")}
    keys.add("midlayer.post_attention_layernorm.weight")
    if config.draft_vocab_size != config.vocab_size:
        keys |= VOCAB_MAP_KEYS
    return keys


def draft_token_ids(
    state: dict[str, torch.Tensor], config: LlamaConfig, where: str
) -> torch.Tensor:
    """The target id of every draft id (i + d2t[i]), checked against t2d."""
    size, vocab = int(config.draft_vocab_size), int(config.vocab_size)
    if "d2t" not in state:
        return torch.arange(size)
    d2t, t2d = state["d2t"].to(torch.long).flatten(), state["t2d"].to(torch.bool).flatten()
    if d2t.numel() != size or t2d.numel() != vocab:
        raise ModelError(
            f"{where}: d2t has {d2t.numel()} entries and t2d {t2d.numel()}; the config's draft "
            f"vocabulary is {size} and its vocabulary {vocab}"
        )
    ids = torch.arange(size) + d2t
    if int(ids.min()) < 0 or int(ids.max()) >= vocab or torch.unique(ids).numel() != size:
        raise ModelError(f"{where}: d2t maps draft ids outside [0, {vocab}) or onto one id twice")
    covered = torch.zeros(vocab, dtype=torch.bool)
    covered[ids] = True
    if not torch.equal(covered, t2d):
        raise ModelError(f"{where}: t2d does not mark exactly the target ids d2t maps onto")
    return ids


def read_eagle3_config(folder: Path) -> LlamaConfig:
    raw = json.loads((folder / "config.json").read_text())
    layers = raw.get("num_hidden_layers", 1)
    if layers != 1:
        raise ModelError(f"EAGLE-3 head {folder}: num_hidden_layers must be 1, got {layers}")
    raw.setdefault("draft_vocab_size", raw.get("vocab_size"))
    raw.pop("bias", None)  # the official EAGLE-3 head's fc has no bias whatever the config says
    return LlamaConfig(**raw)


def check_head_fits(config: LlamaConfig, target: PreTrainedModel, where: str) -> int:
    """The target's hidden size, once the head's vocabulary and feature width are checked."""
    text = target.config.get_text_config()
    if config.vocab_size != text.vocab_size:
        raise ModelError(
            f"{where}: vocab_size {config.vocab_size} does not match the target's {text.vocab_size}"
        )
    target_hidden = int(getattr(config, "target_hidden_size", None) or config.hidden_size)
    if target_hidden != text.hidden_size:
        raise ModelError(
            f"{where}: it reads features {target_hidden} wide, the target's hidden size is "
            f"{text.hidden_size}"
        )
    if config.hidden_size != text.hidden_size:
        # The official code then gives the head an embedding of its own; this one reads the
        # target's.
        raise ModelError(
            f"{where}: hidden_size {config.hidden_size} differs from the target's "
            f"{text.hidden_size}; heads narrower or wider than their target are not supported"
        )
    return target_hidden


def build_eagle3_head(
    config: LlamaConfig,
    target: PreTrainedModel,
    token_ids: torch.Tensor | None = None,
    where: str = "EAGLE-3 head",
) -> Eagle3Head:
    """An (untrained) EAGLE-3 head over the target's embedding, in the target's dtype; its draft
    vocabulary is `token_ids` (ascending target ids), the whole vocabulary when None. A head that
    does not fit the target is refused, named by `where`."""
    target_hidden = check_head_fits(config, target, where)
    if token_ids is None:
        token_ids = torch.arange(config.vocab_size)
    config.draft_vocab_size = int(token_ids.numel())
    layers = fused_layers(int(target.config.get_text_config().num_hidden_layers))
    head = Eagle3Head(
        config,
        target.get_input_embeddings(),
        target_hidden,
        token_ids,
        config.vocab_size,
        layers,
    )
    device = next(target.parameters()).device
    return head.to(device=device, dtype=target.dtype).eval()


def eagle3_config_for(target: PreTrainedModel, draft_vocab_size: int) -> LlamaConfig:
    """The config of an EAGLE-3 head for this target: the target's shapes, one layer."""
    config = head_config_for(target)
    config.draft_vocab_size = draft_vocab_size
    config.architectures = [EAGLE3_ARCHITECTURE]
    return config


def load_eagle3_head(folder: Path, target: PreTrainedModel) -> Eagle3Head:
    """Load a head saved in the published EAGLE-3 format, over the target's embedding."""
    where = f"EAGLE-3 head {folder}"
    config = read_eagle3_config(folder)
    state = read_weights(folder)
    expected = expected_keys(config)
    missing = sorted(expected - set(state))
    unknown = sorted(set(state) - expected - OPTIONAL_KEYS - VOCAB_MAP_KEYS)
    if missing or unknown:
        raise ModelError(
            f"{where}: weights do not match the published format "
            f"(missing {missing or 'none'}, unknown {unknown or 'none'})"
        )
    head = build_eagle3_head(config, target, draft_token_ids(state, config, where), where)
    own = {k: v for k, v in state.items() if k in expected - VOCAB_MAP_KEYS}
    own["lm_head.proj.weight"] = own.pop("lm_head.weight")
    if own["fc.weight"].shape != head.fc.weight.shape:
        raise ModelError(
            f"{where}: fc.weight is {list(own['fc.weight'].shape)}, a head fusing "
            f"{len(head.feature_layers)} target layers needs {list(head.fc.weight.shape)}"
        )
    head.load_state_dict(own, strict=False)
    return head


def save_eagle3_head(head: Eagle3Head, folder: Path) -> None:
    """Write config.json and model.safetensors in the published EAGLE-3 format."""
    folder.mkdir(parents=True, exist_ok=True)
    config = head.config.to_dict()
    config.update(legacy_rope_keys(config))
    config.update(
        architectures=[EAGLE3_ARCHITECTURE], draft_vocab_size=head.lm_head.proj.out_features
    )
    config.pop("_attn_implementation", None)
    config.pop("bias", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    state = {k: v.detach().to("cpu").contiguous() for k, v in head.head_state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
