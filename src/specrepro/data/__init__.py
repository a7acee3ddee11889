"""Benchmark data: fetching with sha256 checks, loaders and prompt records."""

from specrepro.data.fetch import (
    DataError,
    DataWarning,
    fetch_dataset,
    get_manifest,
    sha256_file,
    verify_dataset,
)
from specrepro.data.jsonl import (
    fetch_jsonl_dataset,
    load_jsonl_dataset,
    read_prompts_jsonl,
    verify_jsonl_dataset,
    write_jsonl,
)
from specrepro.data.manifest import DATASET_NAMES, MANIFESTS, DatasetManifest, FileEntry
from specrepro.data.mtbench import load_mtbench
from specrepro.data.prompts import (
    load_prompts,
    load_records,
    load_training_prompts,
    load_tuning_prompts,
)
from specrepro.data.record import PromptRecord, make_record
from specrepro.data.spider import load_spider, spider_coverage, spider_db_path
from specrepro.data.squad import load_squad
from specrepro.data.subsample import complement, subsample

__all__ = [
    "DATASET_NAMES",
    "MANIFESTS",
    "DataError",
    "DataWarning",
    "DatasetManifest",
    "FileEntry",
    "PromptRecord",
    "complement",
    "fetch_dataset",
    "fetch_jsonl_dataset",
    "get_manifest",
    "load_jsonl_dataset",
    "load_mtbench",
    "load_prompts",
    "load_records",
    "load_spider",
    "load_squad",
    "load_training_prompts",
    "load_tuning_prompts",
    "make_record",
    "read_prompts_jsonl",
    "sha256_file",
    "spider_coverage",
    "spider_db_path",
    "subsample",
    "verify_dataset",
    "verify_jsonl_dataset",
    "write_jsonl",
]
