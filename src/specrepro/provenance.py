"""Fingerprints that say whether two runs used the same code, prompts and model files.

A result file records them, and a partial file is resumed only when they all agree: a rerun
after a retrained draft, a changed prompt set or edited code starts over instead of appending
new records to old ones.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import specrepro

# Weight files can be tens of GB; a retrained model changes every tensor, so a few samples
# spread over each file (plus its exact size) tell two trainings apart without reading it all.
_SAMPLES_PER_FILE = 16
_SAMPLE_BYTES = 1 << 16
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def code_fingerprint() -> str:
    """sha256 over the source of the installed specrepro package (git or not)."""
    root = Path(specrepro.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def records_fingerprint(records: list[dict]) -> str:
    """sha256 of a list of JSON records in canonical form (key order does not matter)."""
    text = "\n".join(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in records)
    return hashlib.sha256(text.encode()).hexdigest()


def _sampled_file_digest(path: Path) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        if size <= _SAMPLES_PER_FILE * _SAMPLE_BYTES:
            digest.update(f.read())
        else:
            step = (size - _SAMPLE_BYTES) // (_SAMPLES_PER_FILE - 1)
            for k in range(_SAMPLES_PER_FILE):
                f.seek(k * step)
                digest.update(f.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def directory_fingerprint(directory: Path) -> str:
    """sha256 over a model folder: config and index files whole, weight files sampled."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        if path.suffix == ".json":
            part = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.name.endswith(_WEIGHT_SUFFIXES):
            part = _sampled_file_digest(path)
        else:
            continue
        digest.update(f"{path.name}:{part}\n".encode())
    return digest.hexdigest()
