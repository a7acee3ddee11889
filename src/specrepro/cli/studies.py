"""The per-pair study reports: ddd-table, acceptance-table, ddd-sweep, dsbd-report and
draft-design-report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from specrepro.cli.common import Subcommand


def ddd_table_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ddd-table", help="the DDD paper's table for one pair (Markdown)")
    p.add_argument("--tidy", required=True)
    p.add_argument("--pair", required=True)
    p.add_argument("--dataset", default="mtbench")
    p.add_argument("--baseline", default="vanilla")
    p.add_argument("--skip", nargs="*", default=[], help="methods to leave out (sweep points)")
    p.add_argument("--out", required=True)


def acceptance_table_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "acceptance-table", help="acceptance by depth for sps and the tree methods (Markdown)"
    )
    p.add_argument("--tidy", required=True)
    p.add_argument("--pair", required=True)
    p.add_argument("--head-log", help="the head's training log (its agreement k tokens ahead)")
    p.add_argument("--out", required=True)


def cmd_acceptance_table(args: argparse.Namespace) -> int:
    import pandas as pd

    from specrepro.report.acceptance import acceptance_by_depth, acceptance_markdown

    ahead = None
    if args.head_log:
        log = json.loads(Path(args.head_log).read_text())["log"]
        ahead = next(
            (e["holdout_top1_ahead"] for e in reversed(log) if "holdout_top1_ahead" in e), None
        )
    text = acceptance_markdown(
        acceptance_by_depth(pd.read_csv(args.tidy), args.pair), args.pair, ahead
    )
    return write_table(Path(args.out), text)


def write_table(out: Path, text: str) -> int:
    """Write a Markdown table (its folder made) and print it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


def ddd_sweep_parser(sub: argparse._SubParsersAction) -> None:
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


def dsbd_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dsbd-report",
        help="the DSBD paper's tables for one pair (one per dataset) and the DSBD figures",
    )
    p.add_argument("--tidy", required=True)
    p.add_argument("--pair", required=True)
    p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--tables-dir", required=True, help="writes dsbd_{pair}_{dataset}.md")
    p.add_argument("--figures-dir", required=True, help="writes dsbd_{threshold,width}_{pair}")


def draft_design_report_parser(sub: argparse._SubParsersAction) -> None:
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
        "--reference",
        default=None,
        metavar="DRAFT",
        help="the draft every other is compared with (default: the pair's own); the pair's "
        "own draft is then left out of the ratios",
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


def cmd_ddd_table(args: argparse.Namespace) -> int:
    import pandas as pd

    from specrepro.report.ddd import ddd_table

    text = ddd_table(
        pd.read_csv(args.tidy), args.pair, args.dataset, args.baseline, frozenset(args.skip)
    )
    return write_table(Path(args.out), text)


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
        reference=args.reference,
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


SUBCOMMANDS: dict[str, Subcommand] = {
    "ddd-table": Subcommand(ddd_table_parser, cmd_ddd_table),
    "acceptance-table": Subcommand(acceptance_table_parser, cmd_acceptance_table),
    "ddd-sweep": Subcommand(ddd_sweep_parser, cmd_ddd_sweep),
    "dsbd-report": Subcommand(dsbd_report_parser, cmd_dsbd_report),
    "draft-design-report": Subcommand(draft_design_report_parser, cmd_draft_design_report),
}
