"""Twins: building."""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import yaml

from specrepro.models.eagle_head import save_published_head
from specrepro.models.twins.hub_cache import folder_bytes, publish_snapshot
from specrepro.models.twins.overlay import COMMIT_LIKE, make_overlay
from specrepro.models.twins.shapes import (
    CHAT_TEMPLATES,
    RealShape,
    TwinShape,
    shape_parameters,
    twin_shape,
)
from specrepro.models.twins.twin_plan import TwinPlan, plan_twins
from specrepro.models.twins.vocab import model_vocab, train_tokenizer
from specrepro.models.twins.weights import (
    Basis,
    Factors,
    eagle_head_config,
    eagle_head_state,
    family_factors,
    llama_twin,
    opt_twin,
)


@dataclass
class TwinModel:
    """What was written for one hub id."""

    model_id: str
    names: list[str]
    kind: str  # "model" or "eagle-head"
    family: str
    real: dict  # RealShape fields (heads: their target's, one layer)
    twin: dict  # TwinShape fields
    real_parameters: float
    twin_parameters: int
    commit: str
    path: str
    bytes: int
    chat_template: str | None = None
    estimate: bool = False


@dataclass
class TwinReport:
    hub_cache: str
    overlay: str
    models: list[TwinModel]
    tokenizers: dict[str, int]  # family -> tokenizer length
    corpus_chars: int
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "seconds"}


def build_twins(
    config: dict,
    out: Path,
    run: str,
    texts: Sequence[str],
    questions: int = 2,
    tokens: int = 8,
    mirror: Path | None = None,
) -> TwinReport:
    """Write the twins of every hub model of `config` under OUT/hub, the overlay to
    OUT/overlay.yaml and what was built to OUT/twins.json; returns the same report."""
    start = time.perf_counter()
    plans = plan_twins(config)  # fails before anything is written
    make_overlay(config, run, Path(out) / "hub", questions, tokens, mirror)  # so does this
    threads = torch.get_num_threads()
    # One thread: tiny matrices gain nothing from more (and lose much on a busy machine), and
    # the reduction order, hence every weight's bytes and the commit, does not depend on it.
    torch.set_num_threads(1)
    try:
        report = _build(config, Path(out), run, texts, questions, tokens, mirror, plans)
    finally:
        torch.set_num_threads(threads)
    report.seconds = time.perf_counter() - start
    return report


def _build(
    config: dict,
    out: Path,
    run: str,
    texts: Sequence[str],
    questions: int,
    tokens: int,
    mirror: Path | None,
    plans: list[TwinPlan],
) -> TwinReport:
    hub_cache = (out / "hub").resolve()
    hub_cache.mkdir(parents=True, exist_ok=True)
    families = sorted({p.real.family for p in plans if not p.is_head})
    tokenizers = {family: train_tokenizer(family, texts) for family in families}
    factors = {f: family_factors(f, model_vocab(f, len(t)), t) for f, t in tokenizers.items()}
    built: dict[str, TwinModel] = {}
    bases: dict[str, tuple[torch.Tensor, Basis]] = {}  # a head's target: embedding, basis
    revisions: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="twin-", dir=out) as tmp:
        for plan in plans:
            staged = Path(tmp) / plan.model_id.replace("/", "--")
            if plan.is_head:
                record = _stage_head(plan, built[plan.target], *bases[plan.target], staged)
            else:
                tokenizer = tokenizers[plan.real.family]
                record, bases[plan.model_id] = _stage_model(
                    plan, tokenizer, factors[plan.real.family], staged
                )
            refs = [r for r in plan.revisions if len(r) != COMMIT_LIKE]
            folder = publish_snapshot(hub_cache, plan.model_id, staged, refs)
            record.commit, record.path = folder.name, str(folder)
            record.bytes = folder_bytes(folder)
            built[plan.model_id] = record
            registry = config["models"]["registry"]
            for name in plan.names:
                if len(str(registry[name].get("revision") or "")) == COMMIT_LIKE:
                    revisions[name] = folder.name  # a pinned real commit: pin the twin's
    overlay = make_overlay(config, run, hub_cache, questions, tokens, mirror, revisions)
    overlay_path = out / "overlay.yaml"
    overlay_path.write_text(
        "# Smoke-scale run over the toy twins (specrepro twins): pass after the paper config,\n"
        "#   HF_HUB_OFFLINE=1 snakemake --configfile PAPER_CONFIG THIS_FILE\n"
        + yaml.safe_dump(overlay, sort_keys=False)
    )
    report = TwinReport(
        hub_cache=str(hub_cache),
        overlay=str(overlay_path.resolve()),
        models=list(built.values()),
        tokenizers={f: len(t) for f, t in tokenizers.items()},
        corpus_chars=sum(map(len, texts)),
    )
    (out / "twins.json").write_text(json.dumps(report.as_dict(), indent=1) + "\n")
    return report


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No per-twin "Writing model shards" bars (transformers' switch is global: restored)."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


def _stage_model(
    plan: TwinPlan, tokenizer, factors: Factors, staged: Path
) -> tuple[TwinModel, tuple[torch.Tensor, Basis]]:
    real = plan.real
    shape = twin_shape(real, model_vocab(real.family, len(tokenizer)))
    seed = f"specrepro-twin-model:{plan.model_id}"
    model, basis = (llama_twin if real.family == "llama" else opt_twin)(shape, factors, seed)
    model.to(torch.float16)  # as the real checkpoints are stored
    embedding = model.get_input_embeddings().weight.detach().clone()
    with _quiet_progress():
        model.save_pretrained(staged)
    if real.family == "llama":
        from specrepro.models.loader import add_legacy_rope_keys

        add_legacy_rope_keys(staged)  # the real configs' 4.x keys (rope_theta)
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.model_max_length = real.max_positions
    tokenizer.chat_template = CHAT_TEMPLATES.get(plan.chat_template or "")
    tokenizer.save_pretrained(staged)
    record = TwinModel(
        model_id=plan.model_id,
        names=plan.names,
        kind="model",
        family=real.family,
        real=asdict(real),
        twin=asdict(shape),
        real_parameters=real.parameters,
        twin_parameters=shape_parameters(shape),
        commit="",
        path="",
        bytes=0,
        chat_template=plan.chat_template,
        estimate=real.estimate,
    )
    return record, (embedding, basis)


def _stage_head(
    plan: TwinPlan, target: TwinModel, embedding: torch.Tensor, basis: Basis, staged: Path
) -> TwinModel:
    shape = replace(TwinShape(**target.twin), layers=1)
    real = replace(RealShape(**target.real), layers=1, chat_template=None)
    seed = f"specrepro-twin-head:{plan.model_id}"
    state = eagle_head_state(shape, embedding, basis, seed)
    save_published_head(state, eagle_head_config(shape), staged, fc_bias=True)
    # The head's own weights, fc and its layer (the embed_tokens copy is the target's).
    h, kv = real.hidden, real.kv_heads * real.hidden // real.heads
    real_params = 2 * h * h + h + 2 * h * h + 2 * h * kv + 3 * h * real.intermediate + h
    twin_params = sum(t.numel() for k, t in state.items() if k != "embed_tokens.weight")
    return TwinModel(
        model_id=plan.model_id,
        names=plan.names,
        kind="eagle-head",
        family="llama",
        real={**asdict(real), "parameters": float(real_params)},
        twin=asdict(shape),
        real_parameters=float(real_params),
        twin_parameters=twin_params,
        commit="",
        path="",
        bytes=0,
    )


def shape_line(shape: dict) -> str:
    kv = f"/{shape['kv_heads']}kv" if shape["kv_heads"] != shape["heads"] else ""
    return (
        f"{shape['layers']}L x {shape['hidden']} ({shape['heads']}h{kv}, "
        f"ffn {shape['intermediate']}, vocab {shape['vocab']})"
    )
