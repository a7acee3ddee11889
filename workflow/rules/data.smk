rule fetch_data:
    output:
        f"{config['data']['dir']}/{{dataset}}/fetch_record.json",
    params:
        entries=as_json(fetch_entries),
    log:
        "logs/data/fetch_{dataset}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro fetch-data --set-json {params.entries:q} --dataset {wildcards.dataset} > {log} 2>&1"


rule prompts:
    input:
        rules.fetch_data.output,
    output:
        "results/prompts/{dataset}.jsonl",
    params:
        entries=as_json(prompt_entries),
    wildcard_constraints:
        dataset="|".join(re.escape(d) for d in config["datasets"]),
    log:
        "logs/data/prompts_{dataset}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro prompts --set-json {params.entries:q} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"
