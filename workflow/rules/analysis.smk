rule tidy_target:
    input:
        lambda w: PLAN.target_run_files(w.target),
    output:
        "results/tidy/{target}.csv",
    log:
        "logs/analysis/tidy_{target}.log",
    wildcard_constraints:
        target=PLAN.constraint(PLAN.targets),
    conda:
        "../envs/specrepro.yaml"
    params:
        entries=PLAN.entries("tidy"),
    shell:
        "specrepro tidy --set-json {params.entries:q} --out {output} {input} > {log} 2>&1"


# The full table is the targets' tables together: a pair's own table waits for its target's
# runs only (one target of a paper config can be run and read alone).
rule tidy:
    input:
        PLAN.target_tidy_files(),
    output:
        tidy=report("results/tidy.csv", category="Tables", caption="../report/tidy.rst"),
        coverage="results/coverage.json",
    log:
        "logs/analysis/tidy.log",
    conda:
        "../envs/specrepro.yaml"
    params:
        entries=PLAN.entries("tidy"),
    shell:
        "specrepro tidy --set-json {params.entries:q} --out {output.tidy} --coverage-out {output.coverage} "
        "{input} > {log} 2>&1"


rule dsbd_report:
    input:
        PLAN.pair_tidy,
    output:
        tables=report(
            PLAN.dsbd_outputs("{pair}")[0], category="Tables", caption="../report/dsbd.rst"
        ),
        figures=report(
            PLAN.dsbd_outputs("{pair}")[1], category="Figures", caption="../report/dsbd.rst"
        ),
    log:
        "logs/analysis/dsbd_report_{pair}.log",
    conda:
        "../envs/specrepro.yaml"
    params:
        datasets=PLAN.dsbd_datasets,
    shell:
        "specrepro dsbd-report --tidy {input} --pair {wildcards.pair} --datasets {params.datasets} "
        "--tables-dir figures/tables --figures-dir figures > {log} 2>&1"
