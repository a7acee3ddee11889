"""How config files combine, as Snakemake combines them: `config/config.yaml` first (the
Snakefile's `configfile:`), then every file given with `--configfile`, in order, then
`--config KEY=VALUE`.

- A mapping merges key by key into the mapping before it (recursively): a later file changes
  only the keys it names.
- Anything else replaces: a list, a number, a string, and `null`.
- `null` switches off an optional block that an earlier file set (SWITCHES; `{}` cannot, since
  an empty mapping merges into the earlier one and changes nothing): for example
  `sweeps: {ddd: null}` drops the default's DDD sweep, `runs: {only: null}` its per-method
  dataset restrictions. The plan and the library then read the config as if the key were
  absent.

The run is named by `run`; without one, by the first config file given besides the default
(its file's stem), and `default` for the default config alone (`run_name`).
"""

from __future__ import annotations

import copy
import os

# The default config, relative to the repository root (where snakemake and the jobs run).
DEFAULT_CONFIG = "config/config.yaml"
DEFAULT_RUN = "default"

# Optional blocks that `null` switches off (dotted; `*` is every entry of a mapping).
SWITCHES = (
    "tree_tuning",
    "sweeps.ddd",
    "studies.draft_design",
    "runs.only",
    "runs.only_temperatures",
    "runs.threads",
    "datasets.*.temperatures",
    *(
        f"studies.draft_design.{key}"
        for key in (
            "depths", "reference", "families", "training", "pairs", "roles", "gammas",
            "questions", "tune_questions", "accuracy", "latency",
        )
    ),
)  # fmt: skip


def merge_into(base: dict, update: dict) -> None:
    """Recursive dict update, the way Snakemake combines several config files: mappings
    merge, every other value replaces."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_into(base[key], value)
        else:
            base[key] = value


def switch_off(config: dict) -> dict:
    """A copy of the config without the optional blocks set to null (SWITCHES)."""
    config = copy.deepcopy(config)
    for dotted in SWITCHES:
        _drop_null(config, dotted.split("."))
    return config


def _drop_null(node: object, keys: list[str]) -> None:
    if not isinstance(node, dict):
        return
    key, rest = keys[0], keys[1:]
    names = list(node) if key == "*" else [key]
    for name in names:
        if name not in node:
            continue
        if not rest:
            if node[name] is None:
                del node[name]
        else:
            _drop_null(node[name], rest)


def run_name(configfiles: list, default: str = DEFAULT_CONFIG) -> str:
    """The name of a run whose config sets no `run`: the stem of the first config file given
    besides the default config, or `default` when there is none."""
    default_path = os.path.realpath(default)
    own = [str(f) for f in configfiles if os.path.realpath(f) != default_path]
    if not own:
        return DEFAULT_RUN
    return os.path.splitext(os.path.basename(own[0]))[0]
