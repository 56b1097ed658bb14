"""Issue 23 (checkpoints): files crafted to abuse ``ebm_ppl.load`` and ``resume=``.

Each forged file below has its checksum recomputed (the SHA-256 is unkeyed: anyone can),
so what refuses it is the loader's own checks: a fixed registry of state types, members
read at their declared size, an optional HMAC key, and the state checked field by field
on load and on resume."""

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import ebm_ppl
from ebm_ppl import checkpoint
from models import ising_model, ising_sample

X = ising_sample(np.full(12, 0.3), np.zeros(9), 60, seed=4)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODELS = {}
_BASE = {}


def _model(fw):
    """Pyro: a new model each fit (pyro.param keeps its init tensor); NumPyro: one object,
    so that its compiled update is reused."""
    if fw.name == "pyro":
        return ising_model(fw)
    return _MODELS.setdefault(fw.name, ising_model(fw))


def _kw(fw, **kw):
    out = dict(estimator=ebm_ppl.PCD(num_chains=10), optimizer=fw.adam(0.05), batch_size=20, rng_seed=3,
               progress_bar=False)
    out.update(kw)
    return out


def _fit(fw, num_steps, **kw):
    return ebm_ppl.fit_unnormalized(_model(fw), fw.array(X), num_steps=num_steps, **_kw(fw, **kw))


def _saved(fw, tmp_path, name="fit.npz"):
    """A checkpoint of a 4-update fit (made once per backend), written to ``tmp_path``."""
    if fw.name not in _BASE:
        _BASE[fw.name] = _fit(fw, 4)
    path = tmp_path / name
    ebm_ppl.save(_BASE[fw.name], path)
    return path


def _parts(path):
    """(metadata as JSON, arrays) of a checkpoint this test wrote (np.load: a trusted file)."""
    with np.load(path) as z:
        meta = json.loads(z["metadata"].tobytes())
        num = sum(1 for n in z.files if n[0] == "a" and n[1:].isdigit())
        return meta, [z[f"a{i}"] for i in range(num)]


def _forge(path, meta, arrays, key=None, metadata=None):
    """Write a checkpoint of ``meta`` (or raw ``metadata`` bytes) and ``arrays`` with its
    digest recomputed, as anyone can."""
    metadata = json.dumps(meta, sort_keys=True).encode() if metadata is None else metadata
    entries = {f"a{i}": a for i, a in enumerate(arrays)}
    entries["metadata"] = np.frombuffer(metadata, dtype=np.uint8)
    entries["checksum"] = np.array(checkpoint._digest(metadata, arrays, key))
    np.savez(path, **entries)
    return path


def _ref(desc):
    """The array index of an array description."""
    assert "array" in desc, desc
    return desc["array"]


def _items(desc):
    """name -> description of an encoded dict."""
    return dict(desc["dict"])


def _chain_ref(meta):
    return _ref(_items(meta["state"]["estimator_state"]["items"][0])["x"])


def _refused(path, match, key=None):
    with pytest.raises(ValueError, match=match):
        ebm_ppl.load(path, key=key)


# ---- 1. loading executes nothing a file names ------------------------------------------------

EVIL = """
import os
open(os.path.join(os.path.dirname(__file__), "imported.txt"), "w").write("side effect")
from typing import Any, NamedTuple
class CDState(NamedTuple):
    position: Any
    aux: Any
    positive_aux: Any = ()
"""


@pytest.mark.parametrize("name", [
    "evil_i23_module:CDState",  # a module of the attacker's, importable from sys.path
    "numpyro.examples.datasets:CDState",  # importing it creates a data folder
    "optax._src.sharding_test:CDState",  # importing it sets XLA_FLAGS
    "ebm_ppl:_tree.np.linalg.LinAlgError",  # a class reached through attributes
    "ebm_ppl.estimators.cd:CD",  # an ebm_ppl class that is no state type
])
def test_a_class_name_in_the_file_imports_nothing(fw, tmp_path, monkeypatch, name):
    (tmp_path / "evil_i23_module.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = name.partition(":")[0]
    before = module in sys.modules
    meta, arrays = _parts(_saved(fw, tmp_path))
    meta["state"]["estimator_state"]["namedtuple"] = name
    _refused(_forge(tmp_path / "forged.npz", meta, arrays), "unknown state type")
    assert (module in sys.modules) == before
    assert not (tmp_path / "imported.txt").exists()


def test_every_state_type_of_ebm_ppl_is_registered():
    """A NamedTuple state of an estimator or sampler that is not in the registry could not
    be saved: each one is, so a fit by any of them checkpoints."""
    from ebm_ppl import _registry, estimators, samplers

    found = []
    for package in (estimators, samplers):
        for mod in list(sys.modules.values()):
            if getattr(mod, "__name__", "").startswith(package.__name__ + "."):
                for obj in vars(mod).values():
                    if (isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")
                            and obj.__module__ == mod.__name__ and obj.__name__.endswith(("State", "Aux", "Latents"))):
                        found.append(obj)
    assert len(found) >= 7
    assert [c for c in found if not _registry.is_registered(c)] == []


# ---- 2. loading costs what the metadata declares -----------------------------------------------

def _zero_member(zf, name, nbytes):
    """An .npy member of ``nbytes`` zero bytes of data, deflated (written in 1 MiB pieces)."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(0))
    header["shape"] = (nbytes // 8,)
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, header)
        block = bytes(1 << 20)
        for _ in range(nbytes >> 20):
            f.write(block)


MEMORY = textwrap.dedent("""
    import json, resource, sys
    sys.path[:0] = [{root!r}, {backends!r}]
    import ebm_ppl
    from ebm_ppl.backend import get_backend
    get_backend({backend!r})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    errors = []
    for path in sys.argv[1:]:
        try:
            ebm_ppl.load(path)
        except ValueError as e:
            errors.append(str(e))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(grown_kib=after - before, errors=errors)))
""")


def _oversized(fw, tmp_path, extra_bytes):
    """Three forged files: an extra all-zeros member of ``extra_bytes`` (deflated, the
    checksum recomputed); the declared member a0.npy replaced by a deflated one; a0.npy
    with a header declaring 2**40 float64 (8 TiB) over 8 bytes of data."""
    path = _saved(fw, tmp_path)
    meta, arrays = _parts(path)
    extra = _forge(tmp_path / "extra.npz", meta, arrays)
    with zipfile.ZipFile(extra, "a") as zf:  # named as the next array: the old loader read it in full
        _zero_member(zf, f"a{len(arrays)}.npy", extra_bytes)
    assert os.path.getsize(extra) < os.path.getsize(path) + (1 << 20)
    swapped, huge = tmp_path / "swapped.npz", tmp_path / "huge.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(swapped, "w") as zf:
        for info in src.infolist():
            if info.filename == "a0.npy":
                _zero_member(zf, "a0.npy", 1 << 20)
            else:
                zf.writestr(info.filename, src.read(info.filename))
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (2**40,)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(huge, "w") as zf:
        for info in src.infolist():
            data = buf.getvalue() + bytes(8) if info.filename == "a0.npy" else src.read(info.filename)
            zf.writestr(info.filename, data)
    return [extra, swapped, huge]


_OVERSIZED = ["does not declare.*a[0-9]+.npy", "a0.npy.*compressed", "a0.npy' holds <f8 \\[1099511627776\\]"]


def test_oversized_members_are_refused_unread(fw, tmp_path):
    for path, match in zip(_oversized(fw, tmp_path, 64 << 20), _OVERSIZED):
        _refused(path, match)


@pytest.mark.slow
def test_a_768_mib_member_costs_no_memory(fw, tmp_path):
    """Acceptance 2: an extra all-zeros member of 768 MiB (under 1 MiB compressed, the
    checksum recomputed) is refused unread, as are the other two oversized files: peak
    memory in a fresh process grows by less than 200 MiB over the imports'. (Slow: it
    deflates 768 MiB.)"""
    files = _oversized(fw, tmp_path, 768 << 20)
    script = tmp_path / "memory.py"
    script.write_text(MEMORY.format(root=ROOT, backends=os.path.join(ROOT, "backends"), backend=fw.name))
    out = subprocess.run([sys.executable, str(script), *map(str, files)], check=True, capture_output=True,
                         text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(report["errors"]) == 3, report
    for error, match in zip(report["errors"], _OVERSIZED):
        assert re.search(match, error), (match, error)
    print(f"{fw.name}: peak memory grew by {report['grown_kib'] / 1024:.1f} MiB over the imports'")
    assert report["grown_kib"] < 200 * 1024, report  # under 200 MiB above the imports'


def test_undeclared_or_misdeclared_members_are_refused(fw, tmp_path):
    path = _saved(fw, tmp_path)
    meta, arrays = _parts(path)
    small = _forge(tmp_path / "small.npz", meta, arrays)
    with zipfile.ZipFile(small, "a") as zf:
        zf.writestr("note.npy", b"hello")
    _refused(small, "does not declare.*note.npy")
    bigger = [a.copy() for a in arrays]
    i = _chain_ref(meta)
    bigger[i] = np.zeros((arrays[i].shape[0] * 1000,) + arrays[i].shape[1:], arrays[i].dtype)
    _refused(_forge(tmp_path / "bigger.npz", meta, bigger), "declares")  # checksum right, size not
    other = [a.copy() for a in arrays]
    other[i] = arrays[i].astype(np.float64)
    _refused(_forge(tmp_path / "dtype.npz", meta, other), "declares")
    dup = tmp_path / "dup.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(dup, "w") as zf:
        for info in src.infolist():
            zf.writestr(info.filename, src.read(info.filename))
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("a0.npy", src.read("a0.npy"))
    _refused(dup, "repeats member names")


@pytest.mark.parametrize("metadata, match", [
    (b"[" * 100_000 + b"]" * 100_000, "nests deeper"),
    (b"[]", "not an object"),
    (b'{"format": 1e999}', "out of range"),
    (b'{"format": NaN}', "constant"),
    (b'{"format": ' + b"9" * 5000 + b"}", "digits"),
    (b'{"format": "ebm_ppl.checkpoint", "version": 2, "backend": "pyro", "params": {"dict": []}, '
     b'"history": {"dict": []}, "chains": {"dict": []}, "state": []}', "state has the fields"),
    (b"\xff\xfe", "not UTF-8"),
    (b'{"a": ' * 70 + b"1" + b"}" * 70, "nests deeper"),
])
def test_metadata_limits_raise_value_error(fw, tmp_path, metadata, match):
    meta, arrays = _parts(_saved(fw, tmp_path))
    _refused(_forge(tmp_path / "forged.npz", None, arrays, metadata=metadata), match)


# ---- 3. optional authenticity ---------------------------------------------------------------------

def test_hmac_key_authenticates_the_file(fw, tmp_path):
    result = _BASE.get(fw.name) or _fit(fw, 4)
    path = tmp_path / "keyed.npz"
    ebm_ppl.save(result, path, key=b"secret")
    loaded = ebm_ppl.load(path, key="secret")  # str keys are UTF-8 bytes
    np.testing.assert_array_equal(fw.to_numpy(loaded.params["J"]), fw.to_numpy(result.params["J"]))
    _refused(path, "signed with a key")  # a keyed file without the key
    _refused(path, "HMAC.*key is wrong", key=b"other")
    meta, arrays = _parts(path)
    arrays[0] = arrays[0] + 1
    _refused(_forge(tmp_path / "resigned.npz", meta, arrays), "no HMAC", key="secret")  # re-signed unkeyed
    _refused(_forge(tmp_path / "wrongkey.npz", meta, arrays, key=b"guess"), "HMAC", key="secret")
    ebm_ppl.save(result, tmp_path / "plain.npz")
    _refused(tmp_path / "plain.npz", "no HMAC", key="secret")  # an unkeyed file with a key
    with pytest.raises(TypeError, match="key"):
        ebm_ppl.save(result, path, key=123)
    with pytest.raises(ValueError, match="key must not be empty"):
        ebm_ppl.load(path, key="")


# ---- 4. forged or inconsistent state ------------------------------------------------------------

def _forge_state(fw, tmp_path, change):
    meta, arrays = _parts(_saved(fw, tmp_path))
    change(meta, arrays)
    return _forge(tmp_path / "forged.npz", meta, arrays)


def _set_perm(values):
    def change(meta, arrays):
        i = _ref(meta["state"]["epoch_perm"])
        arrays[i] = np.asarray(values(arrays[i]), dtype=arrays[i].dtype)
    return change


def _set(field, value):
    def change(meta, arrays):
        meta["state"][field] = value
    return change


def _set_array(where, value):
    def change(meta, arrays):
        i = where(meta)
        arrays[i] = np.full_like(arrays[i], value)
    return change


def _setting(meta, name, desc):
    items = meta["state"]["estimator"]["settings"]["dict"]
    items[[k for k, _ in items].index(name)] = [name, desc]


def _index(where, value):
    def change(meta, arrays):
        where(meta)["array"] = value
    return change


@pytest.mark.parametrize("change, match", [
    (_set_perm(np.zeros_like), "epoch_perm repeats"),  # acceptance 3
    (_set_perm(lambda p: p - 1), "epoch_perm holds indices outside"),
    (_set_perm(lambda p: p * 2), "epoch_perm holds indices outside"),
    (_set("epoch_offset", -1), "epoch_offset=-1"),
    (_set("epoch_offset", 10_000), "epoch_offset=10000"),
    (_set("num_updates", -1000), "num_updates=-1000"),
    (_set("num_updates", 2**70), "num_updates"),
    (_set("num_updates", 1.5), "num_updates"),
    (_set_array(_chain_ref, np.nan), r"estimator_state.position\['x'\] holds non-finite"),
    (_set_array(_chain_ref, np.inf), r"estimator_state.position\['x'\] holds non-finite"),
    (_set_array(lambda m: _ref(_items(m["state"]["params"])["J"]), np.nan), r"state.params\['J'\]"),
    (_index(lambda m: _items(m["chains"])["x"], -1), "array index -1"),  # -1 aliased the last array
    (_index(lambda m: _items(m["chains"])["x"], 0), "not the next array"),  # another array's index
    (_index(lambda m: _items(m["chains"])["x"], True), "array index True"),
    (_index(lambda m: _items(m["chains"])["x"], 10**6), "not the next array"),
    (lambda m, a: _items(m["chains"])["x"].update(kind="pickle"), "unknown array kind"),
    (lambda m, a: _items(m["chains"])["x"].update(dtype="|O"), "dtype"),
    (lambda m, a: _items(m["chains"])["x"].update(device="meta"), "device"),
    (lambda m, a: m["state"]["estimator"]["settings"]["dict"].append(["evil", {"int": "1"}]), "not those of a PCD"),
    (lambda m, a: _setting(m, "num_chains", {"int": "-5"}), "PCD refuses"),
    (lambda m, a: m["state"]["estimator"].update({"class": "Trainer"}), "unknown estimator class"),
    (lambda m, a: m.update(backend="os"), "backend 'os'"),
    (lambda m, a: m.update(extra=1), "fields"),
    (lambda m, a: m["state"].update(signature={"dict": [["params", 1]]}), "signature"),
    (lambda m, a: m["history"]["dict"].append(["loss2", {"int": "3"}]), "history"),
    (lambda m, a: m["state"]["estimator_state"].update(fields=["a", "b", "c"]), "fields"),
    (lambda m, a: m["state"]["estimator_state"]["items"].pop(), "malformed NamedTuple"),
])
def test_forged_state_is_refused_on_load(fw, tmp_path, change, match):
    _refused(_forge_state(fw, tmp_path, change), match)


def test_any_mutation_of_the_metadata_loads_or_raises_value_error(fw, tmp_path):
    """Fuzzing: 150 random nodes of the metadata replaced by hostile values (checksum
    recomputed each time); loading either succeeds or raises ValueError, never another
    exception type. (A property of every mutation: the seed only picks which.)"""
    meta, arrays = _parts(_saved(fw, tmp_path))
    hostile = [None, True, -1, 0, 2**64, 1e300, "x", [], {}, [[]], {"int": "-1"}, {"float": "nan"},
               {"array": 0, "kind": "numpy", "dtype": "<f4", "shape": []}, {"list": [1]}, {"dict": [[1, 2]]}]
    nodes = []

    def collect(node, path):
        nodes.append(path)
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in children:
            collect(v, path + (k,))

    collect(meta, ())
    rng = np.random.default_rng(23)
    for n in range(150):
        path = nodes[1 + rng.integers(len(nodes) - 1)]
        forged = json.loads(json.dumps(meta))
        parent = forged
        for k in path[:-1]:
            parent = parent[k]
        parent[path[-1]] = hostile[rng.integers(len(hostile))]
        _forge(tmp_path / "fuzz.npz", forged, arrays)
        try:
            ebm_ppl.load(tmp_path / "fuzz.npz")
        except ValueError:
            pass


def _resume(fw, path, num_steps=2, **kw):
    fw.clear()
    return ebm_ppl.fit_unnormalized(_model(fw), fw.array(X), num_steps=num_steps, resume=ebm_ppl.load(path),
                                    **_kw(fw, **kw))


def test_chains_outside_their_support_are_refused_on_resume(fw, tmp_path):
    path = _forge_state(fw, tmp_path, _set_array(_chain_ref, 2.0))  # Bernoulli chains at 2
    with pytest.raises(ValueError, match=r"resume: .*position\['x'\].*outside the support"):
        _resume(fw, path)


def test_forged_optimizer_counts_are_refused_on_resume(fw, tmp_path):
    def step_count(meta):
        if fw.name == "pyro":  # torch's per-parameter step count
            state = _items(_items(_items(meta["state"]["optimizer_state"])["J"])["state"])[0]
            return _ref(_items(state)["step"])
        return _ref(meta["state"]["optimizer_state"]["list"][0])  # numpyro.optim's step counter

    # Pyro's counts are not bounded by the updates done (a PyroOptim used again on the same
    # param store keeps counting), NumPyro's are (its state starts afresh with each fit)
    for value in (-1000, 2.0**60) if fw.name == "pyro" else (-1000, 10**6):
        path = _forge_state(fw, tmp_path, _set_array(step_count, value))
        with pytest.raises(ValueError, match="resume: .*optimizer state.*count"):
            _resume(fw, path)


def test_inconsistent_optimizer_state_is_refused_on_resume(fw, tmp_path):
    if fw.name == "pyro":  # a state entry for a parameter index the optimizer does not have
        def change(meta, arrays):
            state = _items(_items(meta["state"]["optimizer_state"])["J"])["state"]
            state["dict"][0][0] = 5
        match = "one-parameter torch optimizer state"
    else:  # the parameters numpyro.optim keeps in its state differ from state.params
        def change(meta, arrays):
            i = _ref(meta["state"]["optimizer_state"]["list"][1])
            arrays[i] = arrays[i] + 1
        match = "not state.params"
    with pytest.raises(ValueError, match=match):
        _resume(fw, _forge_state(fw, tmp_path, change))


def _optimizers(fw):
    """Optimizers that keep hyperparameters in their saved state, and how a forged file
    would change them: Pyro's torch ``param_groups`` (SGD's lr; a scheduler's lr and
    initial_lr; ClippedAdam's decayed lr), NumPyro's ``optax.inject_hyperparams`` (the lr is a leaf of the state).
    NumPyro's own optimizers and optax schedules keep none: the step count is all."""
    if fw.name == "pyro":
        import pyro.optim

        return [("sgd", lambda: fw.sgd(0.05)), ("scheduled", lambda: fw.adam_decay(0.05, 0.9)),
                ("clipped", lambda: pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.9}))]  # lr decays per step
    import optax

    return [("injected", lambda: optax.inject_hyperparams(optax.sgd)(learning_rate=0.05))]


def _ascend(fw, how, meta, arrays):
    """Rewrite the learning rates in the file's optimizer state to negative ones."""
    if how == "injected":
        leaves = [_ref(d) for d in meta["state"]["optimizer_state"]["list"]]
        hits = [i for i in leaves if arrays[i].shape == () and arrays[i] == np.float32(0.05)]
        assert len(hits) == 1, hits
        arrays[hits[0]] = np.float32(-0.05)
        return
    for name in ("J", "h"):
        state = _items(_items(meta["state"]["optimizer_state"])[name])
        optim = _items(state["optimizer"]) if how == "scheduled" else state
        group = optim["param_groups"]["list"][0]
        group["dict"] = [[k, {"float": "-0.05"} if k in ("lr", "initial_lr") else v] for k, v in group["dict"]]


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_the_file_cannot_change_the_learning_rate(fw, tmp_path):
    """A learning rate of -0.05 written into the file (gradient ascent) is not used: the
    resumed fit equals the uninterrupted one with the call's optimizer, bit for bit (a
    scheduler's learning rate is replayed from the call's schedule to the saved step)."""
    for how, optimizer in _optimizers(fw):
        fw.clear()
        first = _fit(fw, 3, optimizer=optimizer())
        ebm_ppl.save(first, tmp_path / "first.npz")
        meta, arrays = _parts(tmp_path / "first.npz")
        _ascend(fw, how, meta, arrays)
        _forge(tmp_path / "ascent.npz", meta, arrays)
        rest = _resume(fw, tmp_path / "ascent.npz", num_steps=3, optimizer=optimizer())
        fw.clear()
        whole = _fit(fw, 6, optimizer=optimizer())
        for k in whole.params:
            np.testing.assert_array_equal(fw.to_numpy(rest.params[k]), fw.to_numpy(whole.params[k]), err_msg=how)


def test_long_schedules_resume_in_closed_form(fw, tmp_path, monkeypatch):
    """Pyro replays a scheduler one step at a time up to a cap (10**6 steps), so a file's
    step count cannot make a resume run for hours; beyond, the scheduler's closed form
    (equal up to rounding), or a ValueError where it has none. NumPyro's schedules are
    functions of the saved step count: nothing is replayed."""
    if fw.name != "pyro":
        pytest.skip("NumPyro replays nothing: its schedules are evaluated at the saved step count")
    import pyro.optim
    import torch
    from ebm_ppl_pyro import optim

    monkeypatch.setattr(optim, "_MAX_REPLAY", 1)  # the fit below is then "long"
    first = _fit(fw, 3, optimizer=fw.adam_decay(0.05, 0.9))
    ebm_ppl.save(first, tmp_path / "first.npz")
    rest = _resume(fw, tmp_path / "first.npz", num_steps=3, optimizer=fw.adam_decay(0.05, 0.9))
    fw.clear()
    whole = _fit(fw, 6, optimizer=fw.adam_decay(0.05, 0.9))
    for k in whole.params:
        np.testing.assert_allclose(fw.to_numpy(rest.params[k]), fw.to_numpy(whole.params[k]), rtol=1e-5, atol=1e-7)

    def lambda_lr():
        return pyro.optim.LambdaLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.05},
                                    "lr_lambda": lambda epoch: 0.9**epoch})

    fw.clear()
    ebm_ppl.save(_fit(fw, 3, optimizer=lambda_lr()), tmp_path / "lambda.npz")
    with pytest.raises(ValueError, match="no closed form"):
        _resume(fw, tmp_path / "lambda.npz", optimizer=lambda_lr())


def test_forged_random_state_is_refused_on_resume(fw, tmp_path):
    def change(meta, arrays):  # a random state one byte (Pyro) or one word (NumPyro) short
        key = meta["state"]["rng_key"]
        desc = key["tuple"][1] if fw.name == "pyro" else key
        i = _ref(desc)
        arrays[i] = arrays[i][:-1].copy()
        desc["shape"] = list(arrays[i].shape)
    with pytest.raises(ValueError, match="resume: state.rng_key"):
        _resume(fw, _forge_state(fw, tmp_path, change))


# ---- 5. file mode ----------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoint_mode_follows_the_umask(fw, tmp_path, umask):
    result = _BASE.get(fw.name) or _fit(fw, 4)
    path = tmp_path / "fit.npz"
    path.write_bytes(b"old")
    os.chmod(path, 0o600 if umask != 0o077 else 0o644)  # replacing a file of another mode
    old = os.umask(umask)
    try:
        ebm_ppl.save(result, path)
        ebm_ppl.save(result, tmp_path / "new.npz")
        reference = tmp_path / "by_numpy.npy"
        np.save(reference, np.zeros(1))
    finally:
        os.umask(old)
    expected = os.stat(reference).st_mode & 0o777
    assert expected == 0o666 & ~umask
    assert os.stat(path).st_mode & 0o777 == expected
    assert os.stat(tmp_path / "new.npz").st_mode & 0o777 == expected
    assert sorted(os.listdir(tmp_path)) == ["by_numpy.npy", "fit.npz", "new.npz"]  # no temporary file left
