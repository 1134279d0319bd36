"""Strip outputs and execution counts from notebooks before committing them.

    .venv/bin/python notebooks/strip_outputs.py            # every notebooks/*.ipynb, in place
    .venv/bin/python notebooks/strip_outputs.py a.ipynb    # the named ones

The tests execute the notebooks on fresh runs, so the committed files carry no results (and no
stale ones); `tests/test_notebooks.py` fails on a committed output.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop every code cell's outputs and execution count, and per-cell execution metadata."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    return nb


def main(paths: list[str]) -> None:
    targets = [Path(p) for p in paths] or sorted(Path(__file__).parent.glob("*.ipynb"))
    for path in targets:
        nb = nbformat.read(path, as_version=4)
        nbformat.write(strip(nb), path)
        print(f"stripped {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
