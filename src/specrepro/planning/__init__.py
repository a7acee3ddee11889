"""The plan: a validated config expanded into the concrete runs and jobs.

Plain Python only (no torch, no transformers, nothing from the rest of this package), because
the Snakefile imports this package by path: under `--use-conda` the Snakemake process cannot
import the library. The workflow and the library therefore derive every generated name (DDD
sweep points, the draft-design study's drafts and pairs, lookahead-sweep entries), every run,
every timing group, every job and the config entries each job reads from here. Its modules
import each other relatively, so that it loads under any package name.
"""

from .configs import DEFAULT_CONFIG, merge_into, run_name, switch_off
from .datasets import check_datasets, dataset_files
from .jobs import Job
from .methods import MethodError, MethodSpec, method_names, method_spec, needed_roles
from .names import (
    PlanError,
    family_member_names,
    study_families,
    sweep_points,
)
from .plan import GROUP_NAME, Plan, control_name, make_plan

__all__ = [
    "DEFAULT_CONFIG",
    "GROUP_NAME",
    "Job",
    "MethodError",
    "MethodSpec",
    "Plan",
    "PlanError",
    "check_datasets",
    "control_name",
    "dataset_files",
    "family_member_names",
    "make_plan",
    "merge_into",
    "method_names",
    "method_spec",
    "needed_roles",
    "run_name",
    "study_families",
    "sweep_points",
    "switch_off",
]
