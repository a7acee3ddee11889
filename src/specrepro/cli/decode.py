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
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timings of each run and question, interleaved; the fastest is kept "
        "(default: runs.repeats or 1)",
    )
    p.add_argument(
        "--tuning",
        action="append",
        default=[],
        metavar="PAIR=FILE",
        help="a pair's tree tuning file (tune-trees): its choices replace `tuned` values",
    )
    p.add_argument("--out", required=True, help="result JSONL (resumed if a partial file exists)")
    p.add_argument("--no-progress", action="store_true")


def tune_trees_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune-trees",
        help="choose the CPU tree size and DDD's threshold on a dataset's tuning questions",
    )
    config_arg(p)
    p.add_argument("--pair", required=True)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "int4"], default="float32")
    p.add_argument("--device", default=None, help="torch device (default: runs.device or cpu)")
    p.add_argument("--out", required=True, help="the tuning file (JSON)")


def _tuned_configs(args: argparse.Namespace, config: dict) -> dict[str, dict]:
    """{pair: the config with that pair's tuning file applied to every method entry}."""
    import json

    from specrepro.tree_tuning import apply_tuning

    configs = {}
    for spec in args.tuning:
        pair, sep, path = spec.partition("=")
        if not sep or not pair or not path:
            raise ValueError(f"--tuning {spec!r}: expected PAIR=FILE")
        tuning = json.loads(Path(path).read_text())
        configs[pair] = {**config, "methods": apply_tuning(config["methods"], tuning, path)}
    return configs


def _members(args: argparse.Namespace, config: dict) -> list:
    """The timing group's runs, from --pair/--method and each --member."""
    from specrepro.config import resolve_method, resolve_pair
    from specrepro.run.timing_group import Member

    specs = list(args.member)
    if args.pair or args.method:
        if not (args.pair and args.method):
            raise ValueError("--pair and --method go together")
        specs.insert(0, f"{args.pair}/{args.method}")
    if not specs:
        raise ValueError("name the runs: --pair P --method M, or --member P/M (repeatable)")
    tuned = _tuned_configs(args, config)
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
        choice = resolve_method(tuned.get(pair, config), method)
        members.append(Member(pair, choice, questions))
    return members


def cmd_generate(args: argparse.Namespace) -> int:
    from specrepro.config import load_config, model_spec
    from specrepro.data import read_prompts_jsonl
    from specrepro.models.loader import check_available
    from specrepro.planning.methods import needed_roles

    # Everything that can be wrong with the input is checked before any weights load.
    config = load_config(args.config, args.set_json)
    members = _members(args, config)
    if args.max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be >= 1")
    if args.temperature < 0:
        raise ValueError("--temperature must be >= 0")
    if args.repeats is not None and args.repeats < 1:
        raise ValueError("--repeats must be >= 1")
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

    from specrepro.run.harness import load_pair
    from specrepro.run.timing_group import run_group

    device = args.device or config["runs"].get("device", "cpu")
    models: dict = {}
    loaded = {
        pair: load_pair(config, pair, args.dtype, device, tuple(sorted(needed)), models)
        for pair, needed in roles.items()
    }
    warmup = args.warmup if args.warmup is not None else config["runs"].get("warmup", 1)
    repeats = args.repeats if args.repeats is not None else config["runs"].get("repeats", 1)
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
        repeats=repeats,
    )
    print(out)
    return 0


def cmd_tune_trees(args: argparse.Namespace) -> int:
    import json

    from specrepro.config import load_config, resolve_method, resolve_pair
    from specrepro.data import load_tuning_prompts
    from specrepro.prompting import encode_turn
    from specrepro.run.harness import load_pair
    from specrepro.tree_tuning import apply_tuning, tune_trees

    config = load_config(args.config, args.set_json)
    resolve_pair(config, args.pair)
    spec = config.get("tree_tuning")
    if not spec:
        raise ValueError("the config has no tree_tuning block: nothing to tune")
    sizes = [int(s) for s in spec["total_tokens"]]
    # The entries at a placeholder value: the tuning sets size and threshold itself.
    placeholder = {"chosen": {"total_tokens": sizes[0], "threshold": 0.0}}
    methods = apply_tuning(config["methods"], placeholder)
    chosen = {**config, "methods": methods}
    size_entry = resolve_method(chosen, spec["size_entry"])
    threshold_entry = resolve_method(chosen, spec["threshold_entry"])
    dataset = config["datasets"][spec["dataset"]]
    prompts = load_tuning_prompts(
        spec["dataset"],
        Path(config["data"]["dir"]),
        dataset["n"],
        config["runs"].get("subsample_seed", 0),
        dataset["tuning"],
        entry=dataset,
    )
    device = args.device or config["runs"].get("device", "cpu")
    loaded = load_pair(config, args.pair, args.dtype, device, ("head",))
    encoded = [encode_turn(loaded.tokenizer, p, 0, [], loaded.conversation) for p in prompts]
    max_new = spec.get("max_new_tokens", dataset["max_new_tokens"])
    result = tune_trees(loaded, size_entry, threshold_entry, sizes, encoded, max_new)
    result |= {"pair": args.pair, "dataset": spec["dataset"], "dtype": args.dtype}
    result["model_fingerprints"] = loaded.fingerprints
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{out}: {result['chosen']}")
    return 0


SUBCOMMANDS: dict[str, Subcommand] = {
    "generate": Subcommand(generate_parser, cmd_generate),
    "tune-trees": Subcommand(tune_trees_parser, cmd_tune_trees),
}
