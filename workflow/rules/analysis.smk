rule tidy:
    input:
        run_files(),
    output:
        tidy=report("results/tidy.csv", category="Tables", caption="../report/tidy.rst"),
        coverage="results/coverage.json",
    params:
        config_files=CONFIG_FILES,
        entries=as_json(tidy_entries),
    log:
        "logs/analysis/tidy.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro tidy {params.config_files} --set-json {params.entries:q} --out {output.tidy} --coverage-out {output.coverage} "
        "{input} > {log} 2>&1"


rule dsbd_report:
    input:
        "results/tidy.csv",
    output:
        tables=report(
            expand("figures/tables/dsbd_{{pair}}_{dataset}.md", dataset=DSBD_DATASETS),
            category="Tables",
            caption="../report/dsbd.rst",
        ),
        figures=[
            report(f"figures/dsbd_{kind}_{{pair}}.{ext}", category="Figures", caption="../report/dsbd.rst")
            for kind in ("threshold", "width")
            for ext in ("png", "pdf")
        ],
    params:
        datasets=DSBD_DATASETS,
    log:
        "logs/analysis/dsbd_report_{pair}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro dsbd-report --tidy {input} --pair {wildcards.pair} --datasets {params.datasets} "
        "--tables-dir figures/tables --figures-dir figures > {log} 2>&1"
