"""The config entries each job reads, as {dotted path: value}.

They are the jobs' params, so an edit (in a file or by --config key=value) reruns exactly the
jobs whose entries changed, and each job gets the same values on its command line
(--set-json, applied over the config files).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from .datasets import dataset_entries, scorer_entries

if TYPE_CHECKING:
    from .plan import Plan


def job_entries(plan: Plan, rule: str) -> Callable[[object], str]:
    """The rule's entries as a function of its wildcards, JSON-encoded for --set-json."""
    function = RULE_ENTRIES[rule]
    return lambda w: json.dumps(function(plan, w), sort_keys=True)


def models_entries(plan: Plan, *names: str) -> dict:
    registry = plan.config["models"]["registry"]
    entries = {f"models.registry.{n}": registry[n] for n in names}
    return {"models.cache_dir": plan.config["models"]["cache_dir"], **entries}


def _fetch(plan: Plan, w) -> dict:
    return {"data": plan.config["data"], **dataset_entries(plan.config, w.dataset)}


def _tidy(plan: Plan, w) -> dict:
    return {"data": plan.config["data"], **scorer_entries(plan.config)}


def _tune_trees(plan: Plan, w) -> dict:
    config = plan.config
    spec = config["tree_tuning"]
    pair = config["pairs"][w.pair]
    return {
        "data": config["data"],
        "tree_tuning": spec,
        f"datasets.{spec['dataset']}": config["datasets"][spec["dataset"]],
        f"pairs.{w.pair}": pair,
        **{
            f"methods.{m}": config["methods"][m]
            for m in (spec["size_entry"], spec["threshold_entry"])
        },
        **models_entries(plan, pair["target"], pair["head"]),
        "runs.subsample_seed": plan.runs_spec.get("subsample_seed", 0),
        **{f"runs.{k}": plan.runs_spec[k] for k in ("device",) if k in plan.runs_spec},
    }


def _prompts(plan: Plan, w) -> dict:
    return {
        "data": plan.config["data"],
        f"datasets.{w.dataset}.n": plan.config["datasets"][w.dataset]["n"],
        **dataset_entries(plan.config, w.dataset),
        "runs.subsample_seed": plan.runs_spec.get("subsample_seed", 0),
    }


def _model(plan: Plan, w) -> dict:
    return models_entries(plan, w.model)


def _generate(plan: Plan, w) -> dict:
    config = plan.config
    runs = plan.group_members(w)
    entries = {
        **{f"pairs.{pair}": config["pairs"][pair] for pair, _ in runs},
        **models_entries(plan, *plan.group_models(w)),
        f"datasets.{w.dataset}.max_new_tokens": plan.max_new_tokens(w),
        "energy": config.get("energy", {}),
        **{
            f"runs.{k}": plan.runs_spec[k]
            for k in ("device", "warmup", "repeats")
            if k in plan.runs_spec
        },
    }
    for _, method in runs:
        if method in config["methods"]:
            entries[f"methods.{method}"] = config["methods"][method]
    return entries


def _train_prompts(plan: Plan, w) -> dict:
    # Training prompts exclude every configured dataset's evaluated and tuning questions.
    teacher = plan.config["teachers"][w.teacher]
    datasets = plan.config["datasets"]
    return {
        "data": plan.config["data"],
        **{
            f"teachers.{w.teacher}.{k}": teacher[k]
            for k in ("train_prompts", "seed")
            if k in teacher
        },
        **{f"datasets.{name}.n": entry["n"] for name, entry in datasets.items()},
        **{k: v for name in datasets for k, v in dataset_entries(plan.config, name).items()},
        # (tuning: 0 holds out nothing, as an absent one)
        **{
            f"datasets.{name}.tuning": entry["tuning"]
            for name, entry in datasets.items()
            if entry.get("tuning")
        },
        "runs.subsample_seed": plan.runs_spec.get("subsample_seed", 0),
    }


def _teacher_corpus(plan: Plan, w) -> dict:
    teacher = plan.config["teachers"][w.teacher]
    return {f"teachers.{w.teacher}": teacher, **models_entries(plan, w.teacher)}


def _train_draft(plan: Plan, w) -> dict:
    name, draft = plan.built(w)
    return {f"drafts.{name}": draft, **models_entries(plan, name, draft["teacher"])}


def _train_head(plan: Plan, w) -> dict:
    name, head = plan.built(w)
    return {f"heads.{name}": head, **models_entries(plan, name, head["teacher"])}


def _latency_profile(plan: Plan, w) -> dict:
    target = plan.config["pairs"][w.pair]["target"]
    members = plan.study.members.values() if plan.study else []
    return {
        **models_entries(plan, target, *members),
        **{f"runs.{k}": plan.runs_spec[k] for k in ("device",) if k in plan.runs_spec},
    }


def _draft_quality(plan: Plan, w) -> dict:
    config = plan.config
    entries = models_entries(plan, w.draft)
    if w.draft in config["drafts"]:
        entries[f"drafts.{w.draft}"] = config["drafts"][w.draft]
    if plan.accuracy_datasets():
        # The draft alone answers the evaluated prompts: its budget, format and scoring data.
        entries["data"] = config["data"]
        entries[f"pairs.{w.pair}"] = config["pairs"][w.pair]
        entries["runs.device"] = plan.runs_spec.get("device", "cpu")
        for d in plan.accuracy_datasets():
            entries[f"datasets.{d}.max_new_tokens"] = config["datasets"][d]["max_new_tokens"]
    return entries


RULE_ENTRIES: dict[str, Callable[[Plan, object], dict]] = {
    "fetch_data": _fetch,
    "tidy": _tidy,
    "prompts": _prompts,
    "model": _model,
    "generate": _generate,
    "tune_trees": _tune_trees,
    "train_prompts": _train_prompts,
    "teacher_corpus": _teacher_corpus,
    "train_draft": _train_draft,
    "train_head": _train_head,
    "latency_profile": _latency_profile,
    "draft_quality": _draft_quality,
}
