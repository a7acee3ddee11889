"""The repository stands alone: no tracked file points to a folder beside the checkout or cites a
specification that is not part of it, and every relative link of the README and of the docs/
pages (and every docs/ page a comment or docstring names) resolves inside the checkout."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

# Written in two pieces so that this file does not match itself.
PARENT_FOLDER = ".." + "/shared"
OUTSIDE = re.compile(re.escape(PARENT_FOLDER) + r"|\b" + "SP" + "EC" + r"\b")
# The one allowed line: config/config.yaml's default data mirror, an optional local folder; when
# it is absent the files are downloaded and checked by sha256 (docs/data.md, its comment says so).
ALLOWED = {("config/config.yaml", f"  mirror: {PARENT_FOLDER}/data")}
# A markdown link's target (an optional title after it).
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# The markdown pages whose links must resolve.
PAGES = ["README.md", "config/README.md", *sorted(f"docs/{p.name}" for p in REPO.glob("docs/*.md"))]


def tracked_text_files() -> dict[str, str]:
    """Every tracked file that is text (UTF-8, no NUL byte), by its path in the repository."""
    if shutil.which("git") is None:
        pytest.skip("needs git to list the tracked files")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.decode(errors='replace').strip()}")
    texts = {}
    for name in filter(None, listed.stdout.decode().split("\0")):
        path = REPO / name
        if not path.is_file():
            continue  # deleted in the working tree
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        try:
            texts[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def test_no_tracked_file_points_outside_the_checkout() -> None:
    texts = tracked_text_files()
    assert "README.md" in texts
    found = [
        f"{name}:{number}: {line.strip()}"
        for name, text in texts.items()
        for number, line in enumerate(text.splitlines(), 1)
        if OUTSIDE.search(line) and (name, line) not in ALLOWED
    ]
    assert not found, "\n".join(found)


def test_the_one_allowed_exception_is_still_explained() -> None:
    # The default config's mirror line is allowed only while its comment says what it is.
    config = (REPO / "config" / "config.yaml").read_text()
    lines = config.splitlines()
    at = lines.index(next(iter(ALLOWED))[1])
    above = []
    while at > 0 and lines[at - 1].strip().startswith("#"):
        at -= 1
        above.insert(0, lines[at].strip().lstrip("# "))
    comment = " ".join(above)
    assert "optional local mirror folder" in comment
    assert "downloaded" in comment and "sha256" in comment


def without_code(text: str) -> str:
    """Markdown with its fenced blocks and inline code spans blanked out."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated heading numbered."""
    seen: dict[str, int] = {}
    found = set()
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", without_code_fences(page), re.M):
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return found


def without_code_fences(page: Path) -> str:
    return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)


def broken(target: str, page: Path) -> str | None:
    """Why a relative link target does not resolve from page, or None when it does."""
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    if not resolved.is_relative_to(REPO):
        return "points outside the checkout"
    if not resolved.exists():
        return "no such file"
    if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
        return f"no heading #{anchor} in {resolved.relative_to(REPO)}"
    return None


@pytest.mark.parametrize("name", PAGES)
def test_every_relative_link_resolves(name: str) -> None:
    page = REPO / name
    targets = LINK.findall(without_code(page.read_text()))
    assert targets or name == "config/README.md", f"{name} has no links"
    relative = [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]
    bad = {t: why for t in relative if (why := broken(t, page))}
    assert not bad, f"{name}: {bad}"


def test_every_docs_page_named_in_a_tracked_file_exists() -> None:
    # Comments and docstrings point to docs pages as plain text, e.g. docs/methods.md#dsbd.
    bad = set()
    for name, text in tracked_text_files().items():
        for page, anchor in re.findall(r"\bdocs/([\w-]+\.md)(?:#([\w-]+))?", text):
            why = broken(f"{page}#{anchor}" if anchor else page, REPO / "docs" / "index")
            if why:
                bad.add(f"{name}: docs/{page}{'#' + anchor if anchor else ''}: {why}")
    assert not bad, "\n".join(sorted(bad))
