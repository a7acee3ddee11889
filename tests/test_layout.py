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
