rule fetch_data:
    output:
        f"{config['data']['dir']}/{{dataset}}/fetch_record.json",
    params:
        config_files=CONFIG_FILES,
        entries=as_json(fetch_entries),
    log:
        "logs/data/fetch_{dataset}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro fetch-data {params.config_files} --set-json {params.entries:q} --dataset {wildcards.dataset} > {log} 2>&1"


rule prompts:
    input:
        rules.fetch_data.output,
    output:
        "results/prompts/{dataset}.jsonl",
    params:
        config_files=CONFIG_FILES,
        entries=as_json(prompt_entries),
    wildcard_constraints:
        dataset="|".join(re.escape(d) for d in config["datasets"]),
    log:
        "logs/data/prompts_{dataset}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro prompts {params.config_files} --set-json {params.entries:q} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"
