"""Hub models from a local hub cache laid out like huggingface_hub's, offline: the recorded
provenance names the snapshot's commit, and `download-model` writes its marker without network."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from specrepro import cli
from specrepro.models.hub import cached_commit, download_model
from specrepro.models.loader import ModelError, ModelSpec, fingerprint, load_model
from tests.conftest import tiny_llama

REPO = "org/tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<eos>": 0, "<unk>": 1} | {f"w{i}": i for i in range(2, 16)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline hub cache holding org/tiny: refs/main -> COMMIT, and a tag v1 -> OTHER."""
    cache = tmp_path / "hub"
    repo = cache / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "refs" / "v1").write_text(OTHER)
    model = tiny_llama(vocab_size=16, seed=4)
    for commit in (COMMIT, OTHER):
        model.save_pretrained(repo / "snapshots" / commit)
        tiny_tokenizer().save_pretrained(repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads both variables once, at import: set what it read.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_the_commit_is_read_from_the_cache(hub_cache: Path) -> None:
    assert cached_commit(REPO, None) == COMMIT
    assert cached_commit(REPO, "main") == COMMIT
    assert cached_commit(REPO, "v1") == OTHER
    assert cached_commit(REPO, OTHER) == OTHER
    assert cached_commit("org/absent", None) is None


def test_a_hub_model_loads_offline_and_records_its_commit(hub_cache: Path, tmp_path) -> None:
    for revision, commit in ((None, COMMIT), ("v1", OTHER)):
        spec = ModelSpec(name="tiny", source="hub", id=REPO, revision=revision)
        model, tokenizer = load_model(spec, "float32", "cpu", tmp_path)
        assert tokenizer.encode("w3 w4") == [3, 4]
        assert model.config.vocab_size == 16
        logits = model(torch.tensor([[3, 4]])).logits
        assert logits.shape == (1, 2, 16) and torch.isfinite(logits).all()
        assert fingerprint(spec, model, tmp_path) == f"hub:{REPO}@{commit}"


def test_an_uncached_model_stays_unresolved_unless_pinned(hub_cache: Path, tmp_path) -> None:
    model = tiny_llama(vocab_size=16)
    spec = ModelSpec(name="x", source="hub", id="org/absent")
    assert fingerprint(spec, model, tmp_path) == "hub:org/absent@unresolved"
    pinned = ModelSpec(name="x", source="hub", id="org/absent", revision=OTHER)
    assert fingerprint(pinned, model, tmp_path) == f"hub:org/absent@{OTHER}"


def test_download_model_finds_a_cached_model_offline(hub_cache: Path) -> None:
    marker = download_model(REPO, None)
    snapshot = hub_cache / "models--org--tiny" / "snapshots" / COMMIT
    assert marker == {"model": REPO, "revision": None, "commit": COMMIT, "path": str(snapshot)}
    assert download_model(REPO, "v1")["commit"] == OTHER
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE=1"):
        download_model("org/absent", None)


def test_the_download_model_command_writes_the_marker(hub_cache: Path, tmp_path, capsys) -> None:
    out = tmp_path / "markers" / "tiny.json"
    assert cli.main(["download-model", "--model", REPO, "--revision", "v1", "--out", str(out)]) == 0
    marker = json.loads(out.read_text())
    assert marker["commit"] == OTHER and marker["revision"] == "v1"
    assert Path(marker["path"]).name == OTHER
    missing = tmp_path / "absent.json"
    assert cli.main(["download-model", "--model", "org/absent", "--out", str(missing)]) == 2
    assert not missing.exists()
    assert "cannot download org/absent" in capsys.readouterr().err


def test_a_repository_with_safetensors_is_fetched_without_its_pickles(monkeypatch) -> None:
    import huggingface_hub

    from specrepro.models import hub

    assert hub.one_weight_format(["config.json", "model.bin"]) == []
    seen = {}

    def snapshot(model_id, revision=None, ignore_patterns=(), local_files_only=False):
        seen["ignored"] = list(ignore_patterns)
        raise OSError("no network in this test")

    class Api:
        def list_repo_files(self, model_id, revision=None):
            return ["config.json", "model.safetensors", "pytorch_model.bin"]

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    with pytest.raises(hub.ModelError, match="no network in this test"):
        hub.download_model("org/model", None)
    assert "*.bin" in seen["ignored"] and "*.h5" in seen["ignored"]
