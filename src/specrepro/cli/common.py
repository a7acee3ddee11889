"""What several subcommand groups share: the config options, config entries and model loading."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # transformers is imported only by the subcommands that load models
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_CONFIG = "config/config.yaml"


class Subcommand(NamedTuple):
    """What a group module registers per subcommand name; `add_parser` adds the subparser."""

    add_parser: Callable[[argparse._SubParsersAction], None]
    run: Callable[[argparse.Namespace], int]


def config_arg(p: argparse.ArgumentParser) -> None:
    """Add --config and --set-json, the options of every subcommand that reads the config."""
    p.add_argument(
        "--config",
        action="append",
        help="config YAML; repeat to merge several, later ones win (default: the files in "
        f"$SPECREPRO_CONFIG, which the workflow sets for its jobs, else {DEFAULT_CONFIG})",
    )
    p.add_argument(
        "--set-json",
        type=_json_entries,
        default={},
        metavar="JSON",
        help="config entries to set over the files, e.g. '{\"methods.sps.gamma\": 2}' "
        "(the workflow passes each job's own entries this way)",
    )


def _json_entries(text: str) -> dict:
    """The --set-json value: a JSON object of dotted config path -> value."""
    try:
        entries = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err
    if not isinstance(entries, dict):
        raise argparse.ArgumentTypeError("must be a JSON object of dotted path -> value")
    return entries


def section_entry(config: dict, section: str, name: str) -> dict:
    """The entry `name` of a config section, or a ConfigError listing the section's entries."""
    from specrepro.config import ConfigError

    entries = config.get(section, {})
    if name not in entries:
        raise ConfigError(
            f"unknown {section} entry {name!r}; {section}: {', '.join(sorted(entries)) or 'none'}"
        )
    return entries[name]


def load_teacher(
    config: dict, name: str, training: bool = False, dtype: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A registry model and its tokenizer, placed as `job_placement` says (in `dtype` when
    given: a teacher's own `dtype`)."""
    from specrepro.config import model_spec
    from specrepro.models.loader import load_model
    from specrepro.placement import job_placement

    job_dtype, device = job_placement(config, training)
    dtype = dtype or job_dtype
    return load_model(model_spec(config, name), dtype, device, Path(config["models"]["cache_dir"]))
