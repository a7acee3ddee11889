# The plan (src/specrepro/planning/) names every run, job and config entry; these files only
# declare the rules. It is imported by path: under --use-conda this process has no library.
import importlib.util
import os
import sys


def load_planner():
    package = os.path.join(workflow.basedir, "..", "src", "specrepro", "planning")
    spec = importlib.util.spec_from_file_location(
        "specrepro_workflow_planning",
        os.path.join(package, "__init__.py"),
        submodule_search_locations=[package],
    )
    planner = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = planner
    spec.loader.exec_module(planner)
    return planner


PLANNER = load_planner()
# The config files in the order Snakemake merged them: the default config, then --configfile.
DEFAULT_CONFIGFILES = workflow.configfiles[len(CONFIGFILES) :]
# A config's run name (its `run`, else the stem of the first file given besides the default;
# `default` for the default alone) keeps its results, figures, logs and benchmarks in their own
# folders: configs run in one checkout never touch each other's files.
config.setdefault("run", PLANNER.run_name(CONFIGFILES, *DEFAULT_CONFIGFILES[:1]))
# A malformed datasets entry (an unknown kind, a jsonl dataset without its file) is named here.
PLANNER.check_datasets(config)
PLAN = PLANNER.make_plan(config)
GROUP_NAME = PLANNER.GROUP_NAME
RESULTS = PLAN.in_results
FIGURES = PLAN.in_figures
LOGS = PLAN.in_logs
BENCHMARKS = PLAN.in_benchmarks


def job_environment():
    """What every job inherits from this Snakemake process's environment: the interpreter
    running Snakemake first on PATH, so jobs run the `specrepro` installed beside it without its
    venv activated (a conda job's own environment comes first all the same; a job run elsewhere
    is started by a Snakemake there, which does the same with its own interpreter); and the
    config files Snakemake merged, in its order, which the library merges the same way when no
    --config is given. Neither is a param: a path says where things are, not what a job reads
    (its entries say that), so naming the default config or moving the checkout reruns
    nothing."""
    interpreter = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[:1] != [interpreter]:
        os.environ.update(PATH=os.pathsep.join([interpreter, *path]))
    os.environ["SPECREPRO_CONFIG"] = os.pathsep.join(
        os.path.abspath(p) for p in [*DEFAULT_CONFIGFILES, *CONFIGFILES]
    )
    # models.hub_cache: the hub cache every job reads (a twin's, or a cluster's shared one).
    if PLAN.hub_cache:
        os.environ.update(HF_HUB_CACHE=os.path.abspath(PLAN.hub_cache))


job_environment()


# Declared after it is set: Snakemake passes it on to jobs it runs elsewhere. Not PATH: the
# submitting host's PATH means nothing in a container, a pod or on another node.
envvars:
    "SPECREPRO_CONFIG",
