rule tidy_target:
    input:
        lambda w: target_run_files(w.target),
    output:
        "results/tidy/{target}.csv",
    params:
        entries=as_json(tidy_entries),
    wildcard_constraints:
        target="|".join(re.escape(t) for t in TARGETS) or "NONE",
    log:
        "logs/analysis/tidy_{target}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro tidy --set-json {params.entries:q} --out {output} {input} > {log} 2>&1"


# The full table is the targets' tables together: a pair's own table waits for its target's
# runs only (one target of a paper config can be run and read alone).
rule tidy:
    input:
        expand("results/tidy/{target}.csv", target=TARGETS),
    output:
        tidy=report("results/tidy.csv", category="Tables", caption="../report/tidy.rst"),
        coverage="results/coverage.json",
    params:
        entries=as_json(tidy_entries),
    log:
        "logs/analysis/tidy.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro tidy --set-json {params.entries:q} --out {output.tidy} --coverage-out {output.coverage} "
        "{input} > {log} 2>&1"


rule dsbd_report:
    input:
        pair_tidy,
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
