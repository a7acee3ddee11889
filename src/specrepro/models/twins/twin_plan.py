"""Twins: what to build for a config."""

from __future__ import annotations

from dataclasses import dataclass, field

from specrepro.models.loader import ModelError
from specrepro.models.twins.shapes import KNOWN, EagleHeadId, RealShape, real_shape_from_twin


@dataclass
class TwinPlan:
    """One hub id to build: a model (`real` set) or an EAGLE head (`target` set)."""

    model_id: str
    names: list[str]  # registry names with this id
    real: RealShape | None = None
    target: str | None = None  # heads: the hub id of the target it is built over
    chat_template: str | None = None
    revisions: set[str] = field(default_factory=set)

    @property
    def is_head(self) -> bool:
        return self.target is not None


def plan_twins(config: dict) -> list[TwinPlan]:
    """Every hub model of the registry, resolved to a shape before anything is built: an
    unknown hub id without `twin:` fails here, naming the model and what to add."""
    registry = config["models"]["registry"]
    head_targets: dict[str, list[str]] = {}
    for pair in config.get("pairs", {}).values():
        if "head" in pair:
            head_targets.setdefault(pair["head"], []).append(pair["target"])
    chat_targets = {
        pair["target"]
        for pair in config.get("pairs", {}).values()
        if pair.get("conversation") == "chat_template"
    }
    plans: dict[str, TwinPlan] = {}
    for name, entry in registry.items():
        if entry.get("source") != "hub":
            continue
        model_id = entry["id"]
        plan = plans.setdefault(model_id, TwinPlan(model_id, []))
        plan.names.append(name)
        if entry.get("revision"):
            plan.revisions.add(str(entry["revision"]))
        known = KNOWN.get(model_id)
        if name in head_targets or isinstance(known, EagleHeadId):
            plan.target = _head_target(config, name, model_id, head_targets.get(name), known)
            continue
        if entry.get("twin") is not None:
            plan.real = real_shape_from_twin(name, model_id, entry["twin"])
        elif isinstance(known, RealShape):
            plan.real = known
        else:
            raise ModelError(
                f"model {name!r}: no twin shape for hub id {model_id!r}. Add its real shape to "
                f"the registry entry, e.g. `twin: {{family: llama, layers: 32, hidden: 4096, "
                f"heads: 32, intermediate: 11008}}` (family llama or opt); known ids: "
                f"{', '.join(sorted(KNOWN))}"
            )
        plan.chat_template = plan.real.chat_template
        if name in chat_targets and plan.chat_template is None:
            plan.chat_template = "generic"  # the pair formats prompts with the template
    for plan in plans.values():
        if plan.is_head:
            target = plans.get(plan.target)
            if target is None or target.is_head:
                raise ModelError(
                    f"EAGLE head {plan.model_id}: its target {plan.target} is not a hub model "
                    "of the registry, so it has no twin to build the head over"
                )
            if target.real.family != "llama":
                raise ModelError(f"EAGLE head {plan.model_id}: its target is not a LLaMA model")
    # Models before heads (a head copies its target's embedding), each in registry order.
    return sorted(plans.values(), key=lambda p: p.is_head)


def _head_target(
    config: dict, name: str, model_id: str, targets: list[str] | None, known: object
) -> str:
    """The hub id of the model a head is built over: its pairs' target (one shape for all)."""
    registry = config["models"]["registry"]
    ids = {registry[t].get("id") for t in targets or [] if registry[t].get("source") == "hub"}
    if targets and len({*targets}) > 1 and len(ids) > 1:
        raise ModelError(
            f"EAGLE head {name!r} ({model_id}) serves several targets {sorted(set(targets))}: "
            "a twin head is built over one target"
        )
    if targets:
        target = registry[targets[0]]
        if target.get("source") != "hub":
            raise ModelError(
                f"EAGLE head {name!r} ({model_id}): its target {targets[0]!r} is not a hub "
                "model, so it has no twin to build the head over"
            )
        return target["id"]
    assert isinstance(known, EagleHeadId)
    return known.target
