"""A head checkpoint in exactly the published yuhuili/EAGLE-* layout loads through our loader and
drafts exactly what the same weights in our own format draft.

The layout, read off the reference code (SafeAILab/EAGLE: eagle/model/ea_model.py, cnets.py,
configs.py) and the configs the heads were trained with (train/vicuna_7B_config.json,
eagle/train/llama_2_chat_7B_config.json, eagle/train/EAGLE-LLaMA3-Instruct-8B.json):
- pytorch_model.bin, torch.save of the head's state dict, which EaModel.from_pretrained loads
  with strict=True into a module owning `embed_tokens` (a copy of the base model's embedding),
  `fc` (with a bias unless the config says "bias": false) and one decoder layer without an input
  norm: exactly OFFICIAL_KEYS below. Published in float16.
- config.json, a transformers 4.28-era Llama config: no head_dim, no rope_parameters; the
  Vicuna heads omit num_key_value_heads, rope_theta and bias (the official code then uses
  num_attention_heads, 10,000 and true), the LLaMA-3 heads write all three.

The checkpoints here are built from tensors this file makes (not by our save_head), by hand in
one test and through `save_published_head` in the others.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from specrepro.decoding import eagle as eagle_module
from specrepro.decoding import eagle2 as eagle2_module
from specrepro.engine.runner import ModelRunner
from specrepro.models.eagle_head import (
    EagleHead,
    build_head,
    load_head,
    load_head_model,
    read_config,
    save_head,
    save_published_head,
)
from specrepro.models.loader import ModelSpec
from tests.helpers import decoder_for

VOCAB = 16
HIDDEN = 32
INTERMEDIATE = 64
HEADS = 4
PROMPT = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7]
MAX_NEW = 30
OFFICIAL_KEYS = {
    "embed_tokens.weight", "fc.weight", "fc.bias",
    "layers.0.self_attn.q_proj.weight", "layers.0.self_attn.k_proj.weight",
    "layers.0.self_attn.v_proj.weight", "layers.0.self_attn.o_proj.weight",
    "layers.0.mlp.gate_proj.weight", "layers.0.mlp.up_proj.weight",
    "layers.0.mlp.down_proj.weight", "layers.0.post_attention_layernorm.weight",
}  # fmt: skip
# Two shapes of published head: Vicuna's (multi-head attention, default RoPE, fc bias; the
# config omits all three) and LLaMA-3's (grouped KV heads, rope_theta 500,000, no fc bias).
KINDS = {
    "vicuna": {"kv_heads": 4, "rope_theta": 10000.0, "fc_bias": True},
    "llama3": {"kv_heads": 2, "rope_theta": 500000.0, "fc_bias": False},
}

# Tiny models: one intra-op thread is ~10x faster than several contending for the CPUs.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def target_model(kind: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=KINDS[kind]["kv_heads"],
        rope_theta=KINDS[kind]["rope_theta"],
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # peaked distributions, as tests/conftest.py's tiny_llama
    return model


def official_tensors(target: LlamaForCausalLM, fc_bias: bool, seed: int = 7) -> dict:
    """A head's tensors under the official names, drawn here (float32)."""
    g = torch.Generator().manual_seed(seed)
    config = target.config
    kv = config.num_key_value_heads * HIDDEN // HEADS

    def weight(rows: int, cols: int, gain: float = 1.0) -> torch.Tensor:
        return gain * torch.randn(rows, cols, generator=g) / cols**0.5

    state = {
        "embed_tokens.weight": target.get_input_embeddings().weight.detach().clone(),
        "fc.weight": weight(HIDDEN, 2 * HIDDEN),
        # Peaked attention (random init is near uniform, which no position change would show).
        "layers.0.self_attn.q_proj.weight": weight(HIDDEN, HIDDEN, 6.0),
        "layers.0.self_attn.k_proj.weight": weight(kv, HIDDEN, 6.0),
        "layers.0.self_attn.v_proj.weight": weight(kv, HIDDEN),
        "layers.0.self_attn.o_proj.weight": weight(HIDDEN, HIDDEN),
        "layers.0.mlp.gate_proj.weight": weight(INTERMEDIATE, HIDDEN),
        "layers.0.mlp.up_proj.weight": weight(INTERMEDIATE, HIDDEN),
        "layers.0.mlp.down_proj.weight": weight(HIDDEN, INTERMEDIATE),
        "layers.0.post_attention_layernorm.weight": 1.0 + 0.1 * torch.randn(HIDDEN, generator=g),
    }
    if fc_bias:
        state["fc.bias"] = 0.1 * torch.randn(HIDDEN, generator=g)
    return state


def hand_written_config(kind: str) -> dict:
    """config.json as the hub serves it for a head of this kind, written out."""
    config = {
        "architectures": ["LlamaForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": 2048,
        "model_type": "llama",
        "num_attention_heads": HEADS,
        "num_hidden_layers": 1,
        "pad_token_id": 0,
        "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.28.1",
        "use_cache": True,
        "vocab_size": VOCAB,
    }
    if kind == "llama3":
        config.update(num_key_value_heads=2, rope_theta=500000.0, bias=False)
    return config


def write_by_hand(folder: Path, kind: str, state: dict) -> Path:
    folder.mkdir(parents=True)
    torch.save({k: v.to(torch.float16) for k, v in state.items()}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(hand_written_config(kind), indent=2))
    return folder


def own_format_head(target: torch.nn.Module, published: Path, state: dict) -> EagleHead:
    """The same weights in our own format: a head built for the target with the float16 values
    loaded as a state dict (no published files read)."""
    config, fc_bias = read_config(published)
    head = build_head(config, target, fc_bias)
    own = {k: v.to(torch.float16) for k, v in state.items() if k != "embed_tokens.weight"}
    head.load_state_dict(own, strict=False)
    return head


def drafted_trees(monkeypatch) -> list[tuple]:
    """Every tree the eagle and eagle2 drafters return: (tokens, parents) per round."""
    trees: list[tuple] = []
    for module, name in (
        (eagle_module, "draft_static_tree"),
        (eagle2_module, "draft_dynamic_tree"),
    ):
        original = getattr(module, name)

        def recording(*args, _original=original, **kwargs):
            tree, stats = _original(*args, **kwargs)
            trees.append((tuple(tree.host_tokens()), tuple(tree.parents)))
            return tree, stats

        monkeypatch.setattr(module, name, recording)
    return trees


def runs(target, head, trees: list[tuple]) -> list:
    """What a head decides: eagle at T=0, eagle2 at T=0 and T=1 (two seeds), their tokens, the
    accepted counts and every drafted tree (`trees`, from drafted_trees)."""
    trees.clear()
    out = []
    for method, temperature, params, seeds in (
        ("eagle", 0.0, {"tree": [[0], [1], [2], [0, 0], [0, 1], [1, 0], [0, 0, 0]]}, [0]),
        ("eagle2", 0.0, {"top_k": 3, "depth": 4, "total_tokens": 10}, [0]),
        ("eagle2", 1.0, {"top_k": 3, "depth": 4, "total_tokens": 10}, [0, 1]),
    ):
        gen = decoder_for(target, None, method, temperature, head=head, **params)
        for seed in seeds:
            result, _ = gen.generate(PROMPT, MAX_NEW, seed=seed)
            out.append((method, temperature, seed, result.tokens,
                        result.extra["rounds"]["accepted"]))  # fmt: skip
    return out + trees


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_save_published_head_writes_what_the_hub_serves(tmp_path, kind) -> None:
    target = target_model(kind)
    state = official_tensors(target, KINDS[kind]["fc_bias"])
    by_hand = write_by_hand(tmp_path / "hand", kind, state)
    written = tmp_path / "function"
    save_published_head(state, target.config, written, fc_bias=KINDS[kind]["fc_bias"])
    assert sorted(p.name for p in written.iterdir()) == ["config.json", "pytorch_model.bin"]
    assert json.loads((written / "config.json").read_text()) == hand_written_config(kind)
    ours = torch.load(written / "pytorch_model.bin", weights_only=True)
    theirs = torch.load(by_hand / "pytorch_model.bin", weights_only=True)
    assert type(ours) is dict and set(ours) == set(theirs)
    assert set(ours) == OFFICIAL_KEYS - ({"fc.bias"} if kind == "llama3" else set())
    for key, tensor in theirs.items():
        assert ours[key].dtype == torch.float16
        torch.testing.assert_close(ours[key], tensor, atol=0, rtol=0)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_old_style_config_reads_as_the_official_code_reads_it(tmp_path, kind) -> None:
    target = target_model(kind)
    state = official_tensors(target, KINDS[kind]["fc_bias"])
    folder = write_by_hand(tmp_path / "head", kind, state)
    raw = json.loads((folder / "config.json").read_text())
    assert "rope_parameters" not in raw and "head_dim" not in raw
    config, fc_bias = read_config(folder)
    assert fc_bias is KINDS[kind]["fc_bias"]
    assert config.num_hidden_layers == 1
    assert config.num_key_value_heads == KINDS[kind]["kv_heads"]
    assert config.head_dim == HIDDEN // HEADS
    assert config.rope_parameters["rope_theta"] == KINDS[kind]["rope_theta"]
    assert config.rms_norm_eps == 1e-6
    head = load_head(folder, target)
    # The target's dtype, not the file's: the official code also casts to the base's dtype.
    assert head.fc.weight.dtype == torch.float32
    assert (head.fc.bias is not None) is KINDS[kind]["fc_bias"]
    head_dim = HIDDEN // HEADS
    assert head.layers[0].self_attn.k_proj.weight.shape[0] == KINDS[kind]["kv_heads"] * head_dim
    expected = 1.0 / KINDS[kind]["rope_theta"] ** (torch.arange(0, head_dim, 2) / head_dim)
    torch.testing.assert_close(head.rotary.inv_freq, expected)
    # The embedding copy in the file is not used: the head reads the target's own modules.
    assert head.embed_tokens is target.get_input_embeddings()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_published_head_drafts_what_the_same_weights_draft_in_our_format(
    tmp_path, monkeypatch, kind, dtype
) -> None:
    base = target_model(kind)
    state = official_tensors(base, KINDS[kind]["fc_bias"])
    published = tmp_path / "published"
    save_published_head(state, base.config, published, fc_bias=KINDS[kind]["fc_bias"])
    target = copy.deepcopy(base).to(dtype)
    # Through the registry, as a pair's `head: {source: local, path: ...}` loads it.
    spec = ModelSpec(name="eagle-tiny", source="local", path=str(published))
    loaded = load_head_model(spec, target, tmp_path / "cache")
    assert loaded.fc.weight.dtype == dtype
    direct = own_format_head(target, published, state)
    save_head(direct, tmp_path / "ours")
    reloaded = load_head(tmp_path / "ours", target)

    tokens = torch.tensor(PROMPT[:8])
    feats = torch.randn(8, HIDDEN, generator=torch.Generator().manual_seed(3)).to(dtype)
    want = ModelRunner(direct, "head").forward(tokens, features=feats, want_hidden=True)
    for head in (loaded, reloaded):
        got = ModelRunner(head, "head").forward(tokens, features=feats, want_hidden=True)
        torch.testing.assert_close(got.logits, want.logits, atol=0, rtol=0)
        torch.testing.assert_close(got.hidden, want.hidden, atol=0, rtol=0)

    trees = drafted_trees(monkeypatch)
    reference = runs(target, direct, trees)
    assert runs(target, loaded, trees) == reference
    assert runs(target, reloaded, trees) == reference
    # At T=0 the output is vanilla's whatever the head; the drafts are what differ by head.
    vanilla, _ = decoder_for(target, None, "vanilla", 0.0).generate(PROMPT, MAX_NEW, seed=0)
    assert all(r[3] == vanilla.tokens for r in reference[:2])
    assert sum(sum(r[4]) for r in reference[:4]) > 0  # some drafted tokens were accepted

    # The comparison has power: one published tensor changed a little drafts other trees.
    state["layers.0.post_attention_layernorm.weight"] = (
        state["layers.0.post_attention_layernorm.weight"] * 1.5
    )
    other = tmp_path / "other"
    save_published_head(state, base.config, other, fc_bias=KINDS[kind]["fc_bias"])
    assert runs(target, load_head(other, target), trees) != reference
