"""Loading and checking the configuration, before anything heavy happens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

from specrepro.decoding.base import make_params
from specrepro.metrics.scorers import dataset_scorer
from specrepro.models.loader import ModelError, ModelSpec
from specrepro.planning import (
    DEFAULT_CONFIG,
    PlanError,
    check_datasets,
    control_name,
    make_plan,
    merge_into,
    run_name,
    sweep_points,
    switch_off,
)
from specrepro.planning.datasets import check_dataset_names
from specrepro.planning.methods import MethodError, method_names, method_spec, needed_roles

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


class ConfigError(ValueError):
    """The configuration is malformed or refers to something it does not define."""


def load_config(
    paths: Path | str | list[Path | str], entries: dict[str, object] | None = None
) -> dict:
    """Read one config file, or several merged in order (as Snakemake merges the default
    config and every --configfile: planning/configs.py), then set `entries`
    ({"methods.sps.gamma": 2, ...}: dotted path -> value, replacing what is there) and validate
    the result. Optional blocks set to null are dropped (switched off)."""
    paths = [paths] if isinstance(paths, str | Path) else paths
    config: dict = {}
    for path in map(Path, paths):
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"config {path} is not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping at the top level")
        merge_into(config, loaded)
    # As the workflow names it: without `run`, by the first file besides the default config.
    if paths:
        config.setdefault("run", run_name(paths, DEFAULT_CONFIG))
    source = ", ".join(str(p) for p in paths)
    for dotted, value in (entries or {}).items():
        set_entry(config, dotted, value)
    if entries:
        source += " with --set-json"
    config = switch_off(config)
    validate_config(config, source=source)
    add_control(config)
    return config


def add_control(config: dict) -> None:
    """The baseline's A/A control among the methods, as the plan generates it (the baseline's
    entry under `control_name`): every command can name it (`--method vanilla-aa`)."""
    baseline = config["runs"].get("baseline", "vanilla")
    if baseline in config["methods"] or baseline in method_names():
        entry = config["methods"].get(baseline, {"algorithm": baseline})
        config["methods"].setdefault(control_name(baseline), dict(entry))


def set_entry(config: dict, dotted: str, value: object) -> None:
    """config[a][b][c] = value for dotted "a.b.c", creating mappings on the way."""
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted!r}: {key!r} is not a mapping")
        node = child
    node[last] = value


def validate_config(config: object, source: str = "config") -> None:
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    if isinstance(config, dict) and isinstance(config.get("datasets"), dict):
        # Before the schema, whose message for a bad dataset name only quotes the pattern.
        try:
            check_dataset_names(config["datasets"])
        except PlanError as err:
            raise ConfigError(f"{source}: {err}") from err
    try:
        jsonschema.validate(config, schema)
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"{source}: invalid at {where}: {err.message}") from err
    assert isinstance(config, dict)
    # Checked as the plan reads it: blocks set to null switched off, the baseline's A/A
    # control among the methods (the plan generates it; a configured one must be the same).
    config = switch_off(config)
    add_control(config)
    # Jobs receive their entries as dotted paths (--set-json '{"methods.NAME": ...}'), so a
    # name with a dot would be split there and the job would read another entry.
    for section in ("methods", "pairs", "datasets", "teachers", "drafts", "heads"):
        for name in config.get(section, {}):
            if "." in name:
                raise ConfigError(
                    f"{source}: {section} name {name!r} has a dot; write it with 'p' "
                    f"({name.replace('.', 'p')!r}): entries are passed as dotted paths"
                )
    for name in config["models"]["registry"]:
        if "." in name:
            raise ConfigError(
                f"{source}: models.registry name {name!r} has a dot; write it with 'p' "
                f"({name.replace('.', 'p')!r}): entries are passed as dotted paths"
            )
    registry = config["models"]["registry"]
    for name, entry in registry.items():
        try:
            ModelSpec.from_config(name, entry)
        except ModelError as err:
            raise ConfigError(f"{source}: {err}") from err
    for name, pair in config["pairs"].items():
        for role in ("target", "draft", "head"):
            if role in pair and pair[role] not in registry:
                raise ConfigError(
                    f"{source}: pair {name!r} {role} {pair[role]!r} is not in models.registry"
                )
    teachers = config.get("teachers", {})
    for name in teachers:
        if name not in registry:
            raise ConfigError(f"{source}: teachers.{name} is not in models.registry")
    for section in ("drafts", "heads"):
        for name, entry in config.get(section, {}).items():
            if name not in registry:
                raise ConfigError(f"{source}: {section}.{name} has no models.registry entry")
            if "path" not in registry[name]:
                raise ConfigError(
                    f"{source}: {section}.{name} is trained by the workflow, so its "
                    "models.registry entry needs the `path` it is written to (`source: built`)"
                )
            if entry["teacher"] not in teachers:
                raise ConfigError(
                    f"{source}: {section}.{name}.teacher {entry['teacher']!r} has no teachers "
                    "entry (the corpus it learns from)"
                )
    _validate_datasets(config, source)
    _validate_tree_tuning(config, source)
    for name, entry in config["methods"].items():
        _check_method_entry(entry, f"{source}: methods.{name}", config)
    runs = config["runs"]
    for key, table in (("pairs", "pairs"), ("methods", "methods"), ("datasets", "datasets")):
        for item in runs[key]:
            if item not in config[table]:
                raise ConfigError(f"{source}: runs.{key} names {item!r}, not defined in {table}")
    for method in runs["methods"]:
        for role in needed_roles(config["methods"][method]["algorithm"]):
            for pair in runs["pairs"]:
                if role not in config["pairs"][pair]:
                    raise ConfigError(
                        f"{source}: method {method!r} needs a {role} but pair {pair!r} has none"
                    )
    # Entries for methods or datasets that are not run restrict nothing (config files merge, so
    # a user's runs.methods may leave out the default's tree methods); names must still exist.
    for method, datasets in runs.get("only", {}).items():
        if method not in config["methods"]:
            raise ConfigError(f"{source}: runs.only names {method!r}, not defined in methods")
        for dataset in datasets:
            if dataset not in config["datasets"]:
                raise ConfigError(f"{source}: runs.only.{method} names {dataset!r}, not a dataset")
    for method in runs.get("only_temperatures", {}):
        if method not in config["methods"]:
            raise ConfigError(
                f"{source}: runs.only_temperatures names {method!r}, not defined in methods"
            )
    for method in runs["methods"]:
        algorithm = config["methods"][method]["algorithm"]
        if method_spec(algorithm).needs_sampling:
            temperatures = runs.get("only_temperatures", {}).get(method, runs["temperatures"])
            if any(float(t) <= 0 for t in temperatures):
                raise ConfigError(
                    f"{source}: method {method!r} ({algorithm}) samples beams and needs T > 0; "
                    f"restrict it with runs.only_temperatures: {{{method}: [1.0]}}"
                )
    baseline = runs.get("baseline", "vanilla")
    try:
        resolve_method(config, baseline)
    except ConfigError as err:
        raise ConfigError(f"{source}: runs.baseline {baseline!r}: {err}") from err
    _validate_sweep(config, source)
    from specrepro.config_study import validate_study  # it raises this module's errors

    validate_study(config, source)
    try:
        make_plan(config)
    except PlanError as err:
        raise ConfigError(f"{source}: {err}") from err


def _validate_datasets(config: dict, source: str) -> None:
    """Each datasets entry as the plan reads it (kind, a jsonl dataset's path) and its scorer
    (metrics/scorers.py). Whether a jsonl file exists and parses is the fetch step's check."""
    try:
        check_datasets(config)
        for name, entry in config["datasets"].items():
            dataset_scorer(name, entry)
    except (PlanError, ValueError) as err:
        raise ConfigError(f"{source}: {err}") from err


def _validate_sweep(config: dict, source: str) -> None:
    sweep = config.get("sweeps", {}).get("ddd")
    if not sweep:
        return
    base = config["methods"].get(sweep["base"])
    if base is None or base["algorithm"] not in ("ddd", "ddd_async"):
        raise ConfigError(f"{source}: sweeps.ddd.base {sweep['base']!r} is not a DDD methods entry")
    if sweep["dataset"] not in config["datasets"]:
        raise ConfigError(f"{source}: sweeps.ddd.dataset {sweep['dataset']!r} is not in datasets")
    for pair in sweep.get("pairs", config["runs"]["pairs"]):
        if pair not in config["pairs"] or "head" not in config["pairs"][pair]:
            raise ConfigError(f"{source}: sweeps.ddd.pairs names {pair!r}, not a pair with a head")
    for name, entry in sweep_points(config).items():
        where = f"sweeps.ddd point x={entry['threshold']} S={entry['check_levels']} ({name})"
        _check_method_entry(entry, f"{source}: {where}", config)


# Keys of a method entry that the harness reads; every other key is the algorithm's parameter.
HARNESS_KEYS = ("algorithm", "stop_at_answer")


# A method entry's value that the DAG chooses on tuning questions (rule tune_trees).
TUNED = "tuned"
TUNABLE = ("total_tokens", "threshold")


def _validate_tree_tuning(config: dict, source: str) -> None:
    tuning = config.get("tree_tuning")
    tuned = {
        name: [k for k, v in entry.items() if v == TUNED]
        for name, entry in config["methods"].items()
    }
    tuned = {name: keys for name, keys in tuned.items() if keys}
    if not tuning:
        # Config files merge, so a config may define tuned entries it never runs (the
        # default's CPU trees under a GPU config): only a run one needs the block.
        sweep = config.get("sweeps", {}).get("ddd") or {}
        study = config.get("studies", {}).get("draft_design") or {}
        run = {*config["runs"]["methods"], sweep.get("base"), *study.get("methods", {})}
        for name, keys in tuned.items():
            if name in run:
                raise ConfigError(
                    f"{source}: methods.{name} has `tuned` {keys}, chosen by the tree_tuning "
                    "block, which the config lacks"
                )
        return
    where = f"{source}: tree_tuning"
    for key, algorithms in (("size_entry", ("eagle2",)), ("threshold_entry", ("ddd", "ddd_async"))):
        entry = config["methods"].get(tuning[key])
        if entry is None or entry["algorithm"] not in algorithms:
            raise ConfigError(f"{where}.{key} {tuning[key]!r} is not a {algorithms[0]} entry")
    if config["datasets"].get(tuning["dataset"], {}).get("tuning", 0) < 1:
        raise ConfigError(
            f"{where}.dataset {tuning['dataset']!r} holds out no tuning questions "
            f"(datasets.{tuning['dataset']}.tuning)"
        )
    for name, keys in tuned.items():
        unknown = sorted(set(keys) - set(TUNABLE))
        if unknown:
            raise ConfigError(
                f"{source}: methods.{name}: {unknown} cannot be `tuned` (only {list(TUNABLE)})"
            )


def _check_method_entry(entry: dict, where: str, config: dict | None = None) -> None:
    tuning = (config or {}).get("tree_tuning") or {}
    # A `tuned` value is checked at each value the tuning may choose (the threshold at any x);
    # without tree tuning (an entry no run uses, validation has checked), at its default.
    for size in tuning.get("total_tokens", [None]):
        placeholders = {"total_tokens": size, "threshold": 0.0}
        values = {
            k: placeholders[k] if v == TUNED else v
            for k, v in entry.items()
            if v != TUNED or tuning
        }
        try:
            _stop_at_answer(values)
            make_params(values["algorithm"], _algorithm_values(values))
        except (MethodError, TypeError) as err:
            raise ConfigError(f"{where}: {err}") from err


def _algorithm_values(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k not in HARNESS_KEYS}


def _stop_at_answer(entry: dict) -> bool:
    value = entry.get("stop_at_answer", True)
    if not isinstance(value, bool):
        raise MethodError(f"stop_at_answer must be true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class MethodChoice:
    """A configured method. stop_at_answer: end a generation at the token that ends the task's
    answer (SQuAD's first line, Spider's statement); false generates to EOS or max_new_tokens
    and counts every token, as the DSBD paper's evaluation does (scoring extracts the answer
    either way)."""

    name: str
    algorithm: str
    params: object
    stop_at_answer: bool = True


def resolve_method(config: dict, name: str) -> MethodChoice:
    """A method is a configured entry (methods.NAME) or a bare algorithm with default params."""
    entry = config["methods"].get(name)
    if entry is None:
        try:
            params = make_params(name, {})
        except MethodError as err:
            configured = ", ".join(sorted(config["methods"]))
            raise ConfigError(f"{err}; configured method entries: {configured}") from err
        return MethodChoice(name=name, algorithm=name, params=params)
    tuned = [k for k, v in entry.items() if v == TUNED]
    if tuned:
        raise ConfigError(
            f"methods.{name}: {tuned} `tuned`: the values are chosen on tuning questions by "
            "`specrepro tune-trees` (the DAG's tune_trees rule); give its file to generate "
            "with --tuning FILE"
        )
    try:
        stop_at_answer = _stop_at_answer(entry)
    except MethodError as err:
        raise ConfigError(f"methods.{name}: {err}") from err
    return MethodChoice(
        name=name,
        algorithm=entry["algorithm"],
        params=make_params(entry["algorithm"], _algorithm_values(entry)),
        stop_at_answer=stop_at_answer,
    )


def resolve_pair(config: dict, name: str) -> dict:
    if name not in config["pairs"]:
        raise ConfigError(
            f"unknown pair {name!r}; configured pairs: {', '.join(sorted(config['pairs']))}"
        )
    return config["pairs"][name]


def model_spec(config: dict, name: str) -> ModelSpec:
    return ModelSpec.from_config(name, config["models"]["registry"][name])
