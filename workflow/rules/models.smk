rule prepare_model:
    output:
        PLAN.gguf_model_file(),
    log:
        LOGS("models/prepare_{model}.log"),
    benchmark:
        BENCHMARKS("models/prepare_{model}.tsv")
    wildcard_constraints:
        model=PLAN.constraint(PLAN.gguf_models),
    conda:
        "../envs/specrepro.yaml"
    params:
        entries=PLAN.entries("model"),
    shell:
        "specrepro prepare-model --set-json {params.entries:q} --model {wildcards.model} > {log} 2>&1"


# Hub weights are downloaded once, on the submitting host (localrules: cluster nodes often have no
# internet, and many jobs would fetch the same weights at once); jobs then read the local cache
# offline. On a cluster the cache (HF_HOME) must sit on a filesystem the nodes share.
rule download_model:
    output:
        RESULTS("hub/{model}.json"),
    log:
        LOGS("models/download_{model}.log"),
    wildcard_constraints:
        model=PLAN.constraint(PLAN.hub_models),
    conda:
        "../envs/specrepro.yaml"
    params:
        entries=PLAN.entries("model"),
        id=PLAN.hub_id,
        revision=PLAN.hub_revision,
    shell:
        "specrepro download-model --model {params.id} {params.revision} --out {output} > {log} 2>&1"


rule train_prompts:
    input:
        PLAN.fetch_records(),
    output:
        PLAN.teacher_prompts("{teacher}"),
    log:
        LOGS("models/train_prompts_{teacher}.log"),
    conda:
        "../envs/specrepro.yaml"
    params:
        entries=PLAN.entries("train_prompts"),
    shell:
        "specrepro train-prompts --set-json {params.entries:q} --teacher {wildcards.teacher} --out {output} > {log} 2>&1"


rule teacher_corpus:
    input:
        prompts=PLAN.teacher_prompts("{teacher}"),
        teacher=lambda w: PLAN.model_ready(w.teacher),
    output:
        PLAN.teacher_corpus("{teacher}"),
    log:
        LOGS("models/teacher_corpus_{teacher}.log"),
    benchmark:
        BENCHMARKS("models/teacher_corpus_{teacher}.tsv")
    conda:
        "../envs/specrepro.yaml"
    threads: PLAN.threads
    resources:
        timing_slot=1,
    params:
        entries=PLAN.entries("teacher_corpus"),
    shell:
        "HF_HUB_OFFLINE=1 specrepro teacher-corpus --set-json {params.entries:q} --teacher {wildcards.teacher} "
        "--prompts {input.prompts} --out {output} > {log} 2>&1"


# A built draft or head is written to models.cache_dir/NAME; the wildcard is its name.
rule train_draft:
    input:
        corpus=PLAN.student_corpus,
        teacher=PLAN.student_teacher,
    output:
        model=PLAN.built_file("{draft}", "config.json"),
        log=report(
            PLAN.built_file("{draft}", "training_log.json"),
            category="Draft models",
            caption="../report/draft.rst",
        ),
    log:
        LOGS("models/train_draft_{draft}.log"),
    benchmark:
        BENCHMARKS("models/train_draft_{draft}.tsv")
    wildcard_constraints:
        draft=PLAN.constraint(PLAN.built_drafts),
    conda:
        "../envs/specrepro.yaml"
    threads: PLAN.threads
    resources:
        timing_slot=1,
    params:
        entries=PLAN.entries("train_draft"),
        out=lambda w, output: os.path.dirname(output.model),
    shell:
        "HF_HUB_OFFLINE=1 specrepro train-draft --set-json {params.entries:q} --draft {wildcards.draft} "
        "--corpus {input.corpus} --out {params.out} > {log} 2>&1"


rule train_head:
    input:
        corpus=PLAN.student_corpus,
        teacher=PLAN.student_teacher,
    output:
        model=PLAN.built_file("{head}", "config.json"),
        log=report(
            PLAN.built_file("{head}", "training_log.json"),
            category="Draft models",
            caption="../report/head.rst",
        ),
    log:
        LOGS("models/train_head_{head}.log"),
    benchmark:
        BENCHMARKS("models/train_head_{head}.tsv")
    wildcard_constraints:
        head=PLAN.constraint(PLAN.built_heads),
    conda:
        "../envs/specrepro.yaml"
    threads: PLAN.threads
    resources:
        timing_slot=1,
    params:
        entries=PLAN.entries("train_head"),
        out=lambda w, output: os.path.dirname(output.model),
    shell:
        "HF_HUB_OFFLINE=1 specrepro train-head --set-json {params.entries:q} --head {wildcards.head} "
        "--corpus {input.corpus} --out {params.out} > {log} 2>&1"
