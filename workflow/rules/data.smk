# A jsonl dataset (kind: jsonl) is read in place: its file is the input, so editing it reruns
# the fetch step's checks and everything made from its records.
rule fetch_data:
    input:
        lambda w: PLANNER.dataset_files(PLAN.config, w.dataset),
    output:
        PLAN.fetch_record(),
    log:
        LOGS("data/fetch_{dataset}.log"),
    conda:
        "../envs/specrepro.yaml"
    params:
        entries=PLAN.entries("fetch_data"),
    shell:
        "specrepro fetch-data --set-json {params.entries:q} --dataset {wildcards.dataset} > {log} 2>&1"


rule prompts:
    input:
        rules.fetch_data.output,
    output:
        RESULTS("prompts/{dataset}.jsonl"),
    log:
        LOGS("data/prompts_{dataset}.log"),
    wildcard_constraints:
        dataset=PLAN.constraint(PLAN.datasets),
    conda:
        "../envs/specrepro.yaml"
    params:
        entries=PLAN.entries("prompts"),
    shell:
        "specrepro prompts --set-json {params.entries:q} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"
