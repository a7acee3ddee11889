"""Hub models in the local cache: download one before any GPU job, and name the commit a cached
model resolved to (its provenance).

Everything goes through huggingface_hub, so its environment variables apply (HF_HOME,
HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN). transformers 5 no longer records the commit on the
config (`_commit_hash`); the cache layout does: `models--ORG--NAME/refs/REVISION` holds the
commit and `snapshots/COMMIT/` the files.
"""

from __future__ import annotations

import re
from pathlib import Path

from specrepro.models.loader import ModelError

COMMIT = re.compile(r"[0-9a-f]{40}")
# Formats transformers never reads for a PyTorch model: skipped so a download does not fetch
# TensorFlow, Flax, ONNX or the original consolidated checkpoints beside the weights we load.
IGNORED = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.tflite", "original/*", "onnx/*"]


def cached_commit(model_id: str, revision: str | None) -> str | None:
    """The commit `revision` (default main) of a hub model resolves to in the local cache, read
    from the cache alone; None when the model is not cached."""
    from huggingface_hub import try_to_load_from_cache

    # config.json is the file every model and head has and from_pretrained reads first.
    path = try_to_load_from_cache(model_id, "config.json", revision=revision)
    if not isinstance(path, str):  # None (not cached) or the "known missing" marker
        return None
    commit = Path(path).parent.name
    return commit if COMMIT.fullmatch(commit) else None


def one_weight_format(files: list[str]) -> list[str]:
    """Patterns to skip besides IGNORED: a repository that ships safetensors weights has the
    same weights as PyTorch pickles (`*.bin`, `*.pt`) too, often; transformers reads the
    safetensors, so the pickles are not fetched."""
    if any(f.endswith(".safetensors") for f in files):
        return ["*.bin", "*.pt", "*.pth"]
    return []


def download_model(model_id: str, revision: str | None) -> dict:
    """Bring a hub model into the local cache (nothing is fetched when it is already there and
    HF_HUB_OFFLINE=1), one weight format only; returns {"model", "revision", "commit",
    "path"}."""
    from huggingface_hub import HfApi, is_offline_mode, snapshot_download

    offline = is_offline_mode()
    try:
        files = [] if offline else HfApi().list_repo_files(model_id, revision=revision)
        path = snapshot_download(
            model_id,
            revision=revision,
            ignore_patterns=IGNORED + one_weight_format(files),
            local_files_only=offline,
        )
    except Exception as err:  # network, auth, missing repo or revision, not cached offline
        note = " (HF_HUB_OFFLINE=1 is set)" if offline else ""
        raise ModelError(f"cannot download {model_id}@{revision or 'main'}{note}: {err}") from err
    folder = Path(path)
    commit = folder.name
    if not COMMIT.fullmatch(commit):
        raise ModelError(f"{model_id}: the snapshot folder {folder} is not named by a commit")
    if not (folder / "config.json").exists():
        raise ModelError(f"{model_id}@{commit}: the snapshot {folder} has no config.json")
    return {"model": model_id, "revision": revision, "commit": commit, "path": str(folder)}
