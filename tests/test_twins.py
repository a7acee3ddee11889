"""Toy-scale twins of the paper configs: every hub model resolves offline from the twin cache
under its own id and commit, loads with its family's class, pairs share their tokenizer, heads
load over their targets, shapes keep the paper's relations, and the overlay makes a valid
smoke-scale config."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import yaml
from transformers import LlamaForCausalLM, OPTForCausalLM

from specrepro import cli
from specrepro.config import validate_config
from specrepro.models.eagle_head import load_head
from specrepro.models.hub import cached_commit, download_model
from specrepro.models.loader import ModelError, ModelSpec, load_model, load_tokenizer
from specrepro.models.twins import build_twins, corpus_texts, merged, plan_twins
from specrepro.prompting import encode
from specrepro.run.harness import load_pair

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIGS = ("paper_dsbd", "paper_ddd", "paper_draft_design")


def paper_config(stem: str) -> dict:
    return yaml.safe_load((REPO / "config" / f"{stem}.yaml").read_text())


@pytest.fixture(scope="module")
def texts(data_mirror: Path) -> list[str]:
    return corpus_texts(data_mirror)


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> dict[str, Path]:
    """Each paper config's twins, built once for the module: stem -> OUT."""
    outs = {}
    for stem in PAPER_CONFIGS:
        out = tmp_path_factory.mktemp(stem)
        build_twins(paper_config(stem), out, f"{stem}-twin", texts)
        outs[stem] = out
    return outs


def go_offline(monkeypatch: pytest.MonkeyPatch, hub_cache: Path) -> None:
    """HF_HUB_CACHE and HF_HUB_OFFLINE for this process too: huggingface_hub reads both once,
    at import, into constants that every call reads (no cache_dir needed in our hub.py)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def built(out: Path) -> dict[str, dict]:
    return {m["model_id"]: m for m in json.loads((out / "twins.json").read_text())["models"]}


def hub_entries(config: dict) -> dict[str, dict]:
    return {n: e for n, e in config["models"]["registry"].items() if e["source"] == "hub"}


def heads_of(config: dict) -> set[str]:
    return {p["head"] for p in config["pairs"].values() if "head" in p}


@pytest.mark.parametrize("stem", PAPER_CONFIGS)
def test_every_hub_model_resolves_offline_at_its_twin_commit(
    stem: str, twins: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    go_offline(monkeypatch, twins[stem] / "hub")
    records = built(twins[stem])
    for name, entry in hub_entries(paper_config(stem)).items():
        marker = download_model(entry["id"], entry.get("revision"))
        commit = records[entry["id"]]["commit"]
        assert marker["commit"] == commit, name
        assert cached_commit(entry["id"], entry.get("revision")) == commit
        assert (Path(marker["path"]) / "config.json").exists()
    assert cached_commit("org/not-a-twin", None) is None


@pytest.mark.parametrize("stem", PAPER_CONFIGS)
def test_models_load_with_their_family_class_and_heads_over_their_targets(
    stem: str, twins: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    go_offline(monkeypatch, twins[stem] / "hub")
    config = paper_config(stem)
    heads = heads_of(config)
    loaded = {}
    for name, entry in hub_entries(config).items():
        if name in heads:
            continue
        model, tokenizer = load_model(
            ModelSpec.from_config(name, entry), "float32", "cpu", tmp_path
        )
        family = OPTForCausalLM if entry["id"].startswith("facebook/opt") else LlamaForCausalLM
        assert type(model) is family, name
        assert model.config.vocab_size >= len(tokenizer)
        loaded[name] = model
    for pair in config["pairs"].values():
        if "head" in pair:
            target = loaded[pair["target"]]
            folder = download_model(config["models"]["registry"][pair["head"]]["id"], None)
            head = load_head(Path(folder["path"]), target)
            assert head.config.hidden_size == target.config.hidden_size
            assert head.config.vocab_size == target.config.vocab_size


@pytest.mark.parametrize("stem", PAPER_CONFIGS)
def test_target_and_draft_share_the_tokenizer_exactly(
    stem: str, twins: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    go_offline(monkeypatch, twins[stem] / "hub")
    config = paper_config(stem)
    registry = config["models"]["registry"]
    records = built(twins[stem])
    for name, pair in config["pairs"].items():
        target = load_tokenizer(ModelSpec.from_config("t", registry[pair["target"]]), tmp_path)
        for role in ("draft", "head"):
            if role in pair:
                entry = registry[pair[role]]
                if role == "draft":
                    draft = load_tokenizer(ModelSpec.from_config("d", entry), tmp_path)
                    assert draft.get_vocab() == target.get_vocab(), name
                twin = records[entry["id"]]["twin"]
                assert twin["vocab"] == records[registry[pair["target"]]["id"]]["twin"]["vocab"]


def test_llama_and_opt_tokenizers_keep_their_families_conventions(
    twins: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    go_offline(monkeypatch, twins["paper_dsbd"] / "hub")
    config = paper_config("paper_dsbd")
    registry = config["models"]["registry"]
    llama = load_tokenizer(ModelSpec.from_config("l", registry["llama2-13b"]), tmp_path)
    opt = load_tokenizer(ModelSpec.from_config("o", registry["opt-13b"]), tmp_path)
    assert (llama.unk_token_id, llama.bos_token_id, llama.eos_token_id) == (0, 1, 2)
    assert (opt.pad_token_id, opt.bos_token_id, opt.eos_token_id) == (1, 2, 2)
    assert llama("hi")["input_ids"][0] == 1 and opt("hi")["input_ids"][0] == 2
    assert llama.get_vocab() != opt.get_vocab()
    text = "Naïve café — 東京 🙂 SELECT * FROM t;\n\tend"  # byte level: any text round-trips
    for tokenizer in (llama, opt):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    # The special-token strings in FastChat's prompts are read as the tokens, as LLaMA's are.
    assert llama("a</s>b", add_special_tokens=False)["input_ids"].count(2) == 1


def test_the_paper_conversations_encode_with_the_twin_tokenizers(
    twins: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    go_offline(monkeypatch, twins["paper_ddd"] / "hub")
    config = paper_config("paper_ddd")
    registry = config["models"]["registry"]
    messages = [{"role": "user", "content": "Write a haiku about the sea."}]
    for pair in config["pairs"].values():
        tokenizer = load_tokenizer(ModelSpec.from_config("t", registry[pair["target"]]), tmp_path)
        ids = encode(tokenizer, messages, pair["conversation"])
        assert ids[0] == tokenizer.bos_token_id
        assert "haiku about the sea" in tokenizer.decode(ids)
    # LLaMA-2-Chat ships a chat template (so does its twin); Vicuna v1.3 has none.
    chat = load_tokenizer(ModelSpec.from_config("c", registry["llama2-chat-7b"]), tmp_path)
    vicuna = load_tokenizer(ModelSpec.from_config("v", registry["vicuna-7b"]), tmp_path)
    assert "[INST] Write a haiku" in chat.decode(encode(chat, messages, "chat_template"))
    assert not vicuna.chat_template


def test_a_twin_pair_agrees_often_with_peaked_distributions(
    twins: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    go_offline(monkeypatch, twins["paper_dsbd"] / "hub")
    config = merged(paper_config("paper_dsbd"), {"runs": {"device": "cpu"}})
    for pair in ("llama2-13b", "opt-13b"):
        loaded = load_pair(config, pair, "float32", "cpu", roles=("draft",))
        vocab = len(loaded.tokenizer)  # the data's size (the tiny test mirror's is smaller)
        ids = torch.randint(4, vocab, (1, 48), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            target = loaded.target(ids).logits[0].softmax(-1)
            draft = loaded.draft(ids).logits[0].softmax(-1)
        agree = (target.argmax(-1) == draft.argmax(-1)).float().mean().item()
        assert 0.3 < agree < 0.95, pair  # speculation accepts some tokens and rejects others
        assert 0.2 < target.max(-1).values.mean().item() < 0.9, pair


def test_an_eagle_head_loads_through_the_harness_and_agrees_with_its_target(
    twins: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    go_offline(monkeypatch, twins["paper_ddd"] / "hub")
    config = paper_config("paper_ddd")
    loaded = load_pair(config, "llama2-chat-7b", "float32", "cpu", roles=("head",))
    vocab = len(loaded.tokenizer)
    ids = torch.randint(4, vocab, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = loaded.target(ids, output_hidden_states=True)
        n = ids.shape[1] - 1
        head = loaded.head(ids[:, 1:], out.hidden_states[-1][:, :-1], torch.arange(n)[None], None,
                           logits_to_keep=n)  # fmt: skip
    # The head's guess of token i+2 from feature i and token i+1, against the target's at i+1.
    agree = (head.logits[0].argmax(-1) == out.logits[0, 1:].argmax(-1)).float().mean().item()
    assert 0.5 < agree < 1.0
    assert loaded.fingerprints["head"].startswith("hub:yuhuili/EAGLE-llama2-chat-7B@")


def test_wide_twins_are_wider_and_shallower_than_the_deep_one(twins: dict[str, Path]) -> None:
    records = built(twins["paper_draft_design"])
    deep = records["princeton-nlp/Sheared-LLaMA-1.3B"]["twin"]
    target = records["meta-llama/Llama-2-13b-hf"]["twin"]
    assert target["hidden"] > deep["hidden"] and target["layers"] > deep["layers"]
    for size in ("1.3B", "796M", "543M", "290M"):
        wide = records[f"minghaoyan/Wide-Sheared-LLaMA-{size}"]["twin"]
        assert wide["hidden"] > deep["hidden"] and wide["layers"] < deep["layers"], size
    tiny = records["TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T"]["twin"]
    assert tiny["kv_heads"] < tiny["heads"]  # GQA kept


def snapshot_hashes(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def test_building_twice_writes_the_same_bytes(
    twins: dict[str, Path], tmp_path: Path, data_mirror: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["twins", "--configfile", str(REPO / "config" / "paper_dsbd.yaml")]
    args += ["--out", str(tmp_path / "twin"), "--mirror", str(data_mirror)]
    assert cli.main(args) == 0
    first = snapshot_hashes(tmp_path / "twin")
    assert cli.main(args) == 0
    assert snapshot_hashes(tmp_path / "twin") == first
    printed = capsys.readouterr().out
    assert "HF_HUB_OFFLINE=1 snakemake --configfile" in printed
    assert f"{tmp_path / 'twin' / 'overlay.yaml'}" in printed
    # The module's build of the same config (same data) has the same commits.
    commits = {m: r["commit"] for m, r in built(tmp_path / "twin").items()}
    assert commits == {m: r["commit"] for m, r in built(twins["paper_dsbd"]).items()}


def test_an_unknown_hub_id_needs_a_twin_entry(tmp_path: Path, texts: list[str]) -> None:
    config = paper_config("paper_dsbd")
    config["models"]["registry"]["llama-68m"]["id"] = "someone/my-draft"
    with pytest.raises(ModelError, match=r"'llama-68m'.*someone/my-draft.*twin:"):
        plan_twins(config)
    config["models"]["registry"]["llama-68m"]["twin"] = {"family": "llama", "layers": 4,
                                                         "hidden": 1024, "heads": 16}  # fmt: skip
    (plan,) = [p for p in plan_twins(config) if p.model_id == "someone/my-draft"]
    assert plan.real.layers == 4 and plan.real.hidden == 1024


@pytest.mark.parametrize("stem", PAPER_CONFIGS)
def test_the_overlay_makes_a_valid_smoke_config(stem: str, twins: dict[str, Path]) -> None:
    overlay = yaml.safe_load((twins[stem] / "overlay.yaml").read_text())
    config = merged(paper_config(stem), overlay)
    assert config["run"] == f"{stem}-twin"
    assert config["models"]["hub_cache"] == str((twins[stem] / "hub").resolve())
    assert config["runs"]["device"] == "cpu" and config["runs"]["dtype"] == "float16"
    assert all(d["n"] == 2 and d["max_new_tokens"] <= 8 for d in config["datasets"].values())
    study = config.get("studies", {}).get("draft_design")
    if study:
        for dataset, tune in study["tune_questions"].items():
            assert tune < study["questions"][dataset] <= config["datasets"][dataset]["n"]
        assert study["latency"]["paper_scale"] is False
    validate_config(config, source=f"{stem} + twin overlay")
