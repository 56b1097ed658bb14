"""Issue 23, items 5 and 7: a failure keeps the fit, and bad data is refused clearly.

A checkpoint that cannot be written mid-fit (folder removed, disk full, file-size limit),
a monitor that fails, SIGINT and SIGTERM all stop the fit with ``err.result`` holding
every update made; a folder that cannot be written is refused before the first update;
SIGTERM leaves no temporary file and, with ``checkpoint_path``, a loadable final
checkpoint. Generators, lists of tensors, ``meta`` tensors and complex data are refused
naming the argument; half-precision data is computed in float32.

Every signal is raised by an event inside the fit (a monitor callable at a given update,
or the checkpoint writer's rename), never by a timer (issue 26)."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ebm_ppl
from models import X_BAD as X, _rejected, ising_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODELS = {}


def _model(fw):
    """Pyro: a new Ising model each fit (pyro.param keeps its init tensor); NumPyro: one
    object, so that its compiled update is reused."""
    if fw.name == "pyro":
        return ising_model(fw)
    return _MODELS.setdefault(fw.name, ising_model(fw))


def _fit(fw, num_steps, **kw):
    fw.clear()
    args = dict(estimator=ebm_ppl.PCD(num_chains=30), batch_size=30, rng_seed=7, progress_bar=False)
    args.update(kw)
    return ebm_ppl.fit_unnormalized(_model(fw), fw.array(X), num_steps=num_steps, **args)


def _assert_same(fw, a, b):
    """Bit for bit: parameters, chains and the position in the data."""
    assert a.state.num_updates == b.state.num_updates
    for k in a.params:
        np.testing.assert_array_equal(fw.to_numpy(a.params[k]), fw.to_numpy(b.params[k]))
    for k in a.chains:
        np.testing.assert_array_equal(fw.to_numpy(a.chains[k]), fw.to_numpy(b.chains[k]))
    assert a.state.epoch_offset == b.state.epoch_offset


def _at(update, action):
    """A monitor callable (called once per epoch: every 3 updates here) running ``action()``
    at its first call at or after ``update``."""
    done = []

    def callback(step, params, chains):
        if step >= update and not done:
            done.append(step)
            action()
        return {}

    return callback


def _temporary_files(folder):
    return [n for n in os.listdir(folder) if n.endswith(".tmp")] if os.path.isdir(folder) else []


# ---- a checkpoint that cannot be written mid-fit ----------------------------------------------

@pytest.mark.parametrize("how", ["folder removed", "disk full"])
def test_a_failed_checkpoint_write_keeps_the_fit(fw, tmp_path, monkeypatch, how):
    """Checkpoints every 6 updates; the one at update 12 cannot be written: the write's own
    error (FileNotFoundError, OSError ENOSPC) is raised with ``.result`` holding all 12
    updates, the checkpoint on disk (if any) is the one of update 6, and resuming from the
    result for the other 18 updates equals the uninterrupted fit of 30, bit for bit."""
    whole = _fit(fw, 30)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    path = folder / "fit.npz"
    if how == "folder removed":
        action, error = (lambda: shutil.rmtree(folder)), FileNotFoundError
    else:  # np.savez writes part of the file, then the device is full
        real, armed = np.savez, []

        def savez(f, **entries):
            if armed:
                f.write(b"\0" * 100)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(f, **entries)

        monkeypatch.setattr(np, "savez", savez)
        action, error = (lambda: armed.append(True)), OSError
    with pytest.raises(error) as info:
        _fit(fw, 30, checkpoint_every=6, checkpoint_path=path, monitor=[_at(9, action)])
    monkeypatch.undo()
    partial = info.value.result
    assert partial.state.num_updates == 12 and len(partial.history["loss"]) == 12
    assert "err.result" in "".join(getattr(info.value, "__notes__", []))
    if how == "disk full":
        assert ebm_ppl.load(path).state.num_updates == 6 and _temporary_files(folder) == []
    rest = _fit(fw, 18, resume=partial)
    _assert_same(fw, rest, whole)


def test_an_unwritable_checkpoint_folder_is_refused_before_the_first_update(fw, tmp_path, monkeypatch):
    """A folder where no file can be created (a read-only folder; as root, where permissions
    do not bind, a creation that fails with EACCES) and a path that is a folder are refused
    with a ValueError naming checkpoint_path, before anything changes; no probe file is left."""
    previous = _fit(fw, 2)
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
    else:
        import tempfile

        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and os.path.samefile(dir, folder):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    try:
        _rejected(fw, previous, ValueError, "checkpoint_path=.*cannot be created.*locked", checkpoint_every=1,
                  checkpoint_path=folder / "fit.npz")
    finally:
        folder.chmod(0o700)
        monkeypatch.undo()
    assert os.listdir(folder) == []
    _rejected(fw, previous, ValueError, "checkpoint_path=.*is a folder", checkpoint_every=1, checkpoint_path=folder)
    assert os.listdir(folder) == []


# ---- a monitor that fails mid-fit --------------------------------------------------------------

@pytest.mark.parametrize("returns", ["raises", "not a dict", "not a number"])
def test_a_monitor_that_fails_mid_fit_keeps_the_fit(fw, returns):
    """A monitor callable that raises, or returns what is not a dict of numbers, at update 9:
    the error (TypeError naming the callable for a bad value) carries ``.result`` with the
    9 updates made; resuming from it gives the uninterrupted fit."""
    whole = _fit(fw, 15)

    def bad(step, params, chains):
        if step < 9:
            return {"step": step}
        if returns == "raises":
            raise RuntimeError("the user's monitor failed")
        return [step] if returns == "not a dict" else {"step": "nine"}

    error, match = (RuntimeError, "user's monitor") if returns == "raises" else (TypeError, "'bad' returned")
    with pytest.raises(error, match=match) as info:
        _fit(fw, 15, monitor=[bad])
    partial = info.value.result
    assert partial.state.num_updates == 9
    np.testing.assert_array_equal(partial.history["step"][[2, 5]], [3, 6])  # the evaluations before
    _assert_same(fw, _fit(fw, 6, resume=partial), whole)


# ---- SIGTERM (and SIGINT) ----------------------------------------------------------------------

class _Signals:
    """SIGINT and SIGTERM at their defaults during a test (Python's default_int_handler and
    SIG_DFL: the fit defers them only then), put back afterwards."""

    def __enter__(self):
        self.saved = {s: signal.signal(s, d) for s, d in [(signal.SIGINT, signal.default_int_handler),
                                                          (signal.SIGTERM, signal.SIG_DFL)]}
        return self

    def __exit__(self, *exc):
        for s, h in self.saved.items():
            signal.signal(s, h)


def _raise_deferred(signum):
    """Raise ``signum`` in this process, only where the fit has taken it over (a SIGTERM at
    SIG_DFL would end the test process)."""
    assert signal.getsignal(signum) not in (signal.SIG_DFL, signal.default_int_handler), "not deferred"
    signal.raise_signal(signum)


def test_sigterm_stops_with_a_resumable_result_and_a_final_checkpoint(fw, tmp_path):
    """SIGTERM at update 20 (checkpoints every 9): SystemExit with exit status 143 at the
    chunk boundary it arrived at (update 21), ``.result`` holding those 21 updates, the
    final checkpoint of update 21 on disk, no temporary file, SIGTERM's default handler
    back; resuming from the result or the file equals the uninterrupted fit."""
    whole = _fit(fw, 45)
    path = tmp_path / "fit.npz"
    with _Signals():
        with pytest.raises(SystemExit) as info:
            _fit(fw, 45, checkpoint_every=9, checkpoint_path=path,
                 monitor=[_at(20, lambda: _raise_deferred(signal.SIGTERM))])
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    err = info.value
    assert err.code == 143 and "terminated (SIGTERM) after 21 updates" in str(err.args[0])
    assert err.result.state.num_updates == 21 and len(err.result.history["loss"]) == 21
    assert _temporary_files(tmp_path) == [] and os.listdir(tmp_path) == ["fit.npz"]
    saved = ebm_ppl.load(path)
    _assert_same(fw, saved, err.result)
    _assert_same(fw, _fit(fw, 24, resume=err.result), whole)
    _assert_same(fw, _fit(fw, 24, resume=saved), whole)


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_while_a_checkpoint_is_written(fw, tmp_path, monkeypatch, signals):
    """SIGTERM as the checkpoint of update 12 is renamed into place: one SIGTERM is deferred
    (the write completes; the fit stops there); a second one stops the write at once (its
    temporary file removed). Either way: SystemExit 143 with the 12 updates in ``.result``,
    the final checkpoint of update 12 on disk, no temporary file."""
    path = tmp_path / "fit.npz"
    real, sent = os.replace, []

    def replace(src, dst):
        if not sent and os.fspath(dst) == os.fspath(path) and ebm_ppl.load(src).state.num_updates == 12:
            sent.append(True)
            for _ in range(signals):
                _raise_deferred(signal.SIGTERM)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with _Signals():
        with pytest.raises(SystemExit) as info:
            _fit(fw, 30, checkpoint_every=6, checkpoint_path=path)
    monkeypatch.undo()
    assert info.value.code == 143 and info.value.result.state.num_updates == 12
    assert os.listdir(tmp_path) == ["fit.npz"]
    _assert_same(fw, ebm_ppl.load(path), info.value.result)


def test_sigint_with_a_checkpoint_path_saves_the_last_state(fw, tmp_path):
    """Ctrl-C (SIGINT) is handled as before (KeyboardInterrupt with ``.result``) and, with
    ``checkpoint_path``, the interrupted state is saved there too."""
    path = tmp_path / "fit.npz"
    with _Signals():
        with pytest.raises(KeyboardInterrupt, match="interrupted after 15 updates") as info:
            _fit(fw, 30, checkpoint_every=100, checkpoint_path=path,
                 monitor=[_at(14, lambda: _raise_deferred(signal.SIGINT))])
    assert info.value.result.state.num_updates == 15
    _assert_same(fw, ebm_ppl.load(path), info.value.result)


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, OSError])
def test_the_checkpoint_writer_removes_its_temporary_file(fw, tmp_path, monkeypatch, error):
    """An exception of any kind while the file is written (here from inside np.savez, after
    part of the file): raised as it is, no temporary file left, the previous file intact."""
    result = _fit(fw, 3)
    path = tmp_path / "fit.npz"
    ebm_ppl.save(result, path)
    real = np.savez

    def savez(f, **entries):
        f.write(b"\0" * 100)
        raise error("during the write")

    monkeypatch.setattr(np, "savez", savez)
    with pytest.raises(error):
        ebm_ppl.save(result, path)
    monkeypatch.setattr(np, "savez", real)
    assert os.listdir(tmp_path) == ["fit.npz"]
    _assert_same(fw, ebm_ppl.load(path), result)


CHILD = textwrap.dedent("""
    import json, os, resource, signal, sys
    sys.path[:0] = [{root!r}, {backends!r}]
    import numpy as np, ebm_ppl
    from ebm_ppl.testing.frameworks import framework as make_framework
    from ebm_ppl.testing.ising import ising_model, ising_sample
    fw = make_framework({backend!r})
    X = ising_sample(np.full(12, 0.3), np.zeros(9), 100, seed=4)
    folder = sys.argv[1]
    kw = dict(estimator=ebm_ppl.PCD(num_chains=30), batch_size=30, rng_seed=7, progress_bar=False,
              checkpoint_every=6)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def small_files(step, params, chains):  # an event inside the fit: from update 9 on, files up to 1 KiB
        if step >= 9:
            resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
        return {{}}

    report = {{}}
    try:  # 1. the checkpoint of update 12 exceeds the file-size limit
        ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=30, monitor=[small_files],
                                 checkpoint_path=os.path.join(folder, "a.npz"), **kw)
    except OSError as e:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        report.update(errno=e.errno, updates=e.result.state.num_updates)
    report["files"] = sorted(os.listdir(folder))
    print(json.dumps(report), flush=True)
    real, sent = os.replace, []
    path = os.path.join(folder, "b.npz")

    def replace(src, dst):  # an event inside the fit: the checkpoint of update 12 is being renamed
        if not sent and dst == path and ebm_ppl.load(src).state.num_updates == 12:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(src, dst)

    os.replace = replace
    fw.clear()  # Pyro: the first fit's parameters leave the param store
    # 2. SIGTERM from the process itself, not caught: the process ends with status 143
    ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=30, checkpoint_path=path, **kw)
    print("not stopped", flush=True)
""")


@pytest.mark.slow  # two fits in a fresh process (imports, compiling): 20-40 s on a loaded 2-core machine
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and rlimits")
def test_in_a_process_file_size_limit_and_sigterm(fw, tmp_path):
    """In a fresh process: (1) the file-size limit (RLIMIT_FSIZE) makes the checkpoint of
    update 12 fail with EFBIG, raised with the 12 updates in ``.result`` and no temporary
    file; (2) the process sends itself SIGTERM while the checkpoint of update 12 is being
    written and does not catch anything: it exits with status 143, leaving the checkpoint
    of update 12 (loadable, equal to the same fit stopped there) and no temporary file."""
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=ROOT, backends=os.path.join(ROOT, "backends"), backend=fw.name))
    folder = tmp_path / "ckpt"
    folder.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(script), str(folder)], env=env, capture_output=True, text=True)
    assert out.returncode == 143, out.stderr[-3000:]
    import json

    report = json.loads(out.stdout.splitlines()[0])
    assert report == {"errno": errno.EFBIG, "updates": 12, "files": ["a.npz"]}, report
    assert sorted(os.listdir(folder)) == ["a.npz", "b.npz"]
    assert ebm_ppl.load(folder / "a.npz").state.num_updates == 6
    _assert_same(fw, ebm_ppl.load(folder / "b.npz"), _fit(fw, 12))


# ---- clear errors for bad data ------------------------------------------------------------------

def _native(fw, x, dtype):
    """``x`` as the framework's array of ``dtype`` ("float16", "bfloat16", "complex64")."""
    if fw.name == "pyro":
        import torch

        return torch.as_tensor(np.asarray(x, np.float32)).to(getattr(torch, dtype))
    import jax.numpy as jnp

    return jnp.asarray(np.asarray(x, np.float32), getattr(jnp, dtype))


@pytest.fixture
def previous(fw):
    """A finished fit whose parameters and chains must survive every rejected call."""
    return _fit(fw, 2)


def _refused(fw, previous, exc, match, data, **kw):
    """Refused before anything changes (``models._rejected`` compares only arrays' values)."""
    from models import _snapshot, _store

    before, store = _snapshot(fw, previous), _store(fw)
    with pytest.raises(exc, match=match):
        ebm_ppl.fit_unnormalized(ising_model(fw), data, resume=previous, num_steps=2, progress_bar=False, **kw)
    for b, a in zip(before, _snapshot(fw, previous)):
        for k in b:
            np.testing.assert_array_equal(b[k], a[k])
    for k, v in store.items():
        np.testing.assert_array_equal(v, _store(fw)[k])


def test_containers_that_are_not_arrays_are_refused(fw, previous):
    """A generator, a list or tuple of tensors, a set, each as data or as a dict leaf, with
    or without ``backend=``: TypeError naming the argument and saying what to pass."""
    rows = [fw.array(r) for r in X]
    stack = "torch.stack" if fw.name == "pyro" else "jnp.stack"
    for backend in (None, fw.name):
        kw = {"backend": backend}
        _refused(fw, previous, TypeError, r"^data is an iterator \(generator\).*one array", (r for r in rows), **kw)
        _refused(fw, previous, TypeError, rf"^data is a list of 100 .*{stack}\(data\)", rows, **kw)
        _refused(fw, previous, TypeError, r"^data is a tuple of 100", tuple(rows), **kw)
        _refused(fw, previous, TypeError, r"^data\['x'\] is an iterator", {"x": iter(rows)}, **kw)
        _refused(fw, previous, TypeError, r"^data is a set, not an array", {1.0, 2.0}, **kw)
    if fw.name == "pyro":  # PyTorch's data pipeline: ebm_ppl draws the minibatches itself
        import torch.utils.data as tud

        dataset = tud.TensorDataset(fw.array(X))
        _refused(fw, previous, TypeError, r"^data is a TensorDataset, not an array.*batch_size=", dataset)
        _refused(fw, previous, TypeError, r"^data is a DataLoader, not an array", tud.DataLoader(dataset))
    with pytest.raises(TypeError, match=r"^example is an iterator"):
        ebm_ppl.sample(ising_model(fw), previous.params, (r for r in rows), num_samples=2, num_warmup=0)
    with pytest.raises(TypeError, match=r"^Monitor: data is a list of 2"):
        ebm_ppl.Monitor(every=1, data=rows[:2])
    # nested numbers with backend= remain an array, as before
    ok = ebm_ppl.fit_unnormalized(_model(fw), X.tolist(), ebm_ppl.PCD(num_chains=30), batch_size=30,
                                  backend=fw.name, num_steps=1, progress_bar=False)
    assert ok.state.num_updates == 1


def test_complex_data_is_refused(fw, previous):
    """Complex data, on a discrete site or as a covariate, on either backend: TypeError
    naming the leaf and the dtype, before anything changes."""
    _refused(fw, previous, TypeError, "^data has the complex dtype complex64.*real", _native(fw, X, "complex64"))

    def crf(batch):  # a covariate 'x' (an input, never sampled)
        w = fw.param("w", fw.zeros(9))
        with fw.plate("data", batch["y"].shape[0]):
            y = fw.sample("y", fw.dist.Bernoulli(0.5).expand([9]).to_event(1), obs=batch["y"])
            ebm_ppl.factor("f", (y * batch["x"] * w).sum(-1))

    fw.clear()
    with pytest.raises(TypeError, match=r"^data\['x'\] has the complex dtype"):
        ebm_ppl.fit_unnormalized(crf, {"y": fw.array(X), "x": _native(fw, X, "complex64")}, covariates="x",
                                 num_steps=1, progress_bar=False)


def test_meta_tensors_are_refused():
    """PyTorch's ``meta`` device holds no values (JAX has no such arrays): ValueError naming
    the argument, before anything changes."""
    import torch

    from ebm_ppl.testing.frameworks import framework

    fw = framework("pyro")
    previous = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=2, progress_bar=False)
    meta = torch.as_tensor(X, dtype=torch.float32).to("meta")
    _refused(fw, previous, ValueError, "^data is a tensor on PyTorch's 'meta' device.*'cpu'", meta)
    _refused(fw, previous, ValueError, r"^data\['x'\] is a tensor on PyTorch's 'meta'", {"x": meta})
    fw.clear()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_data_is_computed_in_float32(fw, dtype):
    """Half-precision data on a continuous site gives the fit of its float32 copy, bit for
    bit: parameters, chains and results in float32; the caller's array unchanged. Data near
    300 (whose squares overflow float16) fits with finite values."""
    def normal(x):
        mu = fw.param("mu", fw.array(290.0))
        with fw.plate("data", x.shape[0]):
            fw.sample("x", fw.dist.Normal(mu, 1.0), obs=x)

    model = normal if fw.name == "pyro" else _MODELS.setdefault("normal", normal)  # NumPyro: compiled once
    x = 300.0 + np.random.default_rng(0).normal(size=40)
    half = _native(fw, x, dtype)
    before = fw.to_numpy(half.float() if fw.name == "pyro" else half.astype("float32")).copy()
    kw = dict(estimator=ebm_ppl.PCD(num_chains=20), optimizer=fw.adam(0.5), num_steps=20, progress_bar=False)
    fw.clear()
    got = ebm_ppl.fit_unnormalized(model, half, **kw)
    fw.clear()
    want = ebm_ppl.fit_unnormalized(model, fw.array(before), **kw)
    assert str(half.dtype).endswith(dtype)
    np.testing.assert_array_equal(fw.to_numpy(half.float() if fw.name == "pyro" else half.astype("float32")), before)
    for tree in ("params", "chains"):
        for k, v in getattr(got, tree).items():
            assert str(v.dtype).endswith("float32"), (tree, k, v.dtype)
            np.testing.assert_array_equal(fw.to_numpy(v), fw.to_numpy(getattr(want, tree)[k]))
    assert np.isfinite(got.history["loss"]).all()
