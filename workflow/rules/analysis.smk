rule tidy_target:
    input:
        lambda w: PLAN.target_run_files(w.target),
    output:
        RESULTS("tidy/{target}.csv"),
    log:
        LOGS("analysis/tidy_{target}.log"),
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
        tidy=report(RESULTS("tidy.csv"), category="Tables", caption="../report/tidy.rst"),
        coverage=RESULTS("coverage.json"),
    log:
        LOGS("analysis/tidy.log"),
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
        LOGS("analysis/dsbd_report_{pair}.log"),
    conda:
        "../envs/specrepro.yaml"
    params:
        datasets=PLAN.dsbd_datasets,
        tables=lambda w, output: os.path.dirname(output.tables[0]),
        figures=lambda w, output: os.path.dirname(output.figures[0]),
    shell:
        "specrepro dsbd-report --tidy {input} --pair {wildcards.pair} --datasets {params.datasets} "
        "--tables-dir {params.tables} --figures-dir {params.figures} > {log} 2>&1"
