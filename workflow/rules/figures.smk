rule report_outputs:
    input:
        tidy=RESULTS("tidy.csv"),
        coverage=RESULTS("coverage.json"),
    output:
        tables=report(
            PLAN.report_tables(),
            category="Tables",
            caption="../report/tables.rst",
        ),
        runs=report(FIGURES("tables/runs.csv"), category="Tables", caption="../report/tables.rst"),
        figures=[
            report(path, category="Figures", caption=f"../report/{name}.rst")
            for name, path in PLAN.report_figures_by_name()
        ],
    log:
        LOGS("analysis/report.log"),
    conda:
        "../envs/specrepro.yaml"
    params:
        baseline=PLAN.baseline,
        skip=PLAN.sweep_only,
        skip_pairs=PLAN.study_pairs,
        tables=lambda w, output: os.path.dirname(output.tables[0]),
        figures=lambda w, output: os.path.dirname(output.figures[0]),
    shell:
        "specrepro report --tidy {input.tidy} --coverage {input.coverage} --tables-dir {params.tables} "
        "--figures-dir {params.figures} --baseline {params.baseline} --skip {params.skip} "
        "--skip-pairs {params.skip_pairs} > {log} 2>&1"


rule notebook:
    input:
        template="notebooks/results.ipynb",
        tidy=RESULTS("tidy.csv"),
    output:
        notebook=report(
            RESULTS("notebooks/results.ipynb"),
            category="Notebooks",
            caption="../report/notebook.rst",
        ),
        summary=RESULTS("notebooks/summary.csv"),
    log:
        LOGS("analysis/notebook.log"),
    conda:
        "../envs/specrepro.yaml"
    params:
        baseline=PLAN.baseline,
    shell:
        "specrepro notebook --template {input.template} --tidy {input.tidy} --out {output.notebook} "
        "--summary-out {output.summary} --baseline {params.baseline} > {log} 2>&1"


rule claims:
    input:
        tidy=RESULTS("tidy.csv"),
        claims=config.get("claims", []),
        study=PLAN.study_results(),
    output:
        md=report(FIGURES("tables/claims.md"), category="Tables", caption="../report/claims.rst"),
        csv=FIGURES("tables/claims.csv"),
    log:
        LOGS("analysis/claims.log"),
    conda:
        "../envs/specrepro.yaml"
    params:
        baseline=PLAN.baseline,
        study=PLAN.study_result_args(),
        skip_pairs=PLAN.study_pairs,
        skip=PLAN.sweep_only,
    shell:
        "specrepro claims --tidy {input.tidy} --claims {input.claims} --baseline {params.baseline} "
        "--study {params.study} --skip-pairs {params.skip_pairs} --skip {params.skip} "
        "--out-md {output.md} --out-csv {output.csv} > {log} 2>&1"


rule ddd_table:
    input:
        PLAN.pair_tidy,
    output:
        report(FIGURES("tables/ddd_{pair}.md"), category="Tables", caption="../report/ddd.rst"),
    log:
        LOGS("analysis/ddd_table_{pair}.log"),
    conda:
        "../envs/specrepro.yaml"
    params:
        baseline=PLAN.baseline,
        skip=PLAN.sweep_only,
    shell:
        "specrepro ddd-table --tidy {input} --pair {wildcards.pair} --baseline {params.baseline} "
        "--skip {params.skip} --out {output} > {log} 2>&1"


rule acceptance_table:
    input:
        tidy=PLAN.pair_tidy,
        head_log=PLAN.pair_head_log,
    output:
        report(
            FIGURES("tables/acceptance_{pair}.md"),
            category="Tables",
            caption="../report/acceptance.rst",
        ),
    log:
        LOGS("analysis/acceptance_{pair}.log"),
    conda:
        "../envs/specrepro.yaml"
    params:
        head=lambda w, input: f"--head-log {input.head_log}" if input.head_log else "",
    shell:
        "specrepro acceptance-table --tidy {input.tidy} --pair {wildcards.pair} {params.head} "
        "--out {output} > {log} 2>&1"


rule ddd_sweep:
    input:
        PLAN.pair_tidy,
    output:
        table=report(
            FIGURES("tables/ddd_sweep_{pair}.md"),
            category="Tables",
            caption="../report/ddd_sweep.rst",
        ),
        figures=[
            report(
                FIGURES(f"ddd_sweep_{{pair}}.{ext}"),
                category="Figures",
                caption="../report/ddd_sweep.rst",
            )
            for ext in ("png", "pdf")
        ],
    log:
        LOGS("analysis/ddd_sweep_{pair}.log"),
    conda:
        "../envs/specrepro.yaml"
    params:
        baseline=PLAN.baseline,
        dataset=PLAN.sweep_setting("dataset"),
        temperature=PLAN.sweep_setting("temperature"),
        figure=lambda w, output: os.path.splitext(output.figures[0])[0],
    shell:
        "specrepro ddd-sweep --tidy {input} --pair {wildcards.pair} --dataset {params.dataset} "
        "--temperature {params.temperature} --baseline {params.baseline} --out-md {output.table} "
        "--figure {params.figure} > {log} 2>&1"
