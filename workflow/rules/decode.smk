rule generate:
    input:
        prompts=generate_prompts,
        models=decode_models,
    output:
        "results/raw/{pair}/{method}/{dataset}/T{temperature}-s{seed}.jsonl",
    params:
        config_files=CONFIG_FILES,
        entries=as_json(generate_entries),
        max_new_tokens=max_new_tokens,
        dtype=RUNS["dtype"],
    # Timed runs never share the machine: each takes every core and the one timing slot.
    threads: ALL_CORES
    resources:
        timing_slot=1,
    log:
        "logs/decode/{pair}/{method}/{dataset}/T{temperature}-s{seed}.log",
    conda:
        "../../envs/specrepro.yaml"
    shell:
        "specrepro generate {params.config_files} --set-json {params.entries:q} --pair {wildcards.pair} --method {wildcards.method} "
        "--prompts {input.prompts} --max-new-tokens {params.max_new_tokens} "
        "--temperature {wildcards.temperature} --seed {wildcards.seed} --dtype {params.dtype} "
        "--out {output} > {log} 2>&1"
