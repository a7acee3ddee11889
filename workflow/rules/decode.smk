rule generate:
    input:
        prompts="results/prompts/{dataset}.jsonl",
        models=PLAN.decode_models,
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
    shell:
        "HF_HUB_OFFLINE=1 specrepro generate --set-json {params.entries:q} {params.members} "
        "--prompts {input.prompts} --max-new-tokens {params.max_new_tokens} "
        "--temperature {wildcards.temperature} --seed {wildcards.seed} --dtype {params.dtype} "
        "--out {output} > {log} 2>&1"
