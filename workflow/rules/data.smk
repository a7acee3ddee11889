rule fetch_data:
    output:
        f"{config['data']['dir']}/{{dataset}}/fetch_record.json",
    params:
        config=CONFIG_ARGS,
    log:
        "logs/data/fetch_{dataset}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro fetch-data {params.config} --dataset {wildcards.dataset} > {log} 2>&1"


rule prompts:
    input:
        rules.fetch_data.output,
    output:
        "results/prompts/{dataset}.jsonl",
    params:
        config=CONFIG_ARGS,
    log:
        "logs/data/prompts_{dataset}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro prompts {params.config} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"
