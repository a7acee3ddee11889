"""Shared fixtures: tiny random models built from a config, and the real default target."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
MODEL_CACHE = REPO / "resources" / "models"
# The full benchmark data: the default config's `data.mirror` (an optional local folder; the
# tests that need the full data skip without it), or this variable; point it at a missing
# folder to run the tests as on a clone without a mirror.
MIRROR_ENV = "SPECREPRO_TEST_MIRROR"


def real_mirror_path() -> Path:
    """Where the full benchmark data mirror is expected (it may not exist)."""
    if MIRROR_ENV in os.environ:
        return Path(os.environ[MIRROR_ENV])
    mirror = yaml.safe_load(DEFAULT_CONFIG.read_text())["data"]["mirror"]
    return (REPO / mirror).resolve()


def tiny_llama(
    vocab_size: int = 16, seed: int = 0, layers: int = 2, hidden: int = 32
) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    # Random init gives near-uniform logits; scale the head so distributions are peaked and the
    # draft and target disagree in a visible way.
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    return model


@pytest.fixture(scope="session")
def default_config() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


@pytest.fixture(scope="session")
def real_data_mirror() -> Path:
    """The full data mirror; skips the test where it is absent (nothing smaller would do)."""
    path = real_mirror_path()
    if not path.is_dir():
        pytest.skip(f"needs the full benchmark data: no data mirror at {path} (see {MIRROR_ENV})")
    return path


@pytest.fixture(scope="session")
def data_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real data mirror where present, else tiny files in the official formats laid out
    the same way (tests/tiny_data.py). Read-only for tests: copy before changing anything.
    Its files match the built-in manifests' hashes only when it is the real mirror."""
    from tests.tiny_data import build_tiny_mirror

    path = real_mirror_path()
    if path.is_dir():
        return path
    return build_tiny_mirror(tmp_path_factory.mktemp("tiny-mirror"))


@pytest.fixture(scope="session")
def smollm_dir(default_config: dict) -> Path:
    """The real default target, converted from its GGUF file once (cached under resources/)."""
    from specrepro.config import model_spec
    from specrepro.models.loader import resolve

    target = default_config["pairs"]["smollm2"]["target"]
    return Path(resolve(model_spec(default_config, target), MODEL_CACHE))


@pytest.fixture(scope="session")
def smollm(smollm_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm_dir, dtype=torch.float32).eval()
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm_dir: Path) -> Path:
    """A tiny random Llama with the real SmolLM2 tokenizer and chat template, saved to disk."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    model = tiny_llama(vocab_size=len(tokenizer), seed=1, hidden=32)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_tiny_config(tmp_path: Path, model_dir: Path, **overrides) -> Path:
    """A complete config whose only model is the tiny local one (pair 'tiny')."""
    config = {
        "data": {"mirror": None, "dir": str(tmp_path / "data")},
        "models": {
            "cache_dir": str(tmp_path / "models"),
            "registry": {
                "tiny": {"source": "local", "path": str(model_dir)},
                "tiny-draft": {"source": "local", "path": str(model_dir)},
            },
        },
        "pairs": {
            "tiny": {"target": "tiny", "draft": "tiny-draft", "conversation": "chat_template"}
        },
        "methods": {"vanilla": {"algorithm": "vanilla"}, "sps": {"algorithm": "sps", "gamma": 3}},
        "datasets": {"mtbench": {"n": 3, "max_new_tokens": 8}},
        "runs": {
            "pairs": ["tiny"],
            "methods": ["vanilla", "sps"],
            "datasets": ["mtbench"],
            "temperatures": [0.0],
            "seeds": [0],
            "dtype": "float32",
            "device": "cpu",
            "warmup": 0,
        },
    }
    config.update(overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_prompts(path: Path, n: int = 4, turns: int = 2) -> Path:
    import json

    with path.open("w") as f:
        for i in range(n):
            record = {
                "question_id": f"q{i}",
                "turns": [f"Question {i}, turn {t}?" for t in range(turns)],
            }
            f.write(json.dumps(record) + "\n")
    return path


def copy_workflow(root: Path) -> Path:
    """The workflow's files copied into root (the library linked), so a Snakemake run there sees
    no results of earlier runs."""
    for name in ("workflow", "config", "notebooks"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, symlinks=True)
        else:
            shutil.copy(source, root / name)
    (root / "src").symlink_to(REPO / "src")
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run faster on one intra-op thread than on several contending for the CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
