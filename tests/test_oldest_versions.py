"""The minimum versions that pyproject.toml declares are true: a fresh virtual environment
with each dependency at its declared minimum (constraints-oldest.txt pins them) installs
this package and runs the README's quick start on both backends.

Slow (it installs packages); skipped, saying why, when the package index cannot be reached."""

import pathlib
import re
import subprocess
import sys

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints-oldest.txt"


def _pins():
    """name -> version pinned in constraints-oldest.txt."""
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def _declared():
    """name -> minimum version declared in pyproject.toml (core, pyro and numpyro extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["pyro"] + \
        project["optional-dependencies"]["numpyro"]
    out = {}
    for req in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", req.strip())
        assert m, f"pyproject.toml: {req!r} is not of the form name>=minimum"
        out[m.group(1).lower()] = m.group(2)
    return out


def test_constraints_pin_each_declared_minimum():
    """Fast: constraints-oldest.txt pins every declared dependency at its declared minimum."""
    pins, declared = _pins(), _declared()
    for name, minimum in declared.items():
        assert pins.get(name) == minimum, f"constraints-oldest.txt pins {name} at {pins.get(name)}, declared {minimum}"


def _run(cmd, timeout):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_quickstart_runs_with_the_oldest_declared_versions(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip, python = venv / "bin" / "pip", venv / "bin" / "python"
    probe = _run([str(pip), "download", "-q", "--no-deps", "-d", str(tmp_path / "probe"), "tqdm==4.60.0"], 120)
    if probe.returncode != 0:
        pytest.skip(f"the package index is not reachable: {probe.stderr.strip()[-300:]}")
    pins = [f"{name}=={version}" for name, version in _pins().items()]
    install = _run([str(pip), "install", "-q", "-c", str(CONSTRAINTS), *pins, "-e", ".[pyro,numpyro]"], 1200)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    listed = _run([str(pip), "list", "--format=freeze"], 120).stdout.lower()
    for pin in pins:
        assert pin.lower() in listed, f"{pin} not installed: {listed}"
    run = _run([str(python), "examples/quickstart.py"], 1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("PCD fit: mean log-likelihood") == 2, run.stdout
