"""Checking the config's draft-design study section (config.validate_config calls it)."""

from __future__ import annotations

from specrepro.config import ConfigError
from specrepro.planning import study_families
from specrepro.planning.methods import method_spec, needed_roles


def validate_study(config: dict, source: str) -> None:
    study = config.get("studies", {}).get("draft_design")
    if not study:
        return
    where = f"{source}: studies.draft_design"
    pair = config["pairs"].get(study["pair"])
    if pair is None or "draft" not in pair:
        raise ConfigError(f"{where}.pair {study['pair']!r} is not a pair with a draft")
    if pair["target"] not in config.get("teachers", {}):
        raise ConfigError(
            f"{where}: the target {pair['target']!r} needs a teachers entry (its corpus scores "
            "every draft's held-out perplexity)"
        )
    for other in study.get("pairs", []):
        entry = config["pairs"].get(other)
        if entry is None or "draft" not in entry or entry["target"] != pair["target"]:
            raise ConfigError(
                f"{where}.pairs names {other!r}, not a pair with a draft for {pair['target']!r}"
            )
    for other in study.get("roles", {}):
        if other not in study.get("pairs", []):
            raise ConfigError(f"{where}.roles names {other!r}, not one of its pairs")
    if study.get("depths") and "depth" in study.get("families", {}):
        raise ConfigError(f"{where}: give the depth family as `depths` or families.depth")
    families = study_families(study)
    if families:
        _validate_study_family(config, study, pair["draft"], families, where)
    for method, temperatures in study["methods"].items():
        if method not in config["methods"]:
            raise ConfigError(f"{where}.methods names {method!r}, not defined in methods")
        algorithm = config["methods"][method]["algorithm"]
        if "draft" not in needed_roles(algorithm):
            raise ConfigError(f"{where}.methods: {method!r} does not use a draft")
        if method_spec(algorithm).needs_sampling and min(temperatures) <= 0:
            raise ConfigError(f"{where}.methods.{method}: {algorithm} needs T > 0")
        entry = config["methods"][method]
        if study.get("gammas") and "gamma" not in entry:
            raise ConfigError(f"{where}.gammas: {method!r} has no gamma to sweep")
        if study.get("gammas") and entry["gamma"] not in study["gammas"]:
            raise ConfigError(
                f"{where}.gammas {study['gammas']} leaves out {method!r}'s own gamma "
                f"{entry['gamma']} (the fixed lookahead every draft is also reported at)"
            )
    for dataset in [
        *study["datasets"], *study.get("questions", {}), *study.get("tune_questions", {}),
        *study.get("accuracy", []),
    ]:  # fmt: skip
        if dataset not in config["datasets"]:
            raise ConfigError(f"{where} names dataset {dataset!r}, not in datasets")
    for dataset, tune in study.get("tune_questions", {}).items():
        if not study.get("gammas"):
            raise ConfigError(f"{where}.tune_questions: there is no `gammas` sweep to tune")
        ran = study.get("questions", {}).get(dataset, config["datasets"][dataset]["n"])
        if ran is not None and tune >= ran:
            raise ConfigError(
                f"{where}.tune_questions.{dataset} = {tune} leaves none of the {ran} study "
                "questions to report on (the best gamma is reported on the others)"
            )


def _validate_study_family(
    config: dict, study: dict, draft: str, families: dict, where: str
) -> None:
    base = config.get("drafts", {}).get(draft)
    if base is None:
        raise ConfigError(
            f"{where}: the pair's draft {draft!r} is not built by the DAG (drafts entry): the "
            "families' counted size is its depth in teacher layers, their teacher its teacher"
        )
    widths = [k for k in ("hidden_size", "intermediate_size", "num_attention_heads") if k in base]
    if widths or "budget_layers" in base:
        raise ConfigError(
            f"{where}: the pair's draft sets {widths or ['budget_layers']}; the family's size is "
            "counted in teacher layers, so it must keep the teacher's layer shape"
        )
    target = config["pairs"][study["pair"]]["target"]
    for name, family in families.items():
        # A member at the pair's draft's own depth is no duplicate: it starts from random
        # layers (the pair's draft from the teacher's) and trains by the study's rule.
        hidden = family.get("hidden_size")
        if hidden is not None and study.get("training", {}).get("init_from_teacher"):
            raise ConfigError(
                f"{where}.families.{name}: a family of hidden size {hidden} cannot start from "
                f"the layers of {target!r} (init_from_teacher)"
            )
