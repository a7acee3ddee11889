"""Saving a trained model folder so that a killed job never leaves one the DAG would trust."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path


def publish_model_dir(out_dir: Path, save: Callable[[Path], None], training_log: dict) -> Path:
    """`save` writes the model into OUT.tmp, training_log.json goes beside it, and only then
    does the folder replace `out_dir`."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save(tmp)
    (tmp / "training_log.json").write_text(json.dumps(training_log, indent=1))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
