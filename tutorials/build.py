"""Build the tutorial notebooks from their sources in ``tutorials/src`` (outputs empty).

Each source is a Python file in the "percent" format: cells start at a line ``# %%``
(code) or ``# %% [markdown]`` (markdown, every line prefixed with ``# ``). Edit the
source, then run::

    python tutorials/build.py

The notebooks are committed without outputs; ``tests/test_tutorials.py`` executes them
at small size, and a full-size run (``EBM_PPL_TUTORIAL_SMALL`` unset) writes the figures
in ``tutorials/figures``.
"""

import pathlib
import sys

import nbformat

HERE = pathlib.Path(__file__).resolve().parent


def parse_cells(text):
    cells, kind, lines = [], None, []

    def flush():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.split("\n"))
            cells.append(nbformat.v4.new_markdown_cell(body))
        else:
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.split("\n"):
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def build(source):
    nb = nbformat.v4.new_notebook()
    nb.cells = parse_cells(source.read_text())
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{source.stem[:2]}-{i:02d}"  # stable ids: rebuilding gives no diff
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    target = HERE / (source.stem + ".ipynb")
    nbformat.write(nb, target)
    return target


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(p.name for p in (HERE / "src").glob("*.py"))
    for name in names:
        print(build(HERE / "src" / name))
