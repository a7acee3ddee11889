"""A pair's rules, checked from its models' config and tokenizer files before any weights load
(docs/extending.md#your-own-pair-of-models): the draft has the target's vocabulary, every model
attends fully (no sliding window or chunks), and a head is an EAGLE-1/2 or EAGLE-3 head of the
target's shapes. `specrepro check` runs these; loading a pair enforces the same rules again."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig, PreTrainedTokenizerBase

from specrepro.engine.kvcache import sliding_window_layers
from specrepro.models.eagle3_head import fused_layers
from specrepro.models.eagle_head import is_eagle3_config
from specrepro.models.loader import ModelError, ModelSpec, converted_dir, load_tokenizer


def check_pair(pair_name: str, specs: dict[str, ModelSpec], cache_root: Path) -> list[str]:
    """Check the pair whose models are `specs` ({"target": ..., "draft": ..., "head": ...},
    only the roles its methods need). Raises ModelError naming the pair and the model when a
    rule is broken; returns what could not be checked yet (a model the DAG still has to build
    or download), one line each."""
    pending: list[str] = []
    folders = {role: _folder(spec, cache_root, pending) for role, spec in specs.items()}
    configs = {}
    for role in ("target", "draft"):
        if folders.get(role) is None:
            continue
        config = AutoConfig.from_pretrained(folders[role])
        reasons = sliding_window_layers(config)
        if reasons:
            raise ModelError(
                f"pair {pair_name!r}: {role} {specs[role].name!r} does not attend fully "
                f"({'; '.join(reasons)}); the engine's cache keeps every position"
            )
        configs[role] = config.get_text_config()
    if folders.get("target") and folders.get("draft"):
        target_tokenizer = load_tokenizer(specs["target"], cache_root)
        check_vocabulary(pair_name, specs["draft"], target_tokenizer, specs["target"], cache_root)
    if folders.get("head") is not None:
        _check_head(pair_name, specs["head"], Path(folders["head"]), configs.get("target"))
    return pending


def check_vocabulary(
    pair_name: str,
    draft: ModelSpec,
    target_tokenizer: PreTrainedTokenizerBase,
    target: ModelSpec,
    cache_root: Path,
) -> None:
    """ModelError unless the draft's tokenizer has the target's vocabulary (token to id)."""
    if load_tokenizer(draft, cache_root).get_vocab() != target_tokenizer.get_vocab():
        raise ModelError(
            f"pair {pair_name!r}: draft {draft.name!r} and target {target.name!r} use "
            "different tokenizers (one vocabulary is needed)"
        )


def _folder(spec: ModelSpec, cache_root: Path, pending: list[str]) -> str | None:
    """The folder (or hub id, when cached) to read the model's files from; None, with a line in
    `pending`, when they are not there yet."""
    if spec.source in ("local", "built"):
        folder = Path(spec.path)  # type: ignore[arg-type]
        if (folder / "config.json").is_file():
            return str(folder)
        if spec.source == "built":
            pending.append(f"{spec.name}: built by the DAG, checked when it loads")
            return None
        raise ModelError(f"model {spec.name!r}: no config.json in {folder}")
    if spec.source == "hub":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec.id, "config.json", revision=spec.revision)
        if isinstance(cached, str):
            return str(Path(cached).parent)
        pending.append(f"{spec.name}: {spec.id} not downloaded yet, checked when it loads")
        return None
    converted = converted_dir(spec, cache_root)
    if (converted / "config.json").is_file():
        return str(converted)
    pending.append(f"{spec.name}: GGUF not converted yet, checked when it is")
    return None


def _check_head(pair_name: str, spec: ModelSpec, folder: Path, target: object | None) -> None:
    where = f"pair {pair_name!r}: head {spec.name!r}"
    raw = json.loads((folder / "config.json").read_text())
    eagle3 = is_eagle3_config(raw)
    if raw.get("num_hidden_layers", 1) != 1:
        raise ModelError(
            f"{where}: num_hidden_layers {raw['num_hidden_layers']}; an EAGLE head has one "
            "decoder layer"
        )
    if target is None:
        return
    wanted = {"vocab_size": "vocab_size", "hidden_size": "hidden_size"}
    if eagle3 and "target_hidden_size" in raw:
        wanted["target_hidden_size"] = "hidden_size"
    for key, target_key in wanted.items():
        if raw.get(key) != getattr(target, target_key):
            raise ModelError(
                f"{where}: {key} {raw.get(key)} does not match the target's {target_key} "
                f"{getattr(target, target_key)}"
            )
    if eagle3:
        try:
            fused_layers(target.num_hidden_layers)
        except ModelError as err:
            raise ModelError(f"{where}: {err}") from None
