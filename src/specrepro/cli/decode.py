"""The decoding subcommand: generate, one timing group of runs over a prompt file."""

from __future__ import annotations

import argparse
from pathlib import Path

from specrepro.cli.common import Subcommand, config_arg


def generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="run methods of pairs over a prompt file, interleaved per question (one timing "
        "group, one result file)",
    )
    config_arg(p)
    p.add_argument("--pair", help="with --method: a group of one run")
    p.add_argument("--method", help="a methods entry of the config or an algorithm")
    p.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="PAIR/METHOD[@N]",
        help="a run of the timing group (repeatable); @N: only the first N prompts",
    )
    p.add_argument("--prompts", required=True, help="JSONL, records with question_id and turns")
    p.add_argument("--max-new-tokens", type=int, required=True)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "int4"], default="float32")
    p.add_argument("--device", default=None, help="torch device (default: runs.device or cpu)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up generations (not recorded)")
    p.add_argument("--out", required=True, help="result JSONL (resumed if a partial file exists)")
    p.add_argument("--no-progress", action="store_true")


def _members(args: argparse.Namespace, config: dict) -> list:
    """The timing group's runs, from --pair/--method and each --member."""
    from specrepro.config import resolve_method, resolve_pair
    from specrepro.timing_group import Member

    specs = list(args.member)
    if args.pair or args.method:
        if not (args.pair and args.method):
            raise ValueError("--pair and --method go together")
        specs.insert(0, f"{args.pair}/{args.method}")
    if not specs:
        raise ValueError("name the runs: --pair P --method M, or --member P/M (repeatable)")
    members = []
    for spec in specs:
        run, _, first = spec.partition("@")
        pair, slash, method = run.partition("/")
        if not slash or not pair or not method:
            raise ValueError(f"--member {spec!r}: expected PAIR/METHOD or PAIR/METHOD@N")
        if first and (not first.isdigit() or int(first) < 1):
            raise ValueError(f"--member {spec!r}: N must be a positive whole number")
        resolve_pair(config, pair)
        questions = int(first) if first else None
        members.append(Member(pair, resolve_method(config, method), questions))
    return members


def cmd_generate(args: argparse.Namespace) -> int:
    from specrepro.config import load_config, model_spec
    from specrepro.data import read_prompts_jsonl
    from specrepro.decoding.base import needed_roles
    from specrepro.models.loader import check_available

    # Everything that can be wrong with the input is checked before any weights load.
    config = load_config(args.config, args.set_json)
    members = _members(args, config)
    if args.max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be >= 1")
    if args.temperature < 0:
        raise ValueError("--temperature must be >= 0")
    prompts = read_prompts_jsonl(Path(args.prompts))
    roles: dict[str, set[str]] = {}
    for member in members:
        pair = config["pairs"][member.pair]
        needed = needed_roles(member.method.algorithm)
        for role in needed:
            if role not in pair:
                raise ValueError(
                    f"method {member.method.name!r} needs a {role}; pair {member.pair!r} has none"
                )
        roles.setdefault(member.pair, set()).update(needed)
        for role in ("target", *needed):
            check_available(model_spec(config, pair[role]))

    from specrepro.harness import load_pair
    from specrepro.timing_group import run_group

    device = args.device or config["runs"].get("device", "cpu")
    models: dict = {}
    loaded = {
        pair: load_pair(config, pair, args.dtype, device, tuple(sorted(needed)), models)
        for pair, needed in roles.items()
    }
    warmup = args.warmup if args.warmup is not None else config["runs"].get("warmup", 1)
    out = run_group(
        config,
        loaded,
        members,
        prompts,
        Path(args.out),
        args.max_new_tokens,
        args.temperature,
        args.seed,
        args.dtype,
        warmup=warmup,
        progress=not args.no_progress,
    )
    print(out)
    return 0


SUBCOMMANDS: dict[str, Subcommand] = {
    "generate": Subcommand(generate_parser, cmd_generate),
}
