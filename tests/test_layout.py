"""The library's rooms stay small enough to read in one sitting."""

from __future__ import annotations

from tests.conftest import REPO

# The one module allowed past the limit: every figure of the report, one function each.
LONG_ON_PURPOSE = {"report/figures.py"}
MAX_LINES = 420


def test_no_module_is_too_long_to_read_in_one_sitting() -> None:
    package = REPO / "src" / "specrepro"
    lengths = {
        path.relative_to(package).as_posix(): len(path.read_text().splitlines())
        for path in package.rglob("*.py")
    }
    too_long = {
        name: n for name, n in lengths.items() if n > MAX_LINES and name not in LONG_ON_PURPOSE
    }
    assert not too_long


def test_the_packages_show_the_architecture() -> None:
    """Loading apart from training, the run path in one package, the claims and the study as
    packages: no flat `claim_*` / `draft_design_*` modules come back."""
    package = REPO / "src" / "specrepro"
    for folder in ("run", "training", "report/claims", "report/draft_design"):
        assert (package / folder / "__init__.py").is_file(), folder
    flat = [p.name for p in (package / "report").glob("*.py")]
    assert not [n for n in flat if n.startswith(("claim_", "draft_design"))]
    training = {p.stem for p in (package / "training").glob("*.py")} - {"__init__"}
    assert not training & {p.stem for p in (package / "models").glob("*.py")}
