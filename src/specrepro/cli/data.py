"""The data subcommands: check, fetch-data, prompts and train-prompts."""

from __future__ import annotations

import argparse
from pathlib import Path

from specrepro.cli.common import Subcommand, config_arg, section_entry


def check_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate the config, data and models without loading weights")
    config_arg(p)


def fetch_data_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch-data",
        help="copy a dataset from the mirror (or download) and verify sha256; a jsonl dataset "
        "is checked and hashed where it lies",
    )
    config_arg(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--mirror", help="mirror folder (default: data.mirror of the config)")
    p.add_argument("--dest", help="data folder (default: data.dir of the config)")


def prompts_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prompts", help="write the evaluated prompt subset of a dataset as JSONL")
    config_arg(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--n", type=int, help="subset size (default: datasets.NAME.n)")
    p.add_argument("--seed", type=int, help="subsample seed (default: runs.subsample_seed)")
    p.add_argument("--out", required=True)


def train_prompts_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-prompts", help="write a teacher's training prompts, disjoint from evaluated ones"
    )
    config_arg(p)
    p.add_argument("--teacher", required=True, help="name of a teachers entry (a target model)")
    p.add_argument("--out", required=True)


def cmd_check(args: argparse.Namespace) -> int:
    from specrepro.config import load_config, model_spec
    from specrepro.data import verify_dataset, verify_jsonl_dataset
    from specrepro.models.loader import check_available
    from specrepro.models.pair_rules import check_pair
    from specrepro.planning import needed_roles
    from specrepro.planning.datasets import JSONL

    config = load_config(args.config, args.set_json)
    for name in config["runs"]["datasets"]:
        entry = config["datasets"][name]
        if entry.get("kind") == JSONL:
            verify_jsonl_dataset(name, entry, Path(config["data"]["dir"]))
        else:
            verify_dataset(name, Path(config["data"]["dir"]))
    methods = config["runs"]["methods"]
    roles = {r for m in methods for r in needed_roles(config["methods"][m]["algorithm"])}
    for pair in config["runs"]["pairs"]:
        check_available(model_spec(config, config["pairs"][pair]["target"]))
        members = {"target", *roles} & set(config["pairs"][pair])
        specs = {role: model_spec(config, config["pairs"][pair][role]) for role in members}
        for line in check_pair(pair, specs, Path(config["models"]["cache_dir"])):
            print(f"pair {pair}: not checked yet: {line}")
    print(f"{', '.join(args.config)}: OK")
    return 0


def cmd_fetch_data(args: argparse.Namespace) -> int:
    from specrepro.config import load_config
    from specrepro.data import fetch_dataset, fetch_jsonl_dataset
    from specrepro.planning.datasets import JSONL

    config = load_config(args.config, args.set_json)
    data = config["data"]
    entry = config["datasets"].get(args.dataset, {})
    if entry.get("kind") == JSONL:  # read in place: checked and hashed, never copied
        print(fetch_jsonl_dataset(args.dataset, entry, Path(args.dest or data["dir"])))
        return 0
    mirror = args.mirror or data.get("mirror")
    # A configured mirror folder that does not exist is passed on, so that a failed download
    # says which folder was expected (the default config downloads when its mirror is absent).
    mirror_path = Path(mirror) if mirror else None
    out = fetch_dataset(args.dataset, Path(args.dest or data["dir"]), mirror_path, data.get("urls"))
    print(out)
    return 0


def cmd_prompts(args: argparse.Namespace) -> int:
    from specrepro.config import ConfigError, load_config
    from specrepro.data import load_prompts, write_jsonl

    config = load_config(args.config, args.set_json)
    if args.dataset not in config["datasets"]:
        raise ConfigError(f"dataset {args.dataset!r} is not configured under datasets")
    n = args.n if args.n is not None else config["datasets"][args.dataset]["n"]
    seed = args.seed if args.seed is not None else config["runs"].get("subsample_seed", 0)
    entry = config["datasets"][args.dataset]
    records = load_prompts(args.dataset, Path(config["data"]["dir"]), n, seed, entry)
    write_jsonl(records, Path(args.out))
    print(f"{len(records)} prompts -> {args.out}")
    return 0


def cmd_train_prompts(args: argparse.Namespace) -> int:
    from specrepro.config import load_config
    from specrepro.data import load_training_prompts, write_jsonl

    config = load_config(args.config, args.set_json)
    entry = section_entry(config, "teachers", args.teacher)
    # Every configured dataset's evaluated subset is excluded, whether or not it runs now.
    datasets = sorted(config["datasets"])
    records = load_training_prompts(
        datasets,
        Path(config["data"]["dir"]),
        {d: config["datasets"][d]["n"] for d in datasets},
        config["runs"].get("subsample_seed", 0),
        entry.get("train_prompts", 128),
        entry.get("seed", 0),
        {d: config["datasets"][d].get("tuning", 0) for d in datasets},
        config["datasets"],
    )
    write_jsonl(records, Path(args.out))
    print(f"{len(records)} training prompts -> {args.out}")
    return 0


SUBCOMMANDS: dict[str, Subcommand] = {
    "check": Subcommand(check_parser, cmd_check),
    "fetch-data": Subcommand(fetch_data_parser, cmd_fetch_data),
    "prompts": Subcommand(prompts_parser, cmd_prompts),
    "train-prompts": Subcommand(train_prompts_parser, cmd_train_prompts),
}
