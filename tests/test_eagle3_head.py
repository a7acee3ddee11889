"""EAGLE-3 heads: the target's fused layers, the published format, the official head's math,
and every EAGLE-family method exact at T=0 and sampling the target's law at T>0 with one.

The layout and the math are read off the reference code (SafeAILab/EAGLE eagle/model/cnets.py,
modeling_llama_kv.py, ea_model.py) and a published config (eagle/traineagle3/config.json):
the target's hidden states entering decoder layers 2, L // 2 and L - 3, concatenated; fc without
bias; a decoder layer normalising the embedding and the feature apart and attending over both
(q/k/v read 2 x hidden), the feature as its residual; its own norm and lm_head over the draft
vocabulary, draft id i meaning target id i + d2t[i]. The reference computation below is written
from that reading with plain tensor operations, apart from the module under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from specrepro.engine.runner import ModelRunner
from specrepro.models.eagle3_head import (
    Eagle3Head,
    build_eagle3_head,
    eagle3_config_for,
    fused_layers,
    save_eagle3_head,
)
from specrepro.models.eagle_head import load_head, load_head_model
from specrepro.models.loader import ModelError, ModelSpec
from tests.conftest import tiny_llama
from tests.helpers import decoder_for
from tests.test_sps import PROMPT, VOCAB, chi_square_p
from tests.test_tree import (
    N_SAMPLES,
    TREE_METHODS,
    exact_three_token_distribution,
    sampled_counts,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAYERS = 8  # fused layers 2, 4 and 5
HIDDEN = 32
DRAFT_IDS = [0, 1, 2, 4, 5, 7]  # the draft vocabulary: target ids 3 and 6 are never drafted


@pytest.fixture(scope="module")
def target() -> torch.nn.Module:
    return tiny_llama(vocab_size=VOCAB, seed=0, layers=LAYERS, hidden=HIDDEN)


def official_tensors(target: torch.nn.Module, seed: int = 5) -> dict[str, torch.Tensor]:
    """An EAGLE-3 head's tensors under the published names, as a published checkpoint holds
    them (embed_tokens.weight, d2t and t2d included)."""
    g = torch.Generator().manual_seed(seed)
    config = target.config
    head_dim = HIDDEN // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    inner = config.intermediate_size

    def weight(rows: int, cols: int, gain: float = 1.0) -> torch.Tensor:
        return gain * torch.randn(rows, cols, generator=g) / cols**0.5

    def norm() -> torch.Tensor:
        return 1.0 + 0.1 * torch.randn(HIDDEN, generator=g)

    ids = torch.tensor(DRAFT_IDS)
    t2d = torch.zeros(VOCAB, dtype=torch.bool)
    t2d[ids] = True
    return {
        "embed_tokens.weight": target.get_input_embeddings().weight.detach().clone(),
        "fc.weight": weight(HIDDEN, 3 * HIDDEN),
        "midlayer.self_attn.q_proj.weight": weight(HIDDEN, 2 * HIDDEN, 6.0),
        "midlayer.self_attn.k_proj.weight": weight(kv, 2 * HIDDEN, 6.0),
        "midlayer.self_attn.v_proj.weight": weight(kv, 2 * HIDDEN),
        "midlayer.self_attn.o_proj.weight": weight(HIDDEN, HIDDEN),
        "midlayer.mlp.gate_proj.weight": weight(inner, HIDDEN),
        "midlayer.mlp.up_proj.weight": weight(inner, HIDDEN),
        "midlayer.mlp.down_proj.weight": weight(HIDDEN, inner),
        "midlayer.hidden_norm.weight": norm(),
        "midlayer.input_layernorm.weight": norm(),
        "midlayer.post_attention_layernorm.weight": norm(),
        "norm.weight": norm(),
        # Peaked, so that the head's choices differ visibly between tokens.
        "lm_head.weight": weight(len(DRAFT_IDS), HIDDEN, 8.0),
        "d2t": ids - torch.arange(len(DRAFT_IDS)),
        "t2d": t2d,
    }


def published_config(target: torch.nn.Module) -> dict:
    """config.json as a published EAGLE-3 head carries it (transformers 4.28-era keys)."""
    config = target.config
    return {
        "architectures": ["LlamaForCausalLMEagle3"],
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": 512,
        "model_type": "llama",
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "num_hidden_layers": 1,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.28.1",
        "vocab_size": VOCAB,
        "draft_vocab_size": len(DRAFT_IDS),
    }


def write_published(folder: Path, target: torch.nn.Module, state: dict) -> Path:
    """A head folder as the hub serves the EAGLE3-* heads: pytorch_model.bin in float16 (the
    vocabulary map keeps its integer and bool types) and config.json."""
    folder.mkdir(parents=True)
    tensors = {k: v if k in ("d2t", "t2d") else v.to(torch.float16) for k, v in state.items()}
    torch.save(tensors, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(published_config(target), indent=2))
    return folder


def reference_logits(
    state: dict, target: torch.nn.Module, ids: list[int], fused: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official head's forward over a fresh cache, from the tensors (as float16 stored):
    next-token logits over the target's vocabulary (-inf outside the draft's) and its output."""
    w = {k: v.to(torch.float16).float() if v.is_floating_point() else v for k, v in state.items()}
    config = target.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim, eps = HIDDEN // heads, config.rms_norm_eps
    n = len(ids)

    def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    def rope(x: torch.Tensor) -> torch.Tensor:  # [heads, n, head_dim]
        inv = 1.0 / 10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim)
        angles = torch.arange(n).float()[:, None] * inv[None]
        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
        half = torch.cat([-x[..., head_dim // 2 :], x[..., : head_dim // 2]], -1)
        return x * cos + half * sin

    embeds = target.get_input_embeddings().weight.detach()[ids]
    feature = fused @ w["fc.weight"].T
    both = torch.cat(
        [rms(embeds, w["midlayer.input_layernorm.weight"]),
         rms(feature, w["midlayer.hidden_norm.weight"])], -1
    )  # fmt: skip
    q = (both @ w["midlayer.self_attn.q_proj.weight"].T).view(n, heads, head_dim).transpose(0, 1)
    k = (both @ w["midlayer.self_attn.k_proj.weight"].T).view(n, kv_heads, head_dim).transpose(0, 1)
    v = (both @ w["midlayer.self_attn.v_proj.weight"].T).view(n, kv_heads, head_dim).transpose(0, 1)
    q, k = rope(q), rope(k)
    k = k.repeat_interleave(heads // kv_heads, 0)
    v = v.repeat_interleave(heads // kv_heads, 0)
    scores = q @ k.transpose(1, 2) / head_dim**0.5
    scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    attended = (scores.softmax(-1) @ v).transpose(0, 1).reshape(n, HIDDEN)
    x = feature + attended @ w["midlayer.self_attn.o_proj.weight"].T
    inner = rms(x, w["midlayer.post_attention_layernorm.weight"])
    gate = torch.nn.functional.silu(inner @ w["midlayer.mlp.gate_proj.weight"].T)
    x = (
        x
        + (gate * (inner @ w["midlayer.mlp.up_proj.weight"].T))
        @ w["midlayer.mlp.down_proj.weight"].T
    )
    draft = rms(x, w["norm.weight"]) @ w["lm_head.weight"].T
    full = torch.full((n, VOCAB), float("-inf"))
    full[:, torch.arange(len(DRAFT_IDS)) + w["d2t"]] = draft
    return full, x


def fused_states(target: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    """The inputs of the target's decoder layers 2, L // 2 and L - 3, caught by hooks."""
    caught: dict[int, torch.Tensor] = {}
    hooks = [
        target.model.layers[i].register_forward_pre_hook(
            lambda module, args, kwargs, i=i: caught.__setitem__(i, args[0][0].detach()),
            with_kwargs=True,
        )
        for i in fused_layers(LAYERS)
    ]
    try:
        with torch.no_grad():
            target(torch.tensor([ids]))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat([caught[i] for i in fused_layers(LAYERS)], -1)


@pytest.fixture(scope="module")
def head3(target, tmp_path_factory) -> Eagle3Head:
    folder = write_published(
        tmp_path_factory.mktemp("eagle3") / "head", target, official_tensors(target)
    )
    spec = ModelSpec(name="eagle3-tiny", source="local", path=str(folder))
    return load_head_model(spec, target, folder.parent / "cache")


def test_the_fused_layers_are_the_official_ones() -> None:
    assert fused_layers(32) == (2, 16, 29)  # LLaMA-3.1-8B, as the reference code picks them
    assert fused_layers(30) == (2, 15, 27)  # SmolLM2-135M
    with pytest.raises(ModelError, match="at least 7 layers"):
        fused_layers(6)


def test_the_runner_returns_the_inputs_of_the_fused_layers(target) -> None:
    ids = [3, 1, 4, 1, 5, 7, 2, 6]
    runner = ModelRunner(target, "target")
    out = runner.forward(ids, want_hidden=True, hidden_layers=fused_layers(LAYERS))
    assert out.hidden.shape == (len(ids), 3 * HIDDEN)
    torch.testing.assert_close(out.hidden, fused_states(target, ids), atol=1e-5, rtol=1e-5)


def test_a_published_eagle3_head_computes_the_official_math(target, head3) -> None:
    assert isinstance(head3, Eagle3Head)
    assert head3.feature_layers == (2, 4, 5)
    assert head3.embed_tokens is target.get_input_embeddings()
    ids = [3, 1, 4, 1, 5, 7]
    fused = fused_states(target, [0] + ids)[:-1]  # f_t beside x_{t+1}, as the rounds feed them
    runner = ModelRunner(head3, "head")
    assert runner.vocab_size == VOCAB
    got = runner.forward(ids, features=fused, logits_from=0, want_hidden=True)
    want_logits, want_hidden = reference_logits(official_tensors(target), target, ids, fused)
    torch.testing.assert_close(got.hidden, want_hidden, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.logits, want_logits, atol=1e-4, rtol=1e-4)
    assert torch.isinf(got.logits[:, [3, 6]]).all()  # never drafted: probability exactly 0


def test_our_format_reads_back_as_the_same_head(target, head3, tmp_path) -> None:
    save_eagle3_head(head3, tmp_path / "ours")
    raw = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert raw["draft_vocab_size"] == len(DRAFT_IDS)
    assert raw["architectures"] == ["LlamaForCausalLMEagle3"]
    again = load_head(tmp_path / "ours", target)
    ids = [2, 7, 1]
    fused = torch.randn(3, 3 * HIDDEN, generator=torch.Generator().manual_seed(1))
    a = ModelRunner(head3, "a").forward(ids, features=fused, logits_from=0, want_hidden=True)
    b = ModelRunner(again, "b").forward(ids, features=fused, logits_from=0, want_hidden=True)
    torch.testing.assert_close(a.logits, b.logits, atol=0, rtol=0)
    torch.testing.assert_close(a.hidden, b.hidden, atol=0, rtol=0)


def test_a_head_built_for_a_target_reads_its_fused_layers(target) -> None:
    head = build_eagle3_head(
        eagle3_config_for(target, len(DRAFT_IDS)), target, torch.tensor(DRAFT_IDS)
    )
    assert head.fc.in_features == 3 * HIDDEN and head.lm_head.proj.out_features == len(DRAFT_IDS)
    assert set(head.head_state_dict()) == set(official_tensors(target)) - {"embed_tokens.weight"}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("midlayer.hidden_norm.weight"), "missing"),
        (lambda s: s.__setitem__("layers.0.mlp.up_proj.weight", s["fc.weight"]), "unknown"),
        (lambda s: s["t2d"].__setitem__(3, True), "t2d does not mark"),
        (lambda s: s["d2t"].__setitem__(0, 1), "onto one id twice"),
        (lambda s: s.__setitem__("fc.weight", s["fc.weight"][:, : 2 * HIDDEN]), "fusing 3"),
    ],
    ids=["missing", "unknown", "t2d", "d2t", "fc"],
)
def test_a_head_that_does_not_fit_is_refused_by_name(target, tmp_path, change, message) -> None:
    state = official_tensors(target)
    change(state)
    folder = write_published(tmp_path / "bad", target, state)
    with pytest.raises(ModelError, match=message):
        load_head(folder, target)


def test_a_target_too_shallow_for_three_layers_is_refused(tmp_path) -> None:
    shallow = tiny_llama(vocab_size=VOCAB, layers=4, hidden=HIDDEN)
    folder = write_published(tmp_path / "head", shallow, official_tensors(shallow))
    with pytest.raises(ModelError, match="4-layer target"):
        load_head(folder, shallow)


@pytest.mark.parametrize("method", sorted(TREE_METHODS))
def test_every_tree_method_with_an_eagle3_head_is_vanilla_at_t0(target, head3, method) -> None:
    vanilla = decoder_for(target, None, "vanilla", 0.0)
    gen = decoder_for(target, None, method, 0.0, head=head3, **TREE_METHODS[method])
    accepted = 0
    for prompt in (PROMPT, [5, 3, 7, 7, 1], [6, 6, 2]):
        ref, _ = vanilla.generate(prompt, 24, seed=0)
        got, _ = gen.generate(prompt, 24, seed=0)
        assert got.tokens == ref.tokens
        assert sum(got.accept_lengths) == got.new_tokens
        accepted += sum(got.extra["rounds"]["accepted"])
    assert accepted > 0  # the head's drafts were used, not only the bonus tokens


@pytest.mark.parametrize("method", ["eagle", "eagle2"])
def test_an_eagle3_head_leaves_the_target_distribution(tmp_path, method) -> None:
    # A flatter target than the others here: with its peaked one the first round's drafts are
    # accepted almost never or almost always, and the rule would go untested.
    flat = tiny_llama(vocab_size=VOCAB, seed=0, layers=LAYERS, hidden=HIDDEN)
    with torch.no_grad():
        flat.lm_head.weight.div_(8.0)
    head = load_head(write_published(tmp_path / "head", flat, official_tensors(flat)), flat)
    exact = exact_three_token_distribution(flat, 1.0)
    gen = decoder_for(flat, None, method, 1.0, head=head, **TREE_METHODS[method])
    counts, accepted = sampled_counts(gen, N_SAMPLES)
    assert chi_square_p(counts, exact) > 1e-3
    assert 0.05 * N_SAMPLES < accepted < 0.95 * N_SAMPLES


def test_an_eagle3_head_trained_on_a_corpus_learns_saves_and_stays_exact(tmp_path) -> None:
    """train_and_save with format eagle3 on a tiny target's sampled continuations: held-out
    agreement rises well above where it starts, the folder is the published format over the
    chosen draft vocabulary, and eagle2 with the trained head is vanilla at T=0 with more
    tokens accepted per round than with the untrained head."""
    import random

    from specrepro.models.vocab_subset import frequent_tokens
    from specrepro.training.teacher import CorpusConfig, generate_batch
    from specrepro.training.train_head import HeadTrainConfig, train_and_save

    vocab = 32
    target = tiny_llama(vocab_size=vocab, seed=1, layers=LAYERS, hidden=HIDDEN)
    rng = random.Random(0)
    prompts = [[rng.randrange(1, vocab) for _ in range(rng.randrange(2, 8))] for _ in range(96)]
    torch.manual_seed(0)
    corpus = CorpusConfig(gen_tokens=24, gen_temperature=0.7, top_k=4)
    samples = []
    for i in range(0, len(prompts), 16):
        samples += generate_batch(ModelRunner(target), prompts[i : i + 16], corpus, set(), pad=0)
    draft_vocab = frequent_tokens(samples, 24, vocab)
    cfg = HeadTrainConfig(steps=120, lr=3e-3, noise=0.0, unroll_steps=2, format="eagle3")
    folder = train_and_save(target, samples, cfg, tmp_path / "head", {}, draft_vocab=draft_vocab)

    log = json.loads((folder / "training_log.json").read_text())["log"]
    first, last = log[0]["holdout_top1"], log[-1]["holdout_top1"]
    assert last > first + 0.2, (first, last)
    assert all(entry["feature_loss"] == 0.0 for entry in log[1:])  # token loss only
    head = load_head(folder, target)
    assert isinstance(head, Eagle3Head)
    assert head.lm_head.token_ids.tolist() == draft_vocab.tolist()

    untrained = build_eagle3_head(eagle3_config_for(target, 24), target, draft_vocab)
    vanilla = decoder_for(target, None, "vanilla", 0.0)
    per_round = {}
    for name, candidate in (("trained", head), ("untrained", untrained)):
        gen = decoder_for(target, None, "eagle2", 0.0, head=candidate, **TREE_METHODS["eagle2"])
        tokens = rounds = 0
        for prompt in prompts[:6]:
            ref, _ = vanilla.generate(prompt, 20, seed=0)
            got, _ = gen.generate(prompt, 20, seed=0)
            assert got.tokens == ref.tokens
            tokens += got.new_tokens
            rounds += len(got.accept_lengths)
        per_round[name] = tokens / rounds
    # Measured: held-out top-1 0.03 -> 0.68; tokens per round 1.18 untrained, 2.03 trained.
    assert per_round["trained"] > per_round["untrained"] + 0.3, per_round
