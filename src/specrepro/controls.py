"""The A/A control claims of a run, one per dataset and temperature that ran.

The plan runs the baseline's A/A control (`vanilla-aa`, the baseline's entry again) beside the
baseline in every timing group, whatever datasets and temperatures a config runs. A `control`
claim in a claims file that gives no `dataset` and no `temperature` is a template for those
controls: it stands for one claim per (dataset, temperature) at which its reference ran in the
tidy table, with the id `ID-DATASET-tT` (`aa-squad-t0`, `aa-squad-t0p7`: "." written "p") and
the text `TEXT (DATASET, T=T)`. A control claim that names its dataset and temperature stays as
it is.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    import pandas as pd

    from specrepro.report.claims import Claim

DATASET_LABELS = {"mtbench": "MT-bench", "squad": "SQuAD", "spider": "Spider"}
DATASET_ORDER = tuple(DATASET_LABELS)


def is_template(entry: dict) -> bool:
    return entry.get("kind") == "control" and "dataset" not in entry and "temperature" not in entry


def control_settings(tidy: pd.DataFrame, entry: dict) -> list[tuple[str, float]]:
    """The (dataset, temperature) pairs at which the template's reference ran (its pair only,
    when it names one), temperature first, then the datasets in their usual order."""
    rows = tidy
    reference = entry.get("reference")
    if isinstance(reference, dict) and reference.get("name") and "method" in rows:
        rows = rows[rows["method"] == reference["name"]]
    if entry.get("pair", "all") != "all" and "pair" in rows:
        rows = rows[rows["pair"] == entry["pair"]]
    if rows.empty or not {"dataset", "temperature"} <= set(rows.columns):
        return []
    found = {(str(d), float(t)) for d, t in zip(rows["dataset"], rows["temperature"], strict=True)}

    def order(setting: tuple[str, float]) -> tuple:
        dataset, temperature = setting
        known = DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER)
        return (temperature, known, dataset)

    return sorted(found, key=order)


def expand_controls(data: dict, tidy: pd.DataFrame) -> dict:
    """A claims file's content with every control template replaced by its claims."""
    claims = []
    for entry in data.get("claims") or []:
        if not isinstance(entry, dict) or not is_template(entry):
            claims.append(entry)
            continue
        for dataset, temperature in control_settings(tidy, entry):
            tag = f"{temperature:g}".replace(".", "p")
            label = DATASET_LABELS.get(dataset, dataset)
            claims.append({
                **entry,
                "id": f"{entry.get('id', 'aa')}-{dataset}-t{tag}",
                "text": f"{entry.get('text', 'A/A control')} ({label}, T={temperature:g})",
                "dataset": dataset,
                "temperature": temperature,
            })  # fmt: skip
    return {**data, "claims": claims}


def load_run_claims(paths: list[Path | str], tidy: pd.DataFrame) -> list[Claim]:
    """The claims files' claims (report/claims), each control template expanded for the
    datasets and temperatures of the tidy table."""
    from specrepro.report.claims import load_claims

    with tempfile.TemporaryDirectory() as folder:
        expanded = []
        for i, path in enumerate(map(Path, paths)):
            data = yaml.safe_load(path.read_text())
            entries = data.get("claims") if isinstance(data, dict) else None
            if not isinstance(entries, list) or not any(
                isinstance(e, dict) and is_template(e) for e in entries
            ):
                expanded.append(path)
                continue
            # Same file name (error messages name it), in a folder of its own.
            out = Path(folder) / str(i) / path.name
            out.parent.mkdir()
            out.write_text(yaml.safe_dump(expand_controls(data, tidy), sort_keys=False))
            expanded.append(out)
        return load_claims(expanded)
