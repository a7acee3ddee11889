"""Loading a pair's models once per job: the target, and the draft or head its methods need.

The rest of a run lives beside it: the Decoder (run/decoder.py), a timing group's run
(run/timing_group.py) and one question's record (run/question_run.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from specrepro.config import model_spec, resolve_pair
from specrepro.engine.stopping import eos_token_ids, token_texts
from specrepro.models.eagle_head import load_head_model
from specrepro.models.loader import (
    ModelError,
    ModelSpec,
    fingerprint,
    load_model,
    load_tokenizer,
    resolve,
)
from specrepro.models.pair_rules import check_vocabulary
from specrepro.models.vocab_subset import apply_saved_subset, subset_size
from specrepro.prompting import default_conversation
from specrepro.run.decoder import LoadedPair


def load_pair(
    config: dict,
    pair_name: str,
    dtype: str,
    device: str,
    roles: tuple[str, ...] = (),
    models: dict[str, tuple[torch.nn.Module, str]] | None = None,
) -> LoadedPair:
    """The pair's target plus the members in `roles` ("draft", "head").

    `models` ({name: (model, fingerprint)}) shares the weights of a model that several pairs
    name: it is loaded once per job."""
    models = {} if models is None else models
    pair = resolve_pair(config, pair_name)
    cache_root = Path(config["models"]["cache_dir"])
    target_spec = model_spec(config, pair["target"])
    draft_spec = model_spec(config, pair["draft"]) if "draft" in roles else None
    tokenizer = load_tokenizer(target_spec, cache_root)
    # Tokenizers first: a mismatched pair fails before gigabytes of weights load.
    if draft_spec is not None:
        check_vocabulary(pair_name, draft_spec, tokenizer, target_spec, cache_root)

    def load(spec: ModelSpec, build) -> tuple[torch.nn.Module, str]:
        if spec.name not in models:
            model = build()
            models[spec.name] = (model, fingerprint(spec, model, cache_root))
        return models[spec.name]

    def with_subset(spec: ModelSpec, model: torch.nn.Module) -> torch.nn.Module:
        """A drafter whose folder holds vocab_subset.json drafts from that subset only
        (models/vocab_subset.py), on its own lm_head attribute: an EAGLE head's target module
        is left as it is."""
        if spec.source != "hub":
            apply_saved_subset(model, resolve(spec, cache_root))
        return model

    target, target_print = load(
        target_spec, lambda: load_model(target_spec, dtype, device, cache_root)[0]
    )
    if subset_size(target):
        # Models are shared by name within a job: one loaded as a drafter keeps its subset head.
        raise ModelError(
            f"pair {pair_name!r}: target {pair['target']!r} drafts from a vocabulary subset "
            "(vocab_subset.json in its folder) and cannot be verified against"
        )
    fingerprints = {"target": target_print}
    draft = None
    if draft_spec is not None:
        draft, fingerprints["draft"] = load(
            draft_spec,
            lambda: with_subset(draft_spec, load_model(draft_spec, dtype, device, cache_root)[0]),
        )
    head = None
    if "head" in roles:
        head_spec = model_spec(config, pair["head"])
        head, fingerprints["head"] = load(
            head_spec,
            lambda: with_subset(head_spec, load_head_model(head_spec, target, cache_root)),
        )
    # The folder fingerprints already cover vocab_subset.json; the size makes a record readable.
    for role, model in (("draft", draft), ("head", head)):
        if model is not None and subset_size(model):
            fingerprints[f"{role}_vocab_subset"] = str(subset_size(model))
    return LoadedPair(
        name=pair_name,
        target=target,
        tokenizer=tokenizer,
        draft=draft,
        conversation=pair.get("conversation") or default_conversation(tokenizer),
        eos_ids=eos_token_ids(tokenizer, target.generation_config.eos_token_id),
        token_text=token_texts(tokenizer),
        fingerprints=fingerprints,
        head=head,
    )
