"""Every notebook runs top to bottom in smoke mode (SCOREJAX_SMOKE=1), as Jupyter runs it.

Jupyter starts a notebook's kernel in the notebook's own folder, with no path to the
repository's root: a notebook can import scorejax (installed) and third-party packages,
never the repository's other folders (experiments/, tests/). The tests run each notebook
the same way.

A smoke run executes each compiled program once, on tiny inputs: XLA's optimisation passes
cost more there than they save, so the kernels compile without them
(``JAX_DISABLE_MOST_OPTIMIZATIONS``, which changes how fast the code runs, not what it
computes). The kernel is a process of its own, so the tests' process is not affected.
"""

import ast
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REPOSITORY_PACKAGES = {path.name for path in ROOT.iterdir() if path.is_dir()} - {"scorejax"}


def _imported_modules(source: str) -> set[str]:
    # IPython magics and shell escapes are not Python; the notebooks use none
    tree = ast.parse(source)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_imports_only_scorejax_and_packages(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name}: outputs must be stripped in git"
            local = _imported_modules(cell.source) & REPOSITORY_PACKAGES
            assert not local, f"{path.name} imports {local}, which Jupyter cannot import"


# the image notebooks train and sample U-Nets: slow on the CPU
SLOW_NOTEBOOKS = {"07_image_scores.ipynb", "08_conditioning.ipynb"}
RUNS = [
    pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW_NOTEBOOKS else p for p in NOTEBOOKS
]


@pytest.mark.parametrize("path", RUNS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(path, monkeypatch):
    monkeypatch.setenv("SCOREJAX_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    # nothing on the kernel's path may point at the repository's root
    kept = [
        entry
        for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if entry and Path(entry).resolve() != ROOT
    ]
    if kept:
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(kept))
    else:
        monkeypatch.delenv("PYTHONPATH", raising=False)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},  # the kernel's working directory
    ).execute()
