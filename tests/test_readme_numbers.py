"""The README's and docs' numbers about the default run are the committed tables' and the
default config's, so they cannot go stale silently."""

from __future__ import annotations

import re

import yaml

from tests.conftest import DEFAULT_CONFIG, REPO

TABLES = REPO / "figures" / "default" / "tables"
SECTION = "## What the default run shows"


def section(path, heading: str = SECTION) -> str:
    text = path.read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end > 0 else None]


def tables_text() -> str:
    return "\n".join(p.read_text() for p in sorted(TABLES.glob("*.md")))


def test_every_ratio_and_interval_the_readme_gives_is_in_a_committed_table() -> None:
    tables = tables_text()
    for page in (REPO / "README.md", REPO / "docs" / "outputs.md"):
        text = section(page)
        # "1.22x [1.04, 1.39]", "0.97x", "[0.91, 1.05]": each number as the tables print it.
        numbers = re.findall(r"(\d+\.\d+)x", text)
        numbers += [n for pair in re.findall(r"\[(-?\d+\.\d+), (-?\d+\.\d+)\]", text) for n in pair]
        assert numbers, f"{page.name}: no numbers found in {SECTION!r}"
        missing = [n for n in numbers if n not in tables]
        assert not missing, f"{page.name}: {missing} appear in no table under {TABLES}"


def test_the_question_counts_the_readme_gives_are_the_configs() -> None:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    counts = {entry["n"] for entry in config["datasets"].values()}
    text = section(REPO / "README.md")
    for n in re.findall(r"(\d+) questions per\s+dataset", text):
        assert int(n) in counts, (n, counts)
