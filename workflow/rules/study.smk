# The draft-design study (docs/methods.md#draft-design-study): latency profiles of the drafts'
# shapes, each draft's quality on its target's corpus and its own task accuracy, then the study's
# table, figures and results. The drafts' sps runs (every lookahead of the sweep) run in the timing
# groups.


rule latency_profile:
    input:
        target=lambda w: PLAN.model_ready(PLAN.pair_target(w)),
        drafts=PLAN.latency_draft_files(),
    output:
        RESULTS("draft_design/{pair}/latency_{scale}.json"),
    log:
        LOGS("draft_design/latency_{pair}_{scale}.log"),
    benchmark:
        BENCHMARKS("draft_design/latency_{pair}_{scale}.tsv")
    wildcard_constraints:
        scale="default|paper",
    conda:
        "../envs/specrepro.yaml"
    threads: PLAN.threads
    resources:
        timing_slot=1,
    params:
        entries=PLAN.entries("latency_profile"),
        target=PLAN.pair_target,
        members=PLAN.latency_members,
        budget=PLAN.latency_budget,
        settings=PLAN.latency_settings(),
    shell:
        "HF_HUB_OFFLINE=1 specrepro latency-profile --set-json {params.entries:q} --scale {wildcards.scale} "
        "--target {params.target} --budget-layers {params.budget} {params.members} {params.settings} "
        "--out {output} > {log} 2>&1"


rule draft_quality:
    input:
        corpus=lambda w: PLAN.teacher_corpus(PLAN.pair_target(w)),
        draft=lambda w: PLAN.model_ready(w.draft),
        prompts=PLAN.quality_prompts,
    output:
        RESULTS("draft_design/{pair}/quality_{draft}.json"),
    log:
        LOGS("draft_design/quality_{pair}_{draft}.log"),
    benchmark:
        BENCHMARKS("draft_design/quality_{pair}_{draft}.tsv")
    conda:
        "../envs/specrepro.yaml"
    threads: PLAN.threads
    params:
        entries=PLAN.entries("draft_quality"),
        accuracy=PLAN.accuracy_args,
    shell:
        "HF_HUB_OFFLINE=1 specrepro draft-quality --set-json {params.entries:q} --draft {wildcards.draft} "
        "--pair {wildcards.pair} --corpus {input.corpus} {params.accuracy} --out {output} > {log} 2>&1"


rule draft_design_report:
    input:
        tidy=PLAN.pair_tidy,
        quality=PLAN.quality_files(),
        latency=PLAN.study_latency("default"),
        paper_latency=PLAN.study_latency("paper"),
        logs=list(PLAN.training_logs().values()),
        prompts=PLAN.study_prompts(),
    output:
        table=report(
            FIGURES("tables/draft_design_{pair}.md"),
            category="Tables",
            caption="../report/draft_design.rst",
        ),
        results=RESULTS("draft_design/{pair}/results.json"),
        figures=report(
            PLAN.study_figures("{pair}"),
            category="Figures",
            caption="../report/draft_design.rst",
        ),
    log:
        LOGS("draft_design/report_{pair}.log"),
    conda:
        "../envs/specrepro.yaml"
    params:
        members=PLAN.study_report_args,
        paper=lambda w, input: (
            f"--paper-latency {input.paper_latency}" if input.paper_latency else ""
        ),
        baseline=PLAN.baseline,
        figures=lambda w, output: os.path.dirname(output.figures[0]),
    shell:
        "specrepro draft-design-report --tidy {input.tidy} --pair {wildcards.pair} {params.members} "
        "--latency {input.latency} {params.paper} --baseline {params.baseline} --out-md {output.table} "
        "--out-json {output.results} --figures-dir {params.figures} > {log} 2>&1"
