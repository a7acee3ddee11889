"""A pair's rules (docs/extending.md#your-own-pair-of-models), checked from config and tokenizer
files before any weights load: one vocabulary, full attention, an EAGLE-1/2 head of the
target's shapes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from specrepro.models.loader import ModelError, ModelSpec
from specrepro.models.pair_rules import check_pair


def local(name: str, folder: Path) -> ModelSpec:
    return ModelSpec(name=name, source="local", path=str(folder))


def copy_model(source: Path, folder: Path, **config_changes: object) -> Path:
    """The model's config and tokenizer files (no weights: the check never reads them)."""
    folder.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors"):
            shutil.copy(path, folder / path.name)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **config_changes}))
    return folder


def head_folder(folder: Path, target: Path, **changes: object) -> Path:
    config = json.loads((target / "config.json").read_text())
    folder.mkdir(parents=True)
    head = {**config, "num_hidden_layers": 1, **changes}
    (folder / "config.json").write_text(json.dumps(head))
    return folder


def test_a_pair_that_keeps_the_rules_passes(tmp_path: Path, tiny_model_dir: Path) -> None:
    draft = copy_model(tiny_model_dir, tmp_path / "draft")
    head = head_folder(tmp_path / "head", tiny_model_dir)
    specs = {
        "target": local("tiny", tiny_model_dir),
        "draft": local("draft", draft),
        "head": local("head", head),
    }
    assert check_pair("p", specs, tmp_path) == []


def test_a_model_the_dag_still_builds_is_left_for_later(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    built = ModelSpec(name="d", source="built", path=str(tmp_path / "not-yet"))
    pending = check_pair("p", {"target": local("tiny", tiny_model_dir), "draft": built}, tmp_path)
    assert pending == ["d: built by the DAG, checked when it loads"]


def test_a_draft_with_another_vocabulary_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    draft = copy_model(tiny_model_dir, tmp_path / "draft")
    tokenizer = AutoTokenizer.from_pretrained(draft)
    tokenizer.add_tokens(["<not-in-the-target>"])
    tokenizer.save_pretrained(draft)
    specs = {"target": local("tiny", tiny_model_dir), "draft": local("other", draft)}
    with pytest.raises(ModelError, match="pair 'p': draft 'other' and target 'tiny' use different"):
        check_pair("p", specs, tmp_path)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"layer_types": ["sliding_attention", "full_attention"]}, "layer_types"),
        ({"model_type": "mistral", "sliding_window": 8}, "sliding_window=8"),
    ],
)
def test_a_model_that_does_not_attend_fully_is_refused(
    tmp_path: Path, tiny_model_dir: Path, changes: dict, reason: str
) -> None:
    draft = copy_model(tiny_model_dir, tmp_path / "draft", **changes)
    specs = {"target": local("tiny", tiny_model_dir), "draft": local("windowed", draft)}
    with pytest.raises(ModelError, match=f"draft 'windowed' does not attend fully.*{reason}"):
        check_pair("p", specs, tmp_path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_hidden_layers": 3}, "num_hidden_layers 3; an EAGLE head has one"),
        ({"hidden_size": 48}, "hidden_size 48 does not match the target's hidden_size 32"),
        # An EAGLE-3 head fuses target layers 2, L // 2 and L - 3: the tiny target is too shallow.
        ({"draft_vocab_size": 8}, "EAGLE-3 head: a 2-layer target has no three distinct layers"),
    ],
)
def test_a_head_of_another_format_or_shape_is_refused(
    tmp_path: Path, tiny_model_dir: Path, changes: dict, message: str
) -> None:
    head = head_folder(tmp_path / "head", tiny_model_dir, **changes)
    specs = {"target": local("tiny", tiny_model_dir), "head": local("h", head)}
    with pytest.raises(ModelError, match=f"pair 'p': head 'h': {message}"):
        check_pair("p", specs, tmp_path)
