"""Generated names and entries: the DDD sweep's points, the draft-design study's built drafts,
their pairs and the lookahead sweep's entries, added to a config the way every job sees them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

# A study-built draft's training entry: the pair's draft entry's optimiser settings, every
# member from the same random start (docs/methods.md: no member begins as a cut of the
# teacher), then the study's `training` block (stopping rule, step cap, cost settings).
STUDY_TRAINING_KEYS = ("teacher", "batch_size", "lr", "seed", "holdout_fraction", "steps")

# The general figures, and the study's: latency (with its spread), TAR against task accuracy
# and perplexity, throughput at the fixed and the tuned lookahead, the lookahead sweep, the
# loss curves.
FIGURES = ("speedup", "accepted_length", "time_split", "draft_depth")
STUDY_FIGURES = ("latency", "tar", "throughput", "gamma", "training")
DSBD_FIGURES = ("threshold", "width")
DSBD_TASKS = ("squad", "spider")


def algorithm_of(config: dict, method: str) -> str:
    """A method is a configured entry or a bare algorithm name."""
    return config["methods"].get(method, {}).get("algorithm", method)


def tuned_methods(config: dict) -> set[str]:
    """Method entries (sweep points included) with a value that rule tune_trees chooses."""
    return {name for name, entry in config["methods"].items() if "tuned" in entry.values()}


def sweep_points(config: dict) -> dict[str, dict]:
    """The DDD sweep's points (threshold x check levels over its base entry) as {name: entry}.
    Names carry the settings ("." written "p": config paths are dotted); the base's own point
    keeps its name."""
    sweep = config.get("sweeps", {}).get("ddd")
    if not sweep:
        return {}
    base = config["methods"][sweep["base"]]
    points = {}
    for threshold, levels in itertools.product(sweep["thresholds"], sweep["check_levels"]):
        entry = {**base, "threshold": threshold, "check_levels": levels}
        name = sweep["base"]
        if entry != base:
            settings = f"_x{threshold:g}_S{'-'.join(str(s) for s in levels)}"
            name += settings.replace(".", "p")
        points[name] = entry
    return points


def study_families(study: dict) -> dict[str, dict]:
    """{family: {"depths": [...], "hidden_size": H or absent, ...}}: `families`, and the older
    `depths` as the depth family."""
    families = dict(study.get("families", {}))
    if study.get("depths"):
        families.setdefault("depth", {"depths": study["depths"]})
    return families


def family_member_names(pair: str, depth: int, hidden: int | None) -> tuple[str, str]:
    """(pair, draft) names of a built member: the depth family keeps the target's width
    (`{pair}-d{depth}`), the wide family says its width (`{pair}-w{hidden}-d{depth}`)."""
    tag = f"w{hidden}-d{depth}" if hidden else f"d{depth}"
    return f"{pair}-{tag}", f"{pair}-draft-{tag}"


@dataclass
class Study:
    """The draft-design study's members: {pair: draft} (the base pair's own draft first), the
    built members' solved shapes {draft: "DEPTH" or "DEPTH:HIDDEN"}, every member's role
    (existing, a family's name, other) and the lookahead sweep {method: [entry names]}."""

    spec: dict
    members: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    gammas: dict[str, list[str]] = field(default_factory=dict)
    # The member every other is compared with: a built member trained by the same rule
    # (`reference`), or else the pair's own draft.
    reference: str | None = None

    @property
    def pair(self) -> str:
        return self.spec["pair"]

    @property
    def own_pairs(self) -> list[str]:
        """The study's pairs other than the base pair."""
        return [p for p in self.members if p != self.pair]

    @property
    def sweep_only(self) -> list[str]:
        """Lookahead entries that are not the methods themselves."""
        return [n for m, names in self.gammas.items() for n in names if n != m]


class PlanError(ValueError):
    """A generated name is already configured with other values."""


def add_entry(section: dict, name: str, entry: dict, where: str) -> None:
    """Add a generated entry. The same entry may be there already (a job receives the expanded
    entries it reads on its command line, and the library expands the config again around
    them); another entry under the generated name would silently replace one of the two."""
    if section.setdefault(name, entry) != entry:
        raise PlanError(
            f"{where}.{name} is generated (by the DDD sweep, the draft-design study or, for "
            "the baseline's A/A control, the plan) and also configured with other values: "
            "rename the configured entry"
        )


def expand_study(config: dict, spec: dict) -> Study:
    study = Study(spec=spec)
    base = config["pairs"][spec["pair"]]
    study.members[spec["pair"]] = base["draft"]
    study.roles[base["draft"]] = "existing"
    for family, family_spec in study_families(spec).items():
        base_draft = config["drafts"][base["draft"]]
        hidden = family_spec.get("hidden_size")
        for depth in family_spec["depths"]:
            pair, name = family_member_names(spec["pair"], depth, hidden)
            add_entry(
                config["models"]["registry"],
                name,
                {
                    "source": "built",
                    "path": f"{config['models']['cache_dir']}/{name}",
                    "description": f"draft-design study, {family} family: {depth} layers"
                    + (f" of width {hidden}" if hidden else "")
                    + f", as large as {base['draft']}",
                },
                "models.registry",
            )
            entry = {k: base_draft[k] for k in STUDY_TRAINING_KEYS if k in base_draft}
            entry.update({"init_from_teacher": False, **spec.get("training", {})})
            entry.update(num_layers=depth, budget_layers=base_draft["num_layers"])
            if hidden:
                entry.update(
                    hidden_size=hidden, train_embeddings=family_spec.get("train_embeddings", False)
                )
            add_entry(config["drafts"], name, entry, "drafts")
            add_entry(config["pairs"], pair, {**base, "draft": name}, "pairs")
            study.shapes[name] = f"{depth}:{hidden}" if hidden else str(depth)
            study.roles[name] = family
            study.members[pair] = name
    if spec.get("reference"):
        ref = spec["reference"]
        hidden = study_families(spec).get(ref["family"], {}).get("hidden_size")
        name = family_member_names(spec["pair"], ref["depth"], hidden)[1]
        if name not in study.shapes:
            raise PlanError(
                f"studies.draft_design.reference: the {ref['family']} family builds no "
                f"{ref['depth']}-layer member"
            )
        study.reference = name
    for pair in spec.get("pairs", []):
        study.members[pair] = config["pairs"][pair]["draft"]
        study.roles.setdefault(study.members[pair], spec.get("roles", {}).get(pair, "other"))
    for method in spec.get("methods", {}):
        entry = config["methods"][method]
        names = []
        for gamma in spec.get("gammas", []):
            if "gamma" not in entry:
                break
            name = method if gamma == entry["gamma"] else f"{method}-g{gamma}"
            if name != method:
                add_entry(config["methods"], name, {**entry, "gamma": gamma}, "methods")
            names.append(name)
        study.gammas[method] = names or [method]
    return study
