"""The analysis subcommands over all pairs: tidy (the tidy table), report, claims and notebook."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from specrepro.cli.common import Subcommand, config_arg


def tidy_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tidy", help="score raw results and write one tidy table of all runs")
    config_arg(p)
    p.add_argument("--out", required=True, help="CSV path")
    p.add_argument("--coverage-out", help="JSON with dataset coverage notes")
    p.add_argument(
        "results",
        nargs="+",
        help="raw result files (.jsonl) to score, or tidy tables (.csv) to concatenate",
    )


def report_parser(sub: argparse._SubParsersAction) -> None:
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


def claims_parser(sub: argparse._SubParsersAction) -> None:
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


def notebook_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("notebook", help="execute a notebook on the tidy table")
    p.add_argument("--template", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tidy", required=True)
    p.add_argument("--summary-out", default="")
    p.add_argument("--baseline", default="vanilla")


def cmd_tidy(args: argparse.Namespace) -> int:
    import pandas as pd

    from specrepro.config import load_config
    from specrepro.metrics.scorers import dataset_scorers
    from specrepro.report.tidy import coverage_notes, tidy_table

    config = load_config(args.config, args.set_json)
    data_dir = Path(config["data"]["dir"])
    scorers = dataset_scorers(config)
    paths = [Path(p) for p in args.results]
    # Tables of one target each (what a paper's per-pair table needs) merge into the full one.
    raw = [p for p in paths if p.suffix != ".csv"]
    frames = [pd.read_csv(p) for p in paths if p.suffix == ".csv"]
    tidy = [tidy_table(raw, data_dir, scorers)] if raw else []
    table = pd.concat(frames + tidy, ignore_index=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    if args.coverage_out:
        notes = coverage_notes(sorted(table["dataset"].unique()), data_dir, scorers)
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
    from specrepro.report.tables import scorers_of, write_dataset_tables

    tidy = pd.read_csv(args.tidy)
    tidy = tidy[~tidy["pair"].isin(args.skip_pairs)]
    summary = summarise(tidy, baseline=args.baseline)
    notes = json.loads(Path(args.coverage).read_text()) if args.coverage else None
    tables_dir, figures_dir = Path(args.tables_dir), Path(args.figures_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    # Each dataset's quality columns are its scorer's (the tidy table names it per row).
    scorers = scorers_of(tidy)
    paths = write_dataset_tables(summary, tables_dir, notes, args.baseline, scorers)
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

    from specrepro.controls import load_run_claims
    from specrepro.report.claims import check_claims, claims_markdown

    study = {}
    for item in args.study:
        pair, _, path = item.partition("=")
        study[pair] = json.loads(Path(path).read_text())
    tidy = pd.read_csv(args.tidy)
    tidy = tidy[~tidy["pair"].isin(args.skip_pairs) & ~tidy["method"].isin(args.skip)]
    # A control claim without a dataset and temperature: one per (dataset, T) that ran.
    claims = load_run_claims([Path(p) for p in args.claims], tidy)
    table = check_claims(tidy, claims, args.baseline, study)
    Path(args.out_md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_md).write_text(claims_markdown(table))
    table.to_csv(args.out_csv, index=False)
    print(table[["claim", "status"]].to_string(index=False))
    return 0


def cmd_notebook(args: argparse.Namespace) -> int:
    from specrepro.report.notebook import execute_notebook

    params = {"tidy_csv": str(Path(args.tidy).resolve()), "baseline": args.baseline}
    params["summary_csv"] = str(Path(args.summary_out).resolve()) if args.summary_out else ""
    print(execute_notebook(Path(args.template), Path(args.out), params))
    return 0


def costs_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "costs",
        help="what each GPU job of a config holds and costs (estimated from parameter counts)",
    )
    config_arg(p)
    p.add_argument("--bandwidth", type=float, help="GPU memory bandwidth in bytes/s")
    p.add_argument("--out", help="also write the markdown table here")


def cmd_costs(args: argparse.Namespace) -> int:
    from specrepro.config import load_config
    from specrepro.planning import make_plan
    from specrepro.planning.cost import cost_table_markdown, job_costs

    config = load_config(args.config, args.set_json)
    table = cost_table_markdown(config["run"], job_costs(make_plan(config), args.bandwidth))
    if args.out:
        Path(args.out).write_text(table)
    print(table)
    return 0


SUBCOMMANDS: dict[str, Subcommand] = {
    "costs": Subcommand(costs_parser, cmd_costs),
    "tidy": Subcommand(tidy_parser, cmd_tidy),
    "report": Subcommand(report_parser, cmd_report),
    "claims": Subcommand(claims_parser, cmd_claims),
    "notebook": Subcommand(notebook_parser, cmd_notebook),
}
