"""One registry of methods (planning/methods.py), read from their source: the planner, the
reports and the library agree on what each method needs, and a method outside the package is
one file plus its config entry."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from specrepro.config import ConfigError, load_config, resolve_method
from specrepro.decoding.base import get_method, make_params
from specrepro.planning import MethodError, method_names, method_spec, needed_roles
from tests.conftest import REPO

DEFAULT_CONFIG = REPO / "config" / "config.yaml"

# A complete method in a package of its own: greedy decoding, one token per target forward.
GREEDY_METHOD = '''"""next_token: one target forward per token (docs/extending.md's template)."""

from dataclasses import dataclass

from specrepro.decoding.base import DecodingContext, GenerationResult, commit
from specrepro.engine.sampling import greedy, probs_from_logits, sample

NEEDS_DRAFT = False


@dataclass
class Params:
    def lookahead(self) -> int:
        return 0


def generate(ctx: DecodingContext, prompt_ids: list[int], params: Params) -> GenerationResult:
    result = GenerationResult(tokens=[], target_forwards=0, prefill_forwards=1)
    generated: list[int] = []
    pending = list(prompt_ids)
    done = False
    while not done:
        with ctx.timer.section("verify"):
            logits = ctx.target.forward(pending, logits_from=len(pending) - 1).logits[-1]
        result.target_forwards += 1
        if ctx.temperature == 0:
            token = greedy(logits)
        else:
            token = sample(probs_from_logits(logits, ctx.temperature), ctx.generator)
        ctx.target.ensure_finite()
        done = commit(ctx, generated, [token], result)
        pending = [token]
    result.tokens = generated
    return result
'''


def write_method_package(root: Path, source: str = GREEDY_METHOD) -> str:
    """A package `my_methods` with one method module under root; returns its algorithm name."""
    package = root / "my_methods"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "greedy.py").write_text(source)
    return "my_methods.greedy"


def test_the_registry_reads_what_each_method_module_declares() -> None:
    names = method_names()
    assert {"vanilla", "sps", "eagle", "eagle2", "ddd", "ddd_async", "beam", "dsbd"} <= set(names)
    assert "base" not in names and "tree_rounds" not in names
    for name in names:
        spec, module = method_spec(name), get_method(name)
        assert spec.needs_draft == module.NEEDS_DRAFT, name
        assert spec.needs_head == getattr(module, "NEEDS_HEAD", False), name
        assert spec.needs_sampling == getattr(module, "NEEDS_SAMPLING", False), name
    assert needed_roles("sps") == ("draft",) and needed_roles("ddd_async") == ("head",)
    assert needed_roles("vanilla") == ()
    # Acceptance by depth is reported for the methods that accept a prefix of one path.
    chains = {n for n in names if method_spec(n).depth_acceptance}
    assert chains == {"sps", "eagle", "eagle2", "ddd", "ddd_async"}


def test_a_method_in_a_package_of_its_own_needs_no_other_edit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    algorithm = write_method_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = method_spec(algorithm)
    assert spec.module == algorithm and spec.roles == () and spec.depth_acceptance is False
    assert "my_methods" not in sys.modules  # found without importing it
    entries = {"methods.greedy-ext": {"algorithm": algorithm}, "runs.methods": ["greedy-ext"]}
    config = load_config(DEFAULT_CONFIG, entries)
    choice = resolve_method(config, "greedy-ext")
    assert choice.algorithm == algorithm and choice.params.lookahead() == 0
    assert get_method(algorithm).NEEDS_DRAFT is False
    assert make_params(algorithm, {}) == choice.params


def test_unknown_or_incomplete_methods_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MethodError, match=r"unknown method 'nope'; available: .*vanilla"):
        method_spec("nope")
    with pytest.raises(MethodError, match="unknown method 'absent.module'.*PYTHONPATH"):
        method_spec("absent.module")
    monkeypatch.syspath_prepend(str(tmp_path))
    incomplete = GREEDY_METHOD.replace("NEEDS_DRAFT = False", "")
    algorithm = write_method_package(tmp_path, incomplete)
    with pytest.raises(MethodError, match=r"my_methods\.greedy .* is not a method: .*NEEDS_DRAFT"):
        method_spec(algorithm)
    with pytest.raises((ConfigError, MethodError), match="is not a method"):
        load_config(DEFAULT_CONFIG, {"methods.broken": {"algorithm": algorithm}})
