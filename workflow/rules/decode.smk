rule generate:
    input:
        prompts="results/prompts/{dataset}.jsonl",
        models=PLAN.decode_models,
        tuning=PLAN.group_tuning,
    output:
        "results/raw/{target}/{dataset}/T{temperature}-s{seed}.jsonl",
    log:
        "logs/decode/{target}/{dataset}/T{temperature}-s{seed}.log",
    benchmark:
        "benchmarks/decode/{target}/{dataset}/T{temperature}-s{seed}.tsv"
    wildcard_constraints:
        target=PLAN.constraint(PLAN.targets),
        dataset=PLAN.constraint(PLAN.datasets),
        temperature=r"\d+(\.\d+)?",
        seed=r"\d+",
    conda:
        "../envs/specrepro.yaml"
    # Timed runs never share the machine: each takes every core and the one timing slot.
    threads: ALL_CORES
    resources:
        timing_slot=1,
    params:
        entries=PLAN.entries("generate"),
        members=PLAN.member_args,
        max_new_tokens=PLAN.max_new_tokens,
        dtype=PLAN.runs_spec["dtype"],
        tuning=PLAN.tuning_args,
    shell:
        "HF_HUB_OFFLINE=1 specrepro generate --set-json {params.entries:q} {params.members} "
        "{params.tuning} "
        "--prompts {input.prompts} --max-new-tokens {params.max_new_tokens} "
        "--temperature {wildcards.temperature} --seed {wildcards.seed} --dtype {params.dtype} "
        "--out {output} > {log} 2>&1"


# The CPU tree settings that say `tuned` (tree size, DDD's threshold), chosen on the tuning
# questions with the pair's head: rerun whenever the head or the settings change.
rule tune_trees:
    input:
        PLAN.tuning_inputs,
    output:
        "results/tuning/{pair}/trees.json",
    log:
        "logs/tuning/{pair}.log",
    benchmark:
        "benchmarks/tuning/{pair}.tsv"
    wildcard_constraints:
        pair=PLAN.constraint(PLAN.tuning_pairs()),
    conda:
        "../envs/specrepro.yaml"
    # Timed like a decoding job: alone on the machine.
    threads: ALL_CORES
    resources:
        timing_slot=1,
    params:
        entries=PLAN.entries("tune_trees"),
        dtype=PLAN.runs_spec["dtype"],
    shell:
        "HF_HUB_OFFLINE=1 specrepro tune-trees --set-json {params.entries:q} "
        "--pair {wildcards.pair} --dtype {params.dtype} --out {output} > {log} 2>&1"
