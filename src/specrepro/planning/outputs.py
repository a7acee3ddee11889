"""Which report outputs a plan makes (its tables and figures, `rule all`'s inputs), a part of
the plan (`Plan` inherits them)."""

from __future__ import annotations

from .methods import method_spec
from .names import DSBD_FIGURES, FIGURES, STUDY_FIGURES, algorithm_of


class ReportOutputs:
    """Methods over the plan's `config`, `runs_spec`, `study`, `sweep_pairs`, `dsbd_datasets`
    and file names (`in_figures`, `in_results`, `built_file`), which `Plan` sets."""

    def ddd_runs(self) -> bool:
        """The DDD paper's tables are made when DDD runs on MT-bench."""
        algorithms = {algorithm_of(self.config, m) for m in self.runs_spec["methods"]}
        return "ddd" in algorithms and "mtbench" in self.runs_spec["datasets"]

    def dsbd_runs(self) -> bool:
        """The DSBD paper's tables are made when beam sampling runs on one of its tasks (SQuAD,
        Spider); on other datasets it is in the general tables only."""
        algorithms = {algorithm_of(self.config, m) for m in self.runs_spec["methods"]}
        return "beam" in algorithms and bool(self.dsbd_datasets)

    def chain_runs(self) -> bool:
        """The acceptance-by-depth tables are made when a method that accepts a prefix of one
        drafted path (sps, the tree methods) runs."""
        algorithms = {algorithm_of(self.config, m) for m in self.runs_spec["methods"]}
        return any(method_spec(a).depth_acceptance for a in algorithms)

    def pair_head_log(self, w) -> list[str]:
        """The training log of the pair's head when the DAG builds it (its agreement k tokens
        ahead); none for a published or absent head."""
        head = self.config["pairs"][w.pair].get("head")
        entry = self.config["models"]["registry"].get(head) if head else None
        if not entry or entry["source"] != "built":
            return []
        return [self.built_file(head, "training_log.json")]

    def dsbd_outputs(self, pair: str) -> tuple[list[str], list[str]]:
        tables = [self.in_figures(f"tables/dsbd_{pair}_{d}.md") for d in self.dsbd_datasets]
        return tables, [f for kind in DSBD_FIGURES for f in self.figure_pair(f"dsbd_{kind}_{pair}")]

    def report_tables(self) -> list[str]:
        datasets = self.runs_spec["datasets"]
        return [self.in_figures(f"tables/table_{d}.{e}") for d in datasets for e in ("md", "tex")]

    def report_figures_by_name(self) -> list[tuple[str, str]]:
        return [(name, path) for name in FIGURES for path in self.figure_pair(name)]

    def report_figures(self) -> list[str]:
        return [path for _, path in self.report_figures_by_name()]

    def study_figures(self, pair: str) -> list[str]:
        return [path for k in STUDY_FIGURES for path in self.figure_pair(f"draft_{k}_{pair}")]

    def figure_pair(self, stem: str) -> list[str]:
        """A figure's PNG and PDF."""
        return [self.in_figures(f"{stem}.{ext}") for ext in ("png", "pdf")]

    def final_outputs(self) -> list[str]:
        outputs = [*self.report_tables(), *self.report_figures()]
        outputs += [self.in_results("notebooks/results.ipynb"), self.in_results("tidy.csv")]
        outputs += [self.in_figures("tables/claims.md")] if self.config.get("claims") else []
        pairs = self.runs_spec["pairs"]
        if self.ddd_runs():
            outputs += [self.in_figures(f"tables/ddd_{p}.md") for p in pairs]
        outputs += [f for p in self.sweep_pairs for f in self.figure_pair(f"ddd_sweep_{p}")]
        if self.dsbd_runs():
            outputs += [f for p in pairs for files in self.dsbd_outputs(p) for f in files]
        if self.chain_runs():
            outputs += [self.in_figures(f"tables/acceptance_{p}.md") for p in pairs]
        if self.study:
            pair = self.study.pair
            outputs += [self.in_figures(f"tables/draft_design_{pair}.md")]
            outputs += self.study_figures(pair)
        return outputs
