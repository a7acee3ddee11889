"""Twins: the hub cache."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable
from pathlib import Path


def snapshot_commit(model_id: str, folder: Path) -> str:
    """A 40-hex commit named by the snapshot's content (the same files, the same commit)."""
    digest = hashlib.sha1(f"specrepro-twin\n{model_id}\n".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        digest.update(f"{name}\n{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def publish_snapshot(hub_cache: Path, model_id: str, staged: Path, refs: Iterable[str]) -> Path:
    """Move a staged folder into the cache as `snapshots/COMMIT` and point `refs/main` (and any
    branch or tag names in `refs`) at it; earlier twin snapshots of the id are removed. Plain
    files, not blob symlinks: huggingface_hub reads either (it copies where links fail)."""
    from huggingface_hub.file_download import repo_folder_name

    commit = snapshot_commit(model_id, staged)
    repo = hub_cache / repo_folder_name(repo_id=model_id, repo_type="model")
    snapshots = repo / "snapshots"
    if snapshots.exists():
        for old in snapshots.iterdir():
            shutil.rmtree(old)
    snapshots.mkdir(parents=True, exist_ok=True)
    shutil.copytree(staged, snapshots / commit)
    (repo / "refs").mkdir(exist_ok=True)
    for ref in {"main", *refs}:
        path = repo / "refs" / ref
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(commit)  # no newline, as huggingface_hub writes it
    return snapshots / commit


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
