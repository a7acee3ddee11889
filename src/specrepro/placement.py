"""Where a model job that is not a timed run (teacher corpus, draft quality, training) runs."""

from __future__ import annotations

# Dtypes a model job may run in as the timed runs do; int4 is a CPU timing mode of the GGUF
# weights, so the jobs that generate from a model read it in float32 instead.
JOB_DTYPES = ("float32", "bfloat16", "float16")


def job_placement(config: dict, training: bool = False) -> tuple[str, str]:
    """(dtype, device) of a model job: the run's device, and the run's dtype for the jobs that
    only generate or score (teacher corpus, draft quality); float32 for the jobs that train
    against the model (a head or draft learns from it in float32, as the papers' training
    does). On a GPU node the allocated GPU does the work, not a float32 copy on the host."""
    runs = config["runs"]
    dtype = runs["dtype"] if runs["dtype"] in JOB_DTYPES and not training else "float32"
    return dtype, runs["device"]
