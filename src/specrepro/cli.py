"""Command-line interface; the Snakemake rules call these subcommands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_CONFIG = "config/config.yaml"


def _config_arg(p: argparse.ArgumentParser) -> None:
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
    try:
        entries = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err
    if not isinstance(entries, dict):
        raise argparse.ArgumentTypeError("must be a JSON object of dotted path -> value")
    return entries


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specrepro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate the config, data and models without loading weights")
    _config_arg(p)

    p = sub.add_parser(
        "fetch-data", help="copy a dataset from the mirror (or download) and verify sha256"
    )
    _config_arg(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--mirror", help="mirror folder (default: data.mirror of the config)")
    p.add_argument("--dest", help="data folder (default: data.dir of the config)")

    p = sub.add_parser("prompts", help="write the evaluated prompt subset of a dataset as JSONL")
    _config_arg(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--n", type=int, help="subset size (default: datasets.NAME.n)")
    p.add_argument("--seed", type=int, help="subsample seed (default: runs.subsample_seed)")
    p.add_argument("--out", required=True)

    p = sub.add_parser(
        "train-prompts", help="write a teacher's training prompts, disjoint from evaluated ones"
    )
    _config_arg(p)
    p.add_argument("--teacher", required=True, help="name of a teachers entry (a target model)")
    p.add_argument("--out", required=True)

    p = sub.add_parser(
        "teacher-corpus",
        help="run a target over its training prompts: tokens, top-k log-probs, features",
    )
    _config_arg(p)
    p.add_argument("--teacher", required=True)
    p.add_argument("--prompts", required=True, help="training prompts JSONL")
    p.add_argument("--out", required=True, help="corpus file (.pt)")

    p = sub.add_parser(
        "prepare-model", help="resolve a model (convert a GGUF file once) into the cache"
    )
    _config_arg(p)
    p.add_argument("--model", required=True)

    p = sub.add_parser(
        "download-model",
        help="bring a hub model into the local hub cache (HF_* variables apply; offline with "
        "HF_HUB_OFFLINE=1 when cached) and write a JSON marker naming its commit",
    )
    p.add_argument("--model", required=True, help="hub id, e.g. lmsys/vicuna-7b-v1.3")
    p.add_argument("--revision", help="branch, tag or commit (default: main)")
    p.add_argument("--out", required=True, help="marker JSON: model, revision, commit, path")

    p = sub.add_parser("train-draft", help="distil a draft model from its teacher (drafts.NAME)")
    _config_arg(p)
    p.add_argument("--draft", required=True)
    p.add_argument("--corpus", required=True, help="the teacher corpus (teacher-corpus)")
    p.add_argument("--out", help="output folder (default: the registry path)")

    p = sub.add_parser(
        "draft-quality",
        help="a draft's held-out perplexity and agreement on its target's corpus, its size, "
        "and its own task accuracy (the draft alone, vanilla decoding at T=0)",
    )
    _config_arg(p)
    p.add_argument("--draft", required=True, help="a models.registry entry")
    p.add_argument("--corpus", required=True, help="the target's teacher corpus")
    p.add_argument(
        "--accuracy",
        nargs="*",
        default=[],
        metavar="DATASET=PROMPTS",
        help="datasets on which the draft alone answers the evaluated prompts (scored as the "
        "tidy table scores: SQuAD EM/F1, Spider execution accuracy)",
    )
    p.add_argument("--pair", help="the pair whose conversation format the draft answers in")
    p.add_argument("--out", required=True, help="JSON")

    p = sub.add_parser("train-head", help="train an EAGLE head for its target (heads.NAME)")
    _config_arg(p)
    p.add_argument("--head", required=True)
    p.add_argument("--corpus", required=True, help="the teacher corpus (teacher-corpus)")
    p.add_argument("--out", help="output folder (default: the registry path)")

    p = sub.add_parser("claims", help="check papers' claims (YAML) against the tidy table")
    p.add_argument("--tidy", required=True)
    p.add_argument("--claims", nargs="+", required=True, help="claims files")
    p.add_argument("--baseline", default="vanilla")
    p.add_argument(
        "--study",
        nargs="*",
        default=[],
        metavar="PAIR=JSON",
        help="draft-design study results (draft-design-report --out-json) by base pair",
    )
    p.add_argument(
        "--skip-pairs", nargs="*", default=[], help="pairs left out (the study's draft pairs)"
    )
    p.add_argument(
        "--skip", nargs="*", default=[], help="methods left out (sweep points not in runs)"
    )
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-csv", required=True)

    p = sub.add_parser("ddd-table", help="the DDD paper's table for one pair (Markdown)")
    p.add_argument("--tidy", required=True)
    p.add_argument("--pair", required=True)
    p.add_argument("--dataset", default="mtbench")
    p.add_argument("--baseline", default="vanilla")
    p.add_argument("--skip", nargs="*", default=[], help="methods to leave out (sweep points)")
    p.add_argument("--out", required=True)

    p = sub.add_parser(
        "ddd-sweep", help="DDD speedup, tau and depth against x and S (Markdown + figure)"
    )
    p.add_argument("--tidy", required=True)
    p.add_argument("--pair", required=True)
    p.add_argument("--dataset", default="mtbench")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--baseline", default="vanilla")
    p.add_argument("--out-md", required=True)
    p.add_argument("--figure", required=True, help="figure path without extension")

    p = sub.add_parser(
        "dsbd-report",
        help="the DSBD paper's tables for one pair (one per dataset) and the DSBD figures",
    )
    p.add_argument("--tidy", required=True)
    p.add_argument("--pair", required=True)
    p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--tables-dir", required=True, help="writes dsbd_{pair}_{dataset}.md")
    p.add_argument("--figures-dir", required=True, help="writes dsbd_{threshold,width}_{pair}")

    p = sub.add_parser(
        "generate",
        help="run methods of pairs over a prompt file, interleaved per question (one timing "
        "group, one result file)",
    )
    _config_arg(p)
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
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--device", default=None, help="torch device (default: runs.device or cpu)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up generations (not recorded)")
    p.add_argument("--out", required=True, help="result JSONL (resumed if a partial file exists)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("tidy", help="score raw results and write one tidy table of all runs")
    _config_arg(p)
    p.add_argument("--out", required=True, help="CSV path")
    p.add_argument("--coverage-out", help="JSON with dataset coverage notes")
    p.add_argument(
        "results",
        nargs="+",
        help="raw result files (.jsonl) to score, or tidy tables (.csv) to concatenate",
    )

    p = sub.add_parser("report", help="tables and figures from the tidy table")
    p.add_argument("--tidy", required=True)
    p.add_argument("--coverage", help="coverage JSON written by `tidy`")
    p.add_argument("--tables-dir", required=True)
    p.add_argument("--figures-dir", required=True)
    p.add_argument(
        "--skip", nargs="*", default=[], help="methods left out of the figures (sweep points)"
    )
    p.add_argument(
        "--skip-pairs",
        nargs="*",
        default=[],
        help="pairs left out of tables and figures (the draft-design study's drafts)",
    )
    p.add_argument("--baseline", default="vanilla")

    p = sub.add_parser(
        "latency-profile",
        help="per-token latency of one draft forward against depth at equal size (random weights)",
    )
    _config_arg(p)
    p.add_argument("--scale", choices=["default", "paper"], required=True)
    p.add_argument("--target", help="the model whose layer shape a built family keeps")
    p.add_argument(
        "--family",
        nargs="*",
        default=[],
        metavar="NAME:DEPTH[:HIDDEN]",
        help="built family members: equal-size shapes solved from the target's (at HIDDEN, "
        "the wide family's own model width, when given)",
    )
    p.add_argument("--budget-layers", type=int, default=2, help="family size, in target layers")
    p.add_argument(
        "--drafts", nargs="*", default=[], help="registry drafts profiled at their own shape"
    )
    p.add_argument("--tokens", type=int, default=16, help="timed one-token forwards per repeat")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--device", default=None, help="torch device (default: runs.device or cpu)")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="default: float32 on CPU, float16 on GPU",
    )
    p.add_argument("--out", required=True, help="JSON rows")

    p = sub.add_parser(
        "draft-design-report",
        help="the draft-design study: table, study results (JSON) and the three figures",
    )
    p.add_argument("--tidy", required=True)
    p.add_argument("--pair", required=True, help="the base pair (target, baseline run)")
    p.add_argument(
        "--members",
        nargs="+",
        required=True,
        metavar="PAIR=QUALITY_JSON",
        help="each draft's pair and its draft-quality JSON",
    )
    p.add_argument(
        "--roles",
        nargs="*",
        default=[],
        metavar="DRAFT=ROLE",
        help="each draft's role: existing (the pair's own), a family (depth, wide) or other",
    )
    p.add_argument(
        "--sweep",
        nargs="*",
        default=[],
        metavar="METHOD=ENTRY,ENTRY",
        help="each study method's lookahead entries (the method itself among them)",
    )
    p.add_argument(
        "--tune",
        nargs="*",
        default=[],
        metavar="DATASET=N",
        help="the first N study questions of a dataset choose each draft's gamma",
    )
    p.add_argument(
        "--prompts", nargs="*", default=[], metavar="DATASET=JSONL", help="question order"
    )
    p.add_argument(
        "--training-logs", nargs="*", default=[], metavar="DRAFT=JSON", help="loss curves"
    )
    p.add_argument("--latency", required=True, help="latency-profile JSON, default scale")
    p.add_argument("--paper-latency", help="latency-profile JSON, paper scale")
    p.add_argument("--baseline", default="vanilla")
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-json", required=True)
    p.add_argument("--figures-dir", required=True)

    p = sub.add_parser("notebook", help="execute a notebook on the tidy table")
    p.add_argument("--template", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tidy", required=True)
    p.add_argument("--summary-out", default="")
    p.add_argument("--baseline", default="vanilla")
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


def cmd_check(args: argparse.Namespace) -> int:
    from specrepro.config import load_config, model_spec
    from specrepro.data import verify_dataset
    from specrepro.models.loader import check_available

    config = load_config(args.config, args.set_json)
    for name in config["runs"]["datasets"]:
        verify_dataset(name, Path(config["data"]["dir"]))
    for pair in config["runs"]["pairs"]:
        check_available(model_spec(config, config["pairs"][pair]["target"]))
    print(f"{', '.join(args.config)}: OK")
    return 0


def cmd_fetch_data(args: argparse.Namespace) -> int:
    from specrepro.config import load_config
    from specrepro.data import fetch_dataset

    config = load_config(args.config, args.set_json)
    data = config["data"]
    mirror = args.mirror or data.get("mirror")
    # A configured mirror folder that does not exist is passed on, so that a failed download
    # says which folder was expected (the default config downloads when ../shared/data is absent).
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
    records = load_prompts(args.dataset, Path(config["data"]["dir"]), n, seed)
    write_jsonl(records, Path(args.out))
    print(f"{len(records)} prompts -> {args.out}")
    return 0


def section_entry(config: dict, section: str, name: str) -> dict:
    from specrepro.config import ConfigError

    entries = config.get(section, {})
    if name not in entries:
        raise ConfigError(
            f"unknown {section} entry {name!r}; {section}: {', '.join(sorted(entries)) or 'none'}"
        )
    return entries[name]


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
    )
    write_jsonl(records, Path(args.out))
    print(f"{len(records)} training prompts -> {args.out}")
    return 0


def cmd_prepare_model(args: argparse.Namespace) -> int:
    from specrepro.config import ConfigError, load_config, model_spec
    from specrepro.models.loader import resolve

    config = load_config(args.config, args.set_json)
    if args.model not in config["models"]["registry"]:
        raise ConfigError(f"unknown model {args.model!r}")
    print(resolve(model_spec(config, args.model), Path(config["models"]["cache_dir"])))
    return 0


def cmd_download_model(args: argparse.Namespace) -> int:
    from specrepro.models.hub import download_model

    marker = download_model(args.model, args.revision)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(marker, indent=2) + "\n")
    print(f"{marker['model']}@{marker['commit']} -> {marker['path']}")
    return 0


def _load_teacher(config: dict, name: str):
    from specrepro.config import model_spec
    from specrepro.models.loader import load_model

    return load_model(
        model_spec(config, name), "float32", "cpu", Path(config["models"]["cache_dir"])
    )


def cmd_teacher_corpus(args: argparse.Namespace) -> int:
    from specrepro.config import load_config
    from specrepro.data import read_prompts_jsonl
    from specrepro.harness import seed_everything
    from specrepro.models.teacher import CorpusConfig, build_corpus
    from specrepro.prompting import default_conversation

    config = load_config(args.config, args.set_json)
    cfg = CorpusConfig.from_config(section_entry(config, "teachers", args.teacher))
    prompts = read_prompts_jsonl(Path(args.prompts))
    seed_everything(cfg.seed)
    teacher, tokenizer = _load_teacher(config, args.teacher)
    conversation = default_conversation(tokenizer)
    samples = build_corpus(teacher, tokenizer, prompts, cfg, conversation, Path(args.out))
    print(f"{len(samples)} sequences -> {args.out}")
    return 0


def _student_job(args: argparse.Namespace, section: str, name: str):
    """What training a student needs: its config entry, the teacher corpus, the teacher and the
    output folder (default: the student's registry path)."""
    from specrepro.config import load_config
    from specrepro.harness import seed_everything
    from specrepro.models.teacher import load_corpus

    config = load_config(args.config, args.set_json)
    entry = section_entry(config, section, name)
    samples, summary = load_corpus(Path(args.corpus))
    seed_everything(entry.get("seed", 0))
    teacher, tokenizer = _load_teacher(config, entry["teacher"])
    out = Path(args.out or config["models"]["registry"][name]["path"])
    out.parent.mkdir(parents=True, exist_ok=True)
    return entry, samples, summary, teacher, tokenizer, out


def cmd_train_draft(args: argparse.Namespace) -> int:
    from specrepro.models.distill import DistillConfig, distill

    entry, samples, summary, teacher, tokenizer, out = _student_job(args, "drafts", args.draft)
    distill(teacher, tokenizer, samples, DistillConfig.from_config(entry), out, summary)
    print(out)
    return 0


def cmd_draft_quality(args: argparse.Namespace) -> int:
    from specrepro.config import load_config
    from specrepro.models.distill import draft_quality
    from specrepro.models.teacher import load_corpus

    config = load_config(args.config, args.set_json)
    samples, summary = load_corpus(Path(args.corpus))
    draft, tokenizer = _load_teacher(config, args.draft)
    # A DAG-built draft is scored on the holdout its training kept out.
    entry = config.get("drafts", {}).get(args.draft, {})
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    quality = draft_quality(
        draft, samples, pad, entry.get("seed", 0), entry.get("holdout_fraction", 0.1)
    )
    quality.update(draft=args.draft, corpus=summary, training_steps=entry.get("steps"))
    log = _training_log(config, args.draft)
    if log:
        quality.update(
            training_steps=log.get("steps_run", quality["training_steps"]),
            training_stop=log.get("stop", "cap"),
            training_seconds=log.get("training_seconds"),
        )
    if args.accuracy:
        quality["accuracy"] = _draft_accuracy(config, args, draft, tokenizer)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(quality, indent=1))
    print(json.dumps({k: v for k, v in quality.items() if k.startswith("holdout")}))
    return 0


def _training_log(config: dict, name: str) -> dict | None:
    """A DAG-built draft's training_log.json (steps run, why it stopped), if it has one."""
    entry = config["models"]["registry"].get(name, {})
    path = Path(entry.get("path", "")) / "training_log.json"
    if entry.get("source") != "built" or not path.is_file():
        return None
    return json.loads(path.read_text())


def _draft_accuracy(config: dict, args: argparse.Namespace, draft, tokenizer) -> dict:
    """The draft alone (its own pair, vanilla decoding at T=0, the harness and stop rules of
    every run) on each dataset's evaluated prompts, scored as the tidy table scores them:
    {dataset: {n, em, f1, exec_match, per_question}}."""
    import tempfile

    import pandas as pd

    from specrepro.config import MethodChoice
    from specrepro.data import read_prompts_jsonl
    from specrepro.decoding.base import make_params
    from specrepro.engine.stopping import eos_token_ids, token_texts
    from specrepro.harness import LoadedPair, Member, run_group
    from specrepro.prompting import default_conversation
    from specrepro.report.tidy import tidy_table

    solo = f"{args.draft}-alone"
    base = config["pairs"].get(args.pair or "", {})
    conversation = base.get("conversation") or default_conversation(tokenizer)
    config["pairs"][solo] = {"target": args.draft, "conversation": conversation}
    loaded = LoadedPair(
        name=solo,
        target=draft,
        tokenizer=tokenizer,
        draft=None,
        conversation=conversation,
        eos_ids=eos_token_ids(tokenizer, draft.generation_config.eos_token_id),
        token_text=token_texts(tokenizer),
    )
    method = MethodChoice(name="vanilla", algorithm="vanilla", params=make_params("vanilla", {}))
    device = config["runs"].get("device", "cpu")
    if device != "cpu":
        draft.to(device)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.accuracy:
            dataset, _, path = item.partition("=")
            prompts = read_prompts_jsonl(Path(path))
            raw = Path(tmp) / dataset / "T0.0-s0.jsonl"
            raw.parent.mkdir(parents=True)
            budget = config["datasets"][dataset]["max_new_tokens"]
            run_group(config, {solo: loaded}, [Member(solo, method)], prompts, raw, budget,
                      0.0, 0, "float32", warmup=0, progress=False)  # fmt: skip
            frame: pd.DataFrame = tidy_table([raw], Path(config["data"]["dir"]))
            scores = frame.groupby("question_id")[["em", "f1", "exec_match"]].mean()
            out[dataset] = {
                "n": int(len(scores)),
                **{k: _mean_or_none(scores[k]) for k in ("em", "f1", "exec_match")},
                "per_question": {
                    str(q): {k: _or_none(v) for k, v in row.items()}
                    for q, row in scores.to_dict("index").items()
                },
            }
            print(dataset, {k: out[dataset][k] for k in ("n", "em", "f1", "exec_match")})
    return out


def _mean_or_none(series) -> float | None:
    values = series.dropna()
    return float(values.mean()) if len(values) else None


def _or_none(value) -> float | None:
    return None if value is None or value != value else float(value)


def cmd_train_head(args: argparse.Namespace) -> int:
    from specrepro.models.train_head import HeadTrainConfig, train_and_save

    entry, samples, summary, target, _, out = _student_job(args, "heads", args.head)
    train_and_save(target, samples, HeadTrainConfig.from_config(entry), out, summary)
    print(out)
    return 0


def _members(args: argparse.Namespace, config: dict) -> list:
    from specrepro.config import resolve_method, resolve_pair
    from specrepro.harness import Member

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

    from specrepro.harness import load_pair, run_group

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


def cmd_tidy(args: argparse.Namespace) -> int:
    import pandas as pd

    from specrepro.config import load_config
    from specrepro.report.tidy import coverage_notes, tidy_table

    config = load_config(args.config, args.set_json)
    data_dir = Path(config["data"]["dir"])
    paths = [Path(p) for p in args.results]
    # Tables of one target each (what a paper's per-pair table needs) merge into the full one.
    raw = [p for p in paths if p.suffix != ".csv"]
    frames = [pd.read_csv(p) for p in paths if p.suffix == ".csv"]
    table = pd.concat(frames + ([tidy_table(raw, data_dir)] if raw else []), ignore_index=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    if args.coverage_out:
        notes = coverage_notes(sorted(table["dataset"].unique()), data_dir)
        Path(args.coverage_out).write_text(json.dumps(notes, indent=1))
    print(f"{len(table)} rows -> {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import pandas as pd

    from specrepro.report.aggregate import summarise
    from specrepro.report.figures import (
        accepted_length_figure,
        draft_depth_figure,
        speedup_figure,
        time_split_figure,
    )
    from specrepro.report.tables import write_dataset_tables

    tidy = pd.read_csv(args.tidy)
    tidy = tidy[~tidy["pair"].isin(args.skip_pairs)]
    summary = summarise(tidy, baseline=args.baseline)
    notes = json.loads(Path(args.coverage).read_text()) if args.coverage else None
    tables_dir, figures_dir = Path(args.tables_dir), Path(args.figures_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    paths = write_dataset_tables(summary, tables_dir, notes, baseline=args.baseline)
    # Sweep points have their own figure; here they would crowd out the configured methods.
    shown = tidy[~tidy["method"].isin(args.skip)]
    shown_summary = summary[~summary["method"].isin(args.skip)]
    paths += speedup_figure(shown_summary, figures_dir / "speedup", baseline=args.baseline)
    paths += accepted_length_figure(shown, figures_dir / "accepted_length", baseline=args.baseline)
    paths += time_split_figure(shown_summary, figures_dir / "time_split")
    paths += draft_depth_figure(shown, figures_dir / "draft_depth")
    for path in paths:
        print(path)
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    import pandas as pd

    from specrepro.report.claims import check_claims, claims_markdown, load_claims

    study = {}
    for item in args.study:
        pair, _, path = item.partition("=")
        study[pair] = json.loads(Path(path).read_text())
    tidy = pd.read_csv(args.tidy)
    tidy = tidy[~tidy["pair"].isin(args.skip_pairs) & ~tidy["method"].isin(args.skip)]
    claims = load_claims([Path(p) for p in args.claims])
    table = check_claims(tidy, claims, args.baseline, study)
    Path(args.out_md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_md).write_text(claims_markdown(table))
    table.to_csv(args.out_csv, index=False)
    print(table[["claim", "status"]].to_string(index=False))
    return 0


def cmd_ddd_table(args: argparse.Namespace) -> int:
    import pandas as pd

    from specrepro.report.ddd import ddd_table

    text = ddd_table(
        pd.read_csv(args.tidy), args.pair, args.dataset, args.baseline, frozenset(args.skip)
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


def cmd_ddd_sweep(args: argparse.Namespace) -> int:
    import pandas as pd

    from specrepro.report.ddd import sweep_markdown, sweep_points
    from specrepro.report.figures import ddd_sweep_figure

    points = sweep_points(
        pd.read_csv(args.tidy), args.pair, args.dataset, args.temperature, args.baseline
    )
    title = f"DDD sweep: {args.pair}, {args.dataset}, T={args.temperature:g}"
    Path(args.out_md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_md).write_text(sweep_markdown(points, title))
    for path in ddd_sweep_figure(points, Path(args.figure), title):
        print(path)
    return 0


def cmd_dsbd_report(args: argparse.Namespace) -> int:
    import pandas as pd

    from specrepro.report.dsbd import dsbd_table, threshold_points, widths_by_level
    from specrepro.report.figures import dsbd_threshold_figure, dsbd_width_figure

    tidy = pd.read_csv(args.tidy)
    tables = Path(args.tables_dir)
    tables.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets:
        text = dsbd_table(tidy, args.pair, dataset)
        (tables / f"dsbd_{args.pair}_{dataset}.md").write_text(text)
        print(text)
    figures = Path(args.figures_dir)
    mine = tidy[tidy["pair"] == args.pair]
    title = f"DSBD: {args.pair}"
    paths = dsbd_threshold_figure(
        threshold_points(mine, args.pair), figures / f"dsbd_threshold_{args.pair}", title
    )
    paths += dsbd_width_figure(widths_by_level(mine), figures / f"dsbd_width_{args.pair}", title)
    for path in paths:
        print(path)
    return 0


def cmd_latency_profile(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoConfig, LlamaConfig

    from specrepro.config import ConfigError, load_config, model_spec
    from specrepro.models.family import Shape, equal_size_family, paper_shapes
    from specrepro.models.latency import LatencySettings, profile_shapes
    from specrepro.models.loader import check_available, resolve

    config = load_config(args.config, args.set_json)
    cache = Path(config["models"]["cache_dir"])

    def model_config(name: str) -> object:
        spec = model_spec(config, name)
        check_available(spec)
        return AutoConfig.from_pretrained(resolve(spec, cache))

    device = args.device or config["runs"].get("device", "cpu")
    dtype = args.dtype or ("float32" if device == "cpu" else "float16")
    shapes: dict[str, tuple[Shape, object]] = {}
    if args.scale == "paper":
        llama = LlamaConfig(max_position_embeddings=4096)
        shapes = {name: (shape, llama) for name, shape in paper_shapes().items()}
    elif args.family:
        if not args.target:
            raise ConfigError("latency-profile --family needs --target (the family's model)")
        target = model_config(args.target)
        for item in args.family:
            name, depth, *hidden = item.split(":")
            width = int(hidden[0]) if hidden else None
            (shape,) = equal_size_family(Shape.of(target), [int(depth)], args.budget_layers, width)
            shapes[name] = (shape, target)
    for name in args.drafts:
        draft = model_config(name)
        shapes[name] = (Shape.of(draft), draft)
    if not shapes:
        raise ConfigError(
            "latency-profile: nothing to profile (give --family, --drafts or --scale paper)"
        )
    settings = LatencySettings(args.prompt_tokens, args.warmup, args.tokens, args.repeats)
    rows = profile_shapes(shapes, settings, getattr(torch, dtype), device)
    for row in rows:
        row["scale"] = args.scale
        size = row["counted_parameters"] / 1e6
        print(f"{row['name']:<28} {size:8.1f}M {row['ms_per_token']:8.2f} ms/token")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


def _pairs_arg(items: list[str]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in items)


def cmd_draft_design_report(args: argparse.Namespace) -> int:
    import pandas as pd

    from specrepro.config import ConfigError
    from specrepro.data import read_prompts_jsonl
    from specrepro.report import draft_design as dd

    roles = _pairs_arg(args.roles)
    members = []
    for item in args.members:
        pair, _, path = item.partition("=")
        if not Path(path).exists():
            raise ConfigError(f"draft-design-report: {path} is missing (run draft-quality first)")
        quality = json.loads(Path(path).read_text())
        role = roles.get(quality["draft"], "existing" if pair == args.pair else "other")
        members.append(dd.Member(pair, quality["draft"], quality, role))
    tidy = pd.read_csv(args.tidy)
    latency = json.loads(Path(args.latency).read_text())
    paper = json.loads(Path(args.paper_latency).read_text()) if args.paper_latency else None
    inputs = dd.StudyInputs(
        tidy=tidy,
        base_pair=args.pair,
        members=members,
        latency=latency,
        baseline=args.baseline,
        sweep={m: names.split(",") for m, names in _pairs_arg(args.sweep).items()},
        tune={d: int(n) for d, n in _pairs_arg(args.tune).items()},
        order={
            d: [str(p["question_id"]) for p in read_prompts_jsonl(Path(path))]
            for d, path in _pairs_arg(args.prompts).items()
        },
    )
    table, sweep, results = dd.study(inputs)
    title = f"Draft design (depth and width at equal counted size): {args.pair}"
    Path(args.out_md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_md).write_text(dd.draft_markdown(table, sweep, results, title))
    Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_json).write_text(json.dumps(results, indent=1))
    table.to_csv(Path(args.out_json).with_name("table.csv"), index=False)
    sweep.to_csv(Path(args.out_json).with_name("gamma_sweep.csv"), index=False)
    figures = Path(args.figures_dir)
    logs = {d: json.loads(Path(p).read_text()) for d, p in _pairs_arg(args.training_logs).items()}
    roles = {m.draft: m.role for m in members}
    paths = dd.latency_figure(latency, roles, figures / f"draft_latency_{args.pair}", title, paper)
    paths += dd.tar_figure(table, results, figures / f"draft_tar_{args.pair}", title)
    paths += dd.throughput_figure(table, figures / f"draft_throughput_{args.pair}", title)
    paths += dd.gamma_figure(sweep, figures / f"draft_gamma_{args.pair}", title)
    paths += dd.training_figure(logs, figures / f"draft_training_{args.pair}", title)
    print(Path(args.out_md).read_text())
    for path in paths:
        print(path)
    return 0


def cmd_notebook(args: argparse.Namespace) -> int:
    from specrepro.report.notebook import execute_notebook

    params = {"tidy_csv": str(Path(args.tidy).resolve()), "baseline": args.baseline}
    params["summary_csv"] = str(Path(args.summary_out).resolve()) if args.summary_out else ""
    print(execute_notebook(Path(args.template), Path(args.out), params))
    return 0


COMMANDS = {
    "check": cmd_check,
    "fetch-data": cmd_fetch_data,
    "prompts": cmd_prompts,
    "train-prompts": cmd_train_prompts,
    "prepare-model": cmd_prepare_model,
    "download-model": cmd_download_model,
    "teacher-corpus": cmd_teacher_corpus,
    "train-draft": cmd_train_draft,
    "train-head": cmd_train_head,
    "draft-quality": cmd_draft_quality,
    "generate": cmd_generate,
    "tidy": cmd_tidy,
    "report": cmd_report,
    "notebook": cmd_notebook,
    "claims": cmd_claims,
    "ddd-table": cmd_ddd_table,
    "ddd-sweep": cmd_ddd_sweep,
    "dsbd-report": cmd_dsbd_report,
    "latency-profile": cmd_latency_profile,
    "draft-design-report": cmd_draft_design_report,
}

if __name__ == "__main__":
    sys.exit(main())
