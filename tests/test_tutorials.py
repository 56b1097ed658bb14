"""Every tutorial notebook runs top to bottom at small size (EBM_PPL_TUTORIAL_SMALL=1), in
the slow tests (``pytest -m slow``, which CI runs).

Each notebook ends with assertions of its claims (looser at small size), so a passing run
also checks what the notebook says. The notebooks pick their framework themselves, so these
tests do not use the ``backend`` fixture. A full-size run (writing ``tutorials/figures``):

    python tests/test_tutorials.py tutorials/01_ising_pyro.ipynb
"""

import os
import pathlib
import sys
import time

import pytest

TUTORIALS = pathlib.Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(p.name for p in TUTORIALS.glob("*.ipynb"))
REPO = str(TUTORIALS.parent)


def execute(path, small=True, timeout=None):
    """Execute a notebook in its own folder with the "python3" kernel; returns the notebook.
    ``timeout``: seconds per cell, None for none (the tests set none: they must pass on a machine
    of any speed, issue 26)."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    env = {"EBM_PPL_TUTORIAL_SMALL": "1" if small else "0", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([REPO, os.path.join(REPO, "backends"), os.environ.get("PYTHONPATH", "")])}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                         resources={"metadata": {"path": str(pathlib.Path(path).parent)}})
        client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def test_notebooks_are_found():
    assert len(NOTEBOOKS) >= 1, NOTEBOOKS


def test_committed_notebooks_have_no_outputs():
    import nbformat

    for name in NOTEBOOKS:
        nb = nbformat.read(TUTORIALS / name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, name


@pytest.mark.slow  # 20-130 s each: every notebook runs in CI's slow pass (``pytest -m slow``)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_runs_small(name):
    nb = execute(TUTORIALS / name, small=True)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "small run" in text and "all claims hold" in text


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        start = time.time()
        nb = execute(arg, small=os.environ.get("EBM_PPL_TUTORIAL_SMALL", "0") == "1", timeout=3600)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                if out.get("name") == "stdout":
                    print(out["text"], end="")
        print(f"{arg}: executed in {time.time() - start:.1f} s")
