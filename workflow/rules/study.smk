# The draft-design study (SPEC 4.8): latency profiles of the drafts' shapes, each draft's
# quality on its target's corpus and its own task accuracy, then the study's table, figures and
# results. The drafts' sps runs (every lookahead of the sweep) run in the timing groups.


rule latency_profile:
    input:
        target=lambda w: model_ready(config["pairs"][w.pair]["target"]),
        drafts=lambda w: [model_ready(d) for d in latency_drafts()],
    output:
        "results/draft_design/{pair}/latency_{scale}.json",
    params:
        entries=as_json(latency_entries),
        target=lambda w: config["pairs"][w.pair]["target"],
        members=lambda w: latency_members() if w.scale == "default" else "",
        budget=lambda w: config.get("drafts", {})
        .get(config["pairs"][w.pair]["draft"], {})
        .get("num_layers", 1),
        settings=" ".join(
            f"--{key.replace('_', '-')} {value}"
            for key, value in (STUDY or {}).get("latency", {}).items()
            if key != "paper_scale"
        ),
    wildcard_constraints:
        scale="default|paper",
    threads: ALL_CORES
    resources:
        timing_slot=1,
    log:
        "logs/draft_design/latency_{pair}_{scale}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "HF_HUB_OFFLINE=1 specrepro latency-profile --set-json {params.entries:q} --scale {wildcards.scale} "
        "--target {params.target} --budget-layers {params.budget} {params.members} {params.settings} "
        "--out {output} > {log} 2>&1"


rule draft_quality:
    input:
        corpus=lambda w: teacher_corpus(config["pairs"][w.pair]["target"]),
        draft=lambda w: model_ready(w.draft),
        prompts=quality_prompts,
    output:
        "results/draft_design/{pair}/quality_{draft}.json",
    params:
        entries=as_json(quality_entries),
        accuracy=lambda w, input: (
            "--accuracy " + " ".join(f"{d}={p}" for d, p in zip(accuracy_datasets(), input.prompts))
            if input.prompts
            else ""
        ),
    threads: ALL_CORES
    log:
        "logs/draft_design/quality_{pair}_{draft}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "HF_HUB_OFFLINE=1 specrepro draft-quality --set-json {params.entries:q} --draft {wildcards.draft} "
        "--pair {wildcards.pair} --corpus {input.corpus} {params.accuracy} --out {output} > {log} 2>&1"


rule draft_design_report:
    input:
        tidy=pair_tidy,
        quality=quality_files() if STUDY else [],
        latency=study_latency("default"),
        paper_latency=study_latency("paper"),
        logs=lambda w: list(training_logs().values()) if STUDY else [],
        prompts=lambda w: [f"results/prompts/{d}.jsonl" for d in STUDY["datasets"]] if STUDY else [],
    output:
        table=report(
            "figures/tables/draft_design_{pair}.md",
            category="Tables",
            caption="../report/draft_design.rst",
        ),
        results="results/draft_design/{pair}/results.json",
        figures=[
            report(
                f"figures/draft_{kind}_{{pair}}.{ext}",
                category="Figures",
                caption="../report/draft_design.rst",
            )
            for kind in STUDY_FIGURES
            for ext in ("png", "pdf")
        ],
    params:
        members=study_report_args,
        paper=lambda w, input: f"--paper-latency {input.paper_latency}" if input.paper_latency else "",
        baseline=RUNS.get("baseline", "vanilla"),
    log:
        "logs/draft_design/report_{pair}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro draft-design-report --tidy {input.tidy} --pair {wildcards.pair} {params.members} "
        "--latency {input.latency} {params.paper} --baseline {params.baseline} --out-md {output.table} "
        "--out-json {output.results} --figures-dir figures > {log} 2>&1"
