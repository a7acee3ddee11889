rule generate:
    input:
        prompts="results/prompts/{dataset}.jsonl",
        models=decode_models,
    output:
        "results/raw/{target}/{dataset}/T{temperature}-s{seed}.jsonl",
    params:
        entries=as_json(generate_entries),
        members=member_args,
        max_new_tokens=max_new_tokens,
        dtype=RUNS["dtype"],
    wildcard_constraints:
        target="[^/]+",
    # Timed runs never share the machine: each takes every core and the one timing slot.
    threads: ALL_CORES
    resources:
        timing_slot=1,
    log:
        "logs/decode/{target}/{dataset}/T{temperature}-s{seed}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "HF_HUB_OFFLINE=1 specrepro generate --set-json {params.entries:q} {params.members} "
        "--prompts {input.prompts} --max-new-tokens {params.max_new_tokens} "
        "--temperature {wildcards.temperature} --seed {wildcards.seed} --dtype {params.dtype} "
        "--out {output} > {log} 2>&1"
