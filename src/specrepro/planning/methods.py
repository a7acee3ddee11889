"""Which methods exist and what each needs, read from their source without importing torch.

A method is a module that declares, at its top level and as literals, `NEEDS_DRAFT` (bool) and
optionally `NEEDS_HEAD`, `NEEDS_SAMPLING` and `DEPTH_ACCEPTANCE` (bools), and defines `Params`
(a dataclass with `lookahead()`) and `generate(ctx, prompt_ids, params)`. The planner and the
reports read the declarations here, from the module's source, so planning a DAG never imports
torch (the Snakefile loads this package by path, without the library); the library imports the
module itself (decoding/base.py's `get_method`).

A configured `algorithm` is a module of this package (`sps`) or a dotted module path that the
jobs can import (`my_methods.greedy`, on PYTHONPATH): a new method is one file plus its config
entry (docs/extending.md).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "specrepro.decoding"
BUILTIN_FOLDER = Path(__file__).resolve().parent.parent / "decoding"
# Declarations a method may make, with their defaults (None: required).
FLAGS: dict[str, bool | None] = {
    "NEEDS_DRAFT": None,
    "NEEDS_HEAD": False,
    "NEEDS_SAMPLING": False,
    "DEPTH_ACCEPTANCE": None,  # default: the method drafts (a draft model or a head)
}


class MethodError(ValueError):
    """Unknown method or bad method parameters."""


@dataclass(frozen=True)
class MethodSpec:
    """What a method declares: the models it loads besides the target, whether it only samples
    (T > 0), and whether its rounds accept a prefix of one drafted path, so that acceptance
    by depth is reported for it (DSBD accepts beams instead)."""

    algorithm: str
    module: str
    needs_draft: bool
    needs_head: bool
    needs_sampling: bool
    depth_acceptance: bool

    @property
    def roles(self) -> tuple[str, ...]:
        """The pair members it needs besides the target: "draft" and/or "head"."""
        return tuple(r for r, n in (("draft", self.needs_draft), ("head", self.needs_head)) if n)


def module_name(algorithm: str) -> str:
    """The importable module of a configured algorithm."""
    return algorithm if "." in algorithm else f"{PACKAGE}.{algorithm}"


def method_names() -> list[str]:
    """The methods this package ships, by name."""
    paths = BUILTIN_FOLDER.glob("*.py")
    return sorted(p.stem for p in paths if _declarations(p) is not None)


def method_spec(algorithm: str) -> MethodSpec:
    """The method's declarations; MethodError naming it when there is no such method."""
    source = _source(algorithm)
    declared = _declarations(source) if source else None
    if declared is None:
        known = ", ".join(method_names())
        if source is None:
            raise MethodError(
                f"unknown method {algorithm!r}; available: {known}, or a dotted module path "
                "importable by the jobs (PYTHONPATH) that defines a method (docs/extending.md)"
            )
        raise MethodError(
            f"{module_name(algorithm)} ({source}) is not a method: it must declare "
            "NEEDS_DRAFT = True or False at its top level and define Params and generate "
            "(docs/extending.md)"
        )
    drafts = declared["NEEDS_DRAFT"] or declared["NEEDS_HEAD"]
    depth_acceptance = declared["DEPTH_ACCEPTANCE"]
    return MethodSpec(
        algorithm=algorithm,
        module=module_name(algorithm),
        needs_draft=declared["NEEDS_DRAFT"],
        needs_head=declared["NEEDS_HEAD"],
        needs_sampling=declared["NEEDS_SAMPLING"],
        depth_acceptance=drafts if depth_acceptance is None else depth_acceptance,
    )


def needed_roles(algorithm: str) -> tuple[str, ...]:
    """The pair members a method needs besides the target: "draft" and/or "head"."""
    return method_spec(algorithm).roles


def _source(algorithm: str) -> Path | None:
    """The method's source file. A dotted path is looked up on sys.path without importing
    anything (its package may import torch; the planner must not)."""
    parts = algorithm.split(".")
    if not all(part.isidentifier() for part in parts):
        return None
    if len(parts) == 1:
        path = BUILTIN_FOLDER / f"{algorithm}.py"
        return path if path.is_file() else None
    for entry in sys.path:
        base = Path(entry or ".").joinpath(*parts)
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
    return None


def _declarations(path: Path) -> dict[str, bool | None] | None:
    """The module's declared flags, or None when it is not a method (no NEEDS_DRAFT literal,
    or no Params or generate at its top level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    values: dict[str, bool | None] = dict(FLAGS)
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in FLAGS:
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, bool):
                    values[target.id] = node.value.value
                    names.add(target.id)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names)
    if not {"NEEDS_DRAFT", "Params", "generate"} <= names:
        return None
    return values
