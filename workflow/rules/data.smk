rule fetch_data:
    output:
        f"{config['data']['dir']}/{{dataset}}/fetch_record.json",
    log:
        "logs/data/fetch_{dataset}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro fetch-data --config {CONFIG_FILE} --dataset {wildcards.dataset} > {log} 2>&1"


rule prompts:
    input:
        rules.fetch_data.output,
    output:
        "results/prompts/{dataset}.jsonl",
    log:
        "logs/data/prompts_{dataset}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro prompts --config {CONFIG_FILE} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"
