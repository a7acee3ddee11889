"""Twins: the overlay."""

from __future__ import annotations

import copy
from pathlib import Path

COMMIT_LIKE = 40


def make_overlay(
    config: dict,
    run: str,
    hub_cache: Path,
    questions: int = 2,
    tokens: int = 8,
    mirror: Path | None = None,
    revisions: dict[str, str] | None = None,
) -> dict:
    """The config overlay of a smoke-scale run over the twins (a second --configfile, merged
    recursively): CPU, no warm-up, one timing, `questions` questions of `tokens` new tokens,
    tiny teacher corpora, study and latency settings, the study's gamma sweep cut to the lookaheads
    its methods are reported at; the paper's dtype and methods kept.
    `revisions`: registry name -> twin commit, for entries pinned to a real commit."""
    if questions < 1 or tokens < 1:
        raise ValueError("twins: --questions and --tokens must be at least 1")
    overlay: dict = {
        "run": run,
        "models": {"hub_cache": str(Path(hub_cache).resolve())},
        "runs": {"device": "cpu", "warmup": 0, "repeats": 1},
        "datasets": {},
    }
    if revisions:
        overlay["models"]["registry"] = {n: {"revision": c} for n, c in revisions.items()}
    if mirror is not None:
        overlay["data"] = {"mirror": str(Path(mirror).resolve()), "dir": config["data"]["dir"]}
    for name, entry in config["datasets"].items():
        cut = {"n": questions, "max_new_tokens": min(tokens, entry["max_new_tokens"])}
        if entry.get("tuning"):
            cut["tuning"] = 1
        overlay["datasets"][name] = cut
    if config.get("teachers"):
        overlay["teachers"] = {
            name: {"train_prompts": 4, "gen_tokens": tokens, "gen_batch_size": 2}
            for name in config["teachers"]
        }
    for section in ("drafts", "heads"):  # built by the DAG: a few training steps
        if config.get(section):
            overlay[section] = {name: {"steps": 2} for name in config[section]}
    if config.get("tree_tuning"):
        overlay["tree_tuning"] = {"max_new_tokens": tokens}
    study = config.get("studies", {}).get("draft_design")
    if study:
        overlay["studies"] = {
            "draft_design": _study_overlay(study, config.get("methods", {}), questions)
        }
    if "energy" in config:
        # At least a sample: NVML's idle measurement refuses 0 s (a GPU run of the overlay).
        overlay["energy"] = {"idle_seconds": 0.1}
    return overlay


def _study_overlay(study: dict, methods: dict, questions: int) -> dict:
    cut: dict = {}
    gammas = _gamma_cut(study, methods)
    if gammas is not None:
        cut["gammas"] = gammas
    if study.get("questions") or study.get("tune_questions"):
        if study.get("tune_questions") and questions < 2:
            raise ValueError(
                "twins: the draft-design study tunes each draft's gamma on some questions and "
                "reports on the others: --questions must be at least 2"
            )
        datasets = {*study.get("questions", {}), *study.get("tune_questions", {})}
        cut["questions"] = dict.fromkeys(sorted(datasets), questions)
        if study.get("tune_questions"):
            cut["tune_questions"] = dict.fromkeys(sorted(study["tune_questions"]), 1)
    if "latency" in study:
        cut["latency"] = {"tokens": 2, "warmup": 0, "repeats": 1, "prompt_tokens": 8}
        cut["latency"]["paper_scale"] = False  # random 1.3B-scale models: minutes on a CPU
    if study.get("training"):
        cut["training"] = {"steps": 2}
    return cut


def _gamma_cut(study: dict, methods: dict) -> list[int] | None:
    """The sweep's lookaheads a smoke run keeps: every study method's own gamma (the fixed one it
    is reported at), and another where that leaves one, so tuning still chooses. Every draft runs
    every gamma of the sweep in the timing groups, which makes the sweep most of a twin run's
    decoding. None keeps the sweep: none to cut, or a method whose own gamma this config leaves
    to the default config's entry."""
    sweep = study.get("gammas")
    own = {(methods.get(m) or {}).get("gamma") for m in study.get("methods", {})}
    if not sweep or None in own:
        return None
    extra = [g for g in sweep if g not in own][: max(0, 2 - len(own))]
    return [g for g in sweep if g in own or g in extra]


def merged(config: dict, overlay: dict) -> dict:
    """The config as Snakemake sees it with the overlay as a later --configfile."""
    from specrepro.config import merge_into

    out = copy.deepcopy(config)
    merge_into(out, copy.deepcopy(overlay))
    return out
