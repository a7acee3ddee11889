"""The command line: help everywhere, and bad input fails fast with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from specrepro import cli
from tests.conftest import DEFAULT_CONFIG, write_prompts, write_tiny_config

SUBCOMMANDS = sorted(cli.COMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: specrepro" in capsys.readouterr().out


@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input must be reported before any weights load."""
    # Imported before patching: importing harness under the patch would bind the stand-in as
    # its "original" load_model, and monkeypatch would restore the stand-in after the test.
    import specrepro.run.harness  # noqa: F401

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr("specrepro.models.loader.load_model", forbidden)
    monkeypatch.setattr("specrepro.run.harness.load_model", forbidden)


def generate_args(config: Path, prompts: Path, out: Path, **overrides: str) -> list[str]:
    args = {
        "--config": str(config),
        "--pair": "smollm2",
        "--method": "sps",
        "--prompts": str(prompts),
        "--max-new-tokens": "8",
        "--out": str(out),
    }
    args.update(overrides)
    return ["generate"] + [item for pair in args.items() for item in pair]


def run_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert cli.main(argv) == 2
    return capsys.readouterr().err


def test_unknown_method(tmp_path: Path, capsys, no_model_loading) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl")
    err = run_error(
        generate_args(DEFAULT_CONFIG, prompts, tmp_path / "o.jsonl", **{"--method": "medusa"}),
        capsys,
    )
    assert "unknown method 'medusa'" in err and "vanilla" in err and "sps" in err


def test_unknown_pair(tmp_path: Path, capsys, no_model_loading) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl")
    err = run_error(
        generate_args(DEFAULT_CONFIG, prompts, tmp_path / "o.jsonl", **{"--pair": "llama-70b"}),
        capsys,
    )
    assert "unknown pair 'llama-70b'" in err and "smollm2" in err


def test_missing_prompt_file(tmp_path: Path, capsys, no_model_loading) -> None:
    missing = tmp_path / "nope.jsonl"
    err = run_error(generate_args(DEFAULT_CONFIG, missing, tmp_path / "o.jsonl"), capsys)
    assert "nope.jsonl" in err


def test_malformed_prompt_line(tmp_path: Path, capsys, no_model_loading) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"question_id": "a", "turns": ["hi"]}\n{"question_id": "b", "turns": []}\n')
    err = run_error(generate_args(DEFAULT_CONFIG, prompts, tmp_path / "o.jsonl"), capsys)
    assert "p.jsonl:2" in err


def test_missing_dataset_file(tmp_path: Path, capsys) -> None:
    config = write_tiny_config(tmp_path, tmp_path / "no-model")
    err = run_error(
        ["prompts", "--config", str(config), "--dataset", "mtbench", "--out", str(tmp_path / "x")],
        capsys,
    )
    assert "question.jsonl" in err


def test_missing_local_model(tmp_path: Path, capsys, no_model_loading) -> None:
    config = write_tiny_config(tmp_path, tmp_path / "no-model")
    prompts = write_prompts(tmp_path / "p.jsonl")
    err = run_error(
        generate_args(config, prompts, tmp_path / "o.jsonl", **{"--pair": "tiny"}), capsys
    )
    assert "no-model" in err and "config.json" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("runs: [unclosed", "not valid YAML"),
        ("data: {dir: x}\n", "invalid at (top level)"),
        (DEFAULT_CONFIG.read_text().replace("gamma: 3", "gamma: -1"), "gamma must be a positive"),
        (
            DEFAULT_CONFIG.read_text().replace("gamma: 3", "gamma: 3\n    depth: 6"),
            "unknown parameter",
        ),
        (
            DEFAULT_CONFIG.read_text().replace(
                "methods: [vanilla, sps, eagle,", "methods: [vanilla, eagle9, eagle,"
            ),
            "eagle9",
        ),
        (DEFAULT_CONFIG.read_text().replace("dtype: float32", "dtype: float8"), "runs/dtype"),
        (DEFAULT_CONFIG.read_text().replace("eagle: [mtbench]", "eagle: [mtbnch]"), "mtbnch"),
        (
            DEFAULT_CONFIG.read_text().replace("base: ddd-cpu", "base: eagle2-cpu"),
            "sweeps.ddd.base 'eagle2-cpu' is not a DDD",
        ),
        (
            DEFAULT_CONFIG.read_text().replace("check_levels: [[3, 5]]", "check_levels: [[3, 9]]"),
            "sweeps.ddd point",
        ),
        # A dotted name would be split when the workflow passes it as a dotted path.
        (DEFAULT_CONFIG.read_text().replace("dsbd-t0p9", "dsbd-t0.9"), "has a dot"),
        # The draft-design study: its own draft's depth again, a sampling-only method at T=0,
        # an unknown dataset, and a family around a draft with explicit widths.
        (
            DEFAULT_CONFIG.read_text().replace(
                "tune_questions: {squad: 2}", "tune_questions: {squad: 10}"
            ),
            "tune_questions.squad = 10 leaves none of the 10 study",
        ),
        (
            DEFAULT_CONFIG.read_text().replace("methods: {sps: [0.0]}", "methods: {dsbd: [0.0]}"),
            "dsbd needs T > 0",
        ),
        (
            DEFAULT_CONFIG.read_text().replace("questions: {squad: 10}", "questions: {sqad: 10}"),
            "dataset 'sqad'",
        ),
        (
            DEFAULT_CONFIG.read_text().replace(
                "    num_layers: 2\n", "    num_layers: 2\n    intermediate_size: 512\n", 1
            ),
            "keep the teacher's layer shape",
        ),
        # A trained draft needs a folder to be written to; speedups need a known baseline.
        (
            DEFAULT_CONFIG.read_text().replace(
                "source: built\n      path: resources/models/smollm2-draft-2l",
                "source: hub\n      id: someone/some-draft",
            ),
            "needs the `path` it is written to",
        ),
        (DEFAULT_CONFIG.read_text().replace("baseline: vanilla", "baseline: vanila"), "vanila"),
        # A configured entry under a name the study generates would silently replace it.
        (
            DEFAULT_CONFIG.read_text().replace(
                "  sps:\n", "  sps-g2: {algorithm: sps, gamma: 7}\n  sps:\n", 1
            ),
            "methods.sps-g2 is generated",
        ),
    ],
)
def test_malformed_config(
    tmp_path: Path, capsys, no_model_loading, text: str, expected: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    prompts = write_prompts(tmp_path / "p.jsonl")
    err = run_error(generate_args(config, prompts, tmp_path / "o.jsonl"), capsys)
    assert "bad.yaml" in err and expected in err


def test_missing_config_file(tmp_path: Path, capsys) -> None:
    err = run_error(["check", "--config", str(tmp_path / "absent.yaml")], capsys)
    assert "absent.yaml" in err


def test_mismatched_tokenizers_fail_before_any_weights_load(
    tmp_path: Path, tiny_model_dir: Path, no_model_loading
) -> None:
    import shutil

    import yaml
    from transformers import AutoTokenizer

    from specrepro.config import load_config
    from specrepro.models.loader import ModelError
    from specrepro.run.harness import load_pair

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    tokenizer = AutoTokenizer.from_pretrained(other)
    tokenizer.add_tokens(["<extra-token>"])
    tokenizer.save_pretrained(other)
    config_path = write_tiny_config(tmp_path, tiny_model_dir)
    config = yaml.safe_load(config_path.read_text())
    config["models"]["registry"]["tiny-draft"]["path"] = str(other)
    config_path.write_text(yaml.safe_dump(config))
    with pytest.raises(ModelError, match="different tokenizers"):
        load_pair(load_config(config_path), "tiny", "float32", "cpu", roles=("draft",))
