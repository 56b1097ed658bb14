"""The package's shape (issue 11): no import cycle among its modules, counting imports
made inside functions (which would otherwise hide a cycle), and the layering of the
samplers (numerics <- base <- kernels <- auto)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = {"ebm_ppl": ROOT / "ebm_ppl", "ebm_ppl_pyro": ROOT / "backends" / "ebm_ppl_pyro",
            "ebm_ppl_numpyro": ROOT / "backends" / "ebm_ppl_numpyro"}


def _modules():
    out = {}
    for pkg, base in PACKAGES.items():
        for f in sorted(base.rglob("*.py")):
            parts = [pkg, *f.relative_to(base).with_suffix("").parts]
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def _imports(modules):
    """module -> {(imported package module, at module level?)}."""
    edges = {}
    for name, (path, is_pkg) in modules.items():
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
            else:
                continue
            found |= {(t, id(node) in top) for t in targets if t in modules and t != name}
        edges[name] = found
    return edges


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_among_the_package_modules():
    modules = _modules()
    edges = _imports(modules)
    assert len(modules) > 30
    graph = {m: {t for t, _ in e} for m, e in edges.items()}
    assert _cycles(graph) == []


def test_no_package_module_is_imported_inside_a_function():
    """Imports of the package's own modules sit at the top of each module (function-level
    imports are kept for the frameworks only, which ``import ebm_ppl`` must not load)."""
    edges = _imports(_modules())
    hidden = sorted((m, t) for m, e in edges.items() for t, top in e if not top)
    assert hidden == []


def test_samplers_are_layered_one_way():
    edges = _imports(_modules())
    base = {t for t, _ in edges["ebm_ppl.samplers.base"]}
    numerics = {t for t, _ in edges["ebm_ppl.samplers._numerics"]}
    assert numerics == set()
    assert base <= {"ebm_ppl.samplers._numerics"}
    kernels = ["block_gibbs", "gibbs", "gwg", "hmc", "langevin", "mala", "numpyro_kernel"]
    for k in kernels:
        assert "ebm_ppl.samplers.auto" not in {t for t, _ in edges[f"ebm_ppl.samplers.{k}"]}, k


def test_no_torch_jit_in_the_package():
    for pkg, base in PACKAGES.items():
        for f in base.rglob("*.py"):
            assert "torch.jit" not in f.read_text(), f


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_readme_pyro_rbm_fits_with_warnings_as_errors():
    """The README's Pyro RBM (captured log density and gradients, BlockGibbs, a scheduler)
    fits under ``python -W error``: no warning escapes, and the package silences none (a
    silenced warning would still be raised by -W error inside the package)."""
    import subprocess
    import sys

    script = """
import torch, pyro, pyro.distributions as dist
import ebm_ppl
torch.manual_seed(0)
train = (torch.rand(300, 64) < 0.3).float()

def rbm(v):
    W = pyro.param("W", 0.01 * torch.randn(64, 16))
    b = pyro.param("b", torch.zeros(64))
    c = pyro.param("c", torch.zeros(16))
    with pyro.plate("data", v.shape[0]):
        v = pyro.sample("v", dist.Bernoulli(0.5).expand([64]).to_event(1), obs=v)
        h = pyro.sample("h", dist.Bernoulli(0.5).expand([16]).to_event(1))
        ebm_ppl.factor("rbm", ((v @ W) * h).sum(-1) + v @ b + h @ c)

result = ebm_ppl.fit_unnormalized(
    rbm, train, estimator=ebm_ppl.PCD(num_chains=100, num_steps=5),
    sampler=ebm_ppl.samplers.BlockGibbs(["h", "v"]),
    optimizer=pyro.optim.ExponentialLR(
        {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.03}, "gamma": 0.9993}),
    num_epochs=3, batch_size=100, progress_bar=False)
from ebm_ppl.backend import get_backend
info = get_backend("pyro").compile_model(rbm, train[:100], (), {})
values = {"v": train[:100], "h": torch.zeros(100, 16)}
for _ in range(3):  # captured at the third call of a shape, under -W error
    info.log_density_grad(info.init_params, values, ["h"])
graphs = list(info.log_density_grad.cache.values())
assert graphs and all(isinstance(g, torch.fx.GraphModule) for g in graphs), graphs
print("ok", result.history["loss"].shape)
"""
    env = dict(__import__("os").environ, PYTHONPATH=f"{ROOT}:{ROOT / 'backends'}", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok (9,)" in out.stdout


def _imported_names(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_test_modules_are_independent_and_benchmarks_use_no_test_code():
    """Test modules import shared helpers (tests/models.py, conftest's fixtures) and never
    each other; benchmarks import nothing from tests/ (shared problems: ebm_ppl.testing)."""
    tests = ROOT / "tests"
    test_modules = {f.stem for f in tests.glob("test_*.py")}
    support = {f.stem for f in tests.glob("*.py")}
    for f in tests.glob("test_*.py"):
        bad = [m for m in _imported_names(f) if m.split(".")[0] in test_modules | {"conftest"}]
        assert bad == [], (f.name, bad)
    for f in (ROOT / "benchmarks").glob("*.py"):
        text = f.read_text()
        bad = [m for m in _imported_names(f) if m.split(".")[0] in support]
        assert bad == [] and '"tests"' not in text and "'tests'" not in text, (f.name, bad)


MAX_FUNCTION_LINES = 80
MAX_FIT_UNNORMALIZED_LINES = 50


def _function_lengths():
    """(lines, "path:line name") of every function and method in the package (def line to
    last line, its decorators and its own docstring not counted: docstrings live on their
    functions, issue 21)."""
    out = []
    for base in PACKAGES.values():
        for f in sorted(base.rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    where = f"{f.relative_to(ROOT)}:{node.lineno} {node.name}"
                    doc = node.body[0] if node.body and isinstance(node.body[0], ast.Expr) and isinstance(
                        getattr(node.body[0], "value", None), ast.Constant) and isinstance(
                        node.body[0].value.value, str) else None
                    doc_lines = 0 if doc is None else doc.end_lineno - doc.lineno + 1
                    out.append((node.end_lineno - node.lineno + 1 - doc_lines, where))
    return out


def test_no_function_is_longer_than_80_lines_and_fit_unnormalized_is_short():
    lengths = _function_lengths()
    assert len(lengths) > 300
    long = sorted((f"{where} ({n} lines)" for n, where in lengths if n > MAX_FUNCTION_LINES))
    assert long == [], f"functions longer than {MAX_FUNCTION_LINES} lines: {long}"
    fit = [(n, where) for n, where in lengths if where.endswith(" fit_unnormalized")]
    assert len(fit) == 1
    assert fit[0][0] <= MAX_FIT_UNNORMALIZED_LINES, f"{fit[0][1]} has {fit[0][0]} lines"


def test_public_functions_keep_their_numpydoc_docstrings():
    """The long docstrings live beside their functions (``ebm_ppl._doc.doc``); help() and
    inspect.getdoc still show them, through the ``exclusive`` wrapper."""
    import inspect

    import ebm_ppl

    for fn in (ebm_ppl.fit_unnormalized, ebm_ppl.sample, ebm_ppl.log_partition, ebm_ppl.log_likelihood,
               ebm_ppl.plot_history, ebm_ppl.plot_samples, ebm_ppl.to_arviz):
        text = inspect.getdoc(fn)
        assert text is not None, fn
        for section in ("Parameters\n----------", "Returns\n-------", "Examples\n--------"):
            assert section in text, (fn.__name__, section)
    assert inspect.getdoc(ebm_ppl.fit_unnormalized).startswith("Fit the parameters of an unnormalized model")
    assert "    num_epochs, num_steps : int" not in inspect.getdoc(ebm_ppl.fit_unnormalized)  # dedented


def _documented_layers():
    """module name -> layer index, from the code block under "## Layers" in
    docs/architecture.md (one layer per unindented line; see the text above the block)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Layers", 1)[1].split("```", 2)[1]
    by_path, modules = {}, _modules()
    lines = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith(" ")]
    for layer, line in enumerate(lines):
        folder = None
        for item in (x.strip() for x in line.split(",")):
            if "/" in item:
                folder = item if item.endswith("/") else item.rsplit("/", 1)[0] + "/"
                by_path[item] = layer
            else:
                by_path[folder + item] = layer
    out = {}
    for name, (path, _) in modules.items():
        rel = path.relative_to(ROOT).as_posix()
        keys = [k for k in by_path if rel == k or (k.endswith("/") and rel.startswith(k))]
        if keys:
            out[name] = by_path[max(keys, key=len)]  # the most specific entry
    return out, len(lines)


def test_imports_follow_the_documented_layer_order():
    """docs/architecture.md's layer list is the truth: every package module has a layer, and
    imports only from its own layer or the layers above it."""
    layers, num = _documented_layers()
    modules = _modules()
    assert num >= 10
    assert sorted(set(modules) - set(layers)) == [], "modules the documented layers do not name"
    edges = _imports(modules)
    upward = sorted(f"{m} (layer {layers[m]}) imports {t} (layer {layers[t]})"
                    for m, e in edges.items() for t, _ in e if layers[t] > layers[m])
    assert upward == []


def test_no_estimator_class_is_named_outside_the_estimators_package():
    """Issue 21: the loop, checkpoints, placement and monitors read what an estimator
    declares; no code outside ``ebm_ppl/estimators/`` (and package ``__init__`` files)
    names an estimator class or its state type."""
    import ebm_ppl
    from ebm_ppl.estimators.base import REGISTRY

    names = {n for n in REGISTRY if n.isidentifier()}
    names |= {c.__name__ for c in vars(ebm_ppl.estimators).values()
              if isinstance(c, type) and c.__module__.startswith("ebm_ppl.estimators.")}
    names -= {"Estimator", "Contrastive", "Step"}
    found = []
    for name, (path, is_pkg) in _modules().items():
        if is_pkg or name.startswith("ebm_ppl.estimators"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            ident = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            if ident in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ident}")
    assert found == []


MAX_MODULE_LINES = 600


def test_no_module_is_longer_than_600_lines():
    long = sorted(f"{path.relative_to(ROOT)} ({n} lines)" for path, _ in _modules().values()
                  if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES)
    assert long == []


def test_no_private_framework_internals_the_issue_named():
    """Issue 21: Pyro's param store, optimizers and NumPyro's optimizer classes are used
    through their public API (the private members once used are named here)."""
    private = {"_params", "_param_to_name", "_constraints", "_state_waiting_to_be_consumed", "__wrapped__",
               "_get_optim", "_get_optim_args", "_NumPyroOptim"}
    found = []
    for name, (path, _) in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private and not (
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert found == []
