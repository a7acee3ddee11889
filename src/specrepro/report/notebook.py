"""Execute a parameterised notebook (papermill-style, on nbclient alone)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


class NotebookExecutionError(RuntimeError):
    """A notebook cell failed; the message names the notebook and the partial output."""


def parameters_source(parameters: dict) -> str:
    """Python assignments for the parameters; paths become strings so the kernel needs no
    imports to evaluate them."""
    lines = ["# Parameters injected by specrepro.report.notebook"]
    for name, value in parameters.items():
        if not name.isidentifier():
            raise ValueError(f"parameter name {name!r} is not a Python identifier")
        literal = str(value) if isinstance(value, Path) else value
        lines.append(f"{name} = {literal!r}")
    return "\n".join(lines) + "\n"


def inject_parameters(nb: nbformat.NotebookNode, parameters: dict) -> nbformat.NotebookNode:
    """Insert a code cell assigning the parameters right after the 'parameters' cell."""
    tagged = [
        i
        for i, cell in enumerate(nb.cells)
        if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", [])
    ]
    if not tagged:
        raise ValueError(f"notebook has no cell tagged {PARAMETERS_TAG!r}")
    cell = nbformat.v4.new_code_cell(
        parameters_source(parameters), metadata={"tags": [INJECTED_TAG]}
    )
    nb.cells.insert(tagged[0] + 1, cell)
    return nb


def execute_notebook(template: Path, out: Path, parameters: dict, timeout_s: int = 600) -> Path:
    """Run `template` with `parameters` in its own directory and write the result to `out`.

    On failure the partially executed notebook is still written to `out`, since its
    tracebacks are the quickest way to see what went wrong.
    """
    template, out = Path(template), Path(out)
    nb = inject_parameters(nbformat.read(template, as_version=4), parameters)
    client = NotebookClient(
        nb,
        timeout=timeout_s,
        kernel_name="python3",
        resources={"metadata": {"path": str(template.parent.resolve())}},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        nbformat.write(nb, out)
        raise NotebookExecutionError(
            f"executing notebook {template} failed (partial output in {out}): {exc}"
        ) from exc
    nbformat.write(nb, out)
    return out
