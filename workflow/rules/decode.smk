rule generate:
    input:
        prompts=RESULTS("prompts/{dataset}.jsonl"),
        models=PLAN.decode_models,
        tuning=PLAN.group_tuning,
    # update(): Snakemake would delete a finished file before rerunning its job; the job itself
    # resumes it, or sets it aside as FILE.staleN when the group's runs or settings changed.
    output:
        update(RESULTS("raw/{target}/{dataset}/{group}.jsonl")),
    log:
        LOGS("decode/{target}/{dataset}/{group}.log"),
    benchmark:
        BENCHMARKS("decode/{target}/{dataset}/{group}.tsv")
    wildcard_constraints:
        target=PLAN.constraint(PLAN.targets),
        dataset=PLAN.constraint(PLAN.datasets),
        group=GROUP_NAME,
    conda:
        "../envs/specrepro.yaml"
    # Timed runs never share the machine: each takes runs.threads cores (default: every core)
    # and the one timing slot.
    threads: PLAN.threads
    # `holds` (no scheduler reads it): dry runs list with the job the models it loads and the
    # weight bytes the plan sized it by (runs.gpu_memory_gb).
    resources:
        timing_slot=1,
        holds=PLAN.group_holds,
    params:
        entries=PLAN.entries("generate"),
        members=PLAN.member_args,
        max_new_tokens=PLAN.max_new_tokens,
        dtype=PLAN.runs_spec["dtype"],
        tuning=PLAN.tuning_args,
        temperature=PLAN.group_temperature,
        seed=PLAN.group_seed,
    shell:
        "HF_HUB_OFFLINE=1 specrepro generate --set-json {params.entries:q} {params.members} "
        "{params.tuning} "
        "--prompts {input.prompts} --max-new-tokens {params.max_new_tokens} "
        "--temperature {params.temperature} --seed {params.seed} --dtype {params.dtype} "
        "--out {output} > {log} 2>&1"


# The CPU tree settings that say `tuned` (tree size, DDD's threshold), chosen on the tuning
# questions with the pair's head: rerun whenever the head or the settings change.
rule tune_trees:
    input:
        PLAN.tuning_inputs,
    output:
        RESULTS("tuning/{pair}/trees.json"),
    log:
        LOGS("tuning/{pair}.log"),
    benchmark:
        BENCHMARKS("tuning/{pair}.tsv")
    wildcard_constraints:
        pair=PLAN.constraint(PLAN.tuning_pairs()),
    conda:
        "../envs/specrepro.yaml"
    # Timed like a decoding job: alone on the machine.
    threads: PLAN.threads
    resources:
        timing_slot=1,
    params:
        entries=PLAN.entries("tune_trees"),
        dtype=PLAN.runs_spec["dtype"],
    shell:
        "HF_HUB_OFFLINE=1 specrepro tune-trees --set-json {params.entries:q} "
        "--pair {wildcards.pair} --dtype {params.dtype} --out {output} > {log} 2>&1"
