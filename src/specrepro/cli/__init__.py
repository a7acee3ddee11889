"""Command-line interface; the Snakemake rules call these subcommands."""

from __future__ import annotations

import argparse
import os
import sys

from specrepro.cli import analysis, data, decode, models, studies, training
from specrepro.cli.common import DEFAULT_CONFIG

SUBCOMMANDS = {
    **data.SUBCOMMANDS,
    **training.SUBCOMMANDS,
    **models.SUBCOMMANDS,
    **decode.SUBCOMMANDS,
    **analysis.SUBCOMMANDS,
    **studies.SUBCOMMANDS,
}
# The order `specrepro --help` lists the subcommands in, kept from before the CLI was split
# into groups.
HELP_ORDER = (
    "check",
    "fetch-data",
    "prompts",
    "train-prompts",
    "teacher-corpus",
    "prepare-model",
    "download-model",
    "train-draft",
    "draft-quality",
    "train-head",
    "claims",
    "ddd-table",
    "acceptance-table",
    "ddd-sweep",
    "dsbd-report",
    "tune-trees",
    "generate",
    "tidy",
    "report",
    "latency-profile",
    "twins",
    "draft-design-report",
    "notebook",
    "costs",
)
if set(HELP_ORDER) != set(SUBCOMMANDS):  # a new subcommand would otherwise be dropped silently
    raise RuntimeError(f"HELP_ORDER and the groups' subcommands differ: {HELP_ORDER}")
COMMANDS = {name: SUBCOMMANDS[name].run for name in HELP_ORDER}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specrepro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in HELP_ORDER:
        SUBCOMMANDS[name].add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "config") and not args.config:
        workflow_configs = os.environ.get("SPECREPRO_CONFIG", "")
        args.config = workflow_configs.split(os.pathsep) if workflow_configs else [DEFAULT_CONFIG]
    from specrepro.errors import USER_ERRORS

    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as err:
        print(f"specrepro {args.command}: error: {err}", file=sys.stderr)
        return 2


__all__ = ["COMMANDS", "DEFAULT_CONFIG", "build_parser", "main"]
