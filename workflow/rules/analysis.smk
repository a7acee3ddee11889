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
