rule tidy:
    input:
        run_files(),
    output:
        tidy=report("results/tidy.csv", category="Tables"),
        coverage="results/coverage.json",
    params:
        config=CONFIG_ARGS,
    log:
        "logs/analysis/tidy.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro tidy {params.config} --out {output.tidy} --coverage-out {output.coverage} "
        "{input} > {log} 2>&1"
