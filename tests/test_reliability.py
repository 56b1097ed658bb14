"""Issue 15: resume checked against the model, finite parameters always, exact resume at
any update, checkpoints on disk, interrupts, one call at a time, clear errors."""

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import ebm_ppl
from models import ising_model, ising_sample
from models import _rejected, _snapshot, _store, gaussian_model

X = ising_sample(np.full(12, 0.3), np.zeros(9), 100, seed=4)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _np(fw, tree):
    return {k: fw.to_numpy(v).copy() for k, v in tree.items()}


def _assert_same(fw, a, b):
    """Bit for bit: parameters, chains, the state's keys and the epoch position."""
    for k in a.params:
        np.testing.assert_array_equal(fw.to_numpy(a.params[k]), fw.to_numpy(b.params[k]))
    for k in a.chains:
        np.testing.assert_array_equal(fw.to_numpy(a.chains[k]), fw.to_numpy(b.chains[k]))
    assert a.state.num_updates == b.state.num_updates
    assert a.state.epoch_offset == b.state.epoch_offset
    np.testing.assert_array_equal(a.state.epoch_perm, b.state.epoch_perm)


_NUMPYRO_MODEL = []


def _model(fw):
    """The Ising model for one fit. Pyro: a new one each time (pyro.param keeps its init
    tensor as the parameter's storage, so Adam would change the model's init value);
    NumPyro: one object, so that its compiled update is reused."""
    if fw.name == "pyro":
        return ising_model(fw)
    if not _NUMPYRO_MODEL:
        _NUMPYRO_MODEL.append(ising_model(fw))
    return _NUMPYRO_MODEL[0]


def _kw(fw, **kw):
    out = dict(estimator=ebm_ppl.PCD(num_chains=30), optimizer=fw.adam(0.05), batch_size=30, rng_seed=7,
               progress_bar=False)
    out.update(kw)
    return out


# ---- item 3: exact resume at any update ---------------------------------------------------

def test_any_split_equals_one_call(fw):
    """37 + 43 = 80 and 80 calls of 1 = 80, bit for bit, with minibatches (3 per epoch)."""
    kw = _kw(fw)
    first = ebm_ppl.fit_unnormalized(_model(fw), fw.array(X), num_steps=37, **kw)
    split = ebm_ppl.fit_unnormalized(_model(fw), fw.array(X), num_steps=43, resume=first, **kw)
    fw.clear()
    kw = _kw(fw)
    ones = None
    for _ in range(80):
        ones = ebm_ppl.fit_unnormalized(_model(fw), fw.array(X), num_steps=1, resume=ones, **kw)
    fw.clear()
    whole = ebm_ppl.fit_unnormalized(_model(fw), fw.array(X), num_steps=80, **_kw(fw))
    np.testing.assert_array_equal(split.history["loss"], whole.history["loss"][37:])
    _assert_same(fw, split, whole)
    _assert_same(fw, ones, whole)
    assert whole.state.num_updates == 80 and whole.state.epoch_offset == 60  # 80 = 26 epochs + 2 batches


# ---- item 2: parameters stay finite; num_updates on failure ----------------------------

def _tilt_model(fw):
    def model(x):
        mu = fw.param("mu", fw.array(0.0))
        with fw.plate("data", x.shape[0]):
            fw.sample("x", fw.dist.Normal(0.0, 1.0), obs=x)
            ebm_ppl.factor("tilt", mu * x)

    return model


def test_overflowing_parameter_stops_with_finite_parameters(fw):
    """SGD with a huge learning rate overflows mu to inf at the 4th update (the gradient
    grows by ~1e30 per update): the fit stops there with finite params everywhere."""
    x = np.full((20,), 5.0, np.float32)
    with pytest.raises(FloatingPointError, match="update") as info:
        ebm_ppl.fit_unnormalized(_tilt_model(fw), fw.array(x), ebm_ppl.PCD(num_chains=20),
                                 optimizer=fw.sgd(1e13), num_steps=10, progress_bar=False)
    result = info.value.result
    mu = fw.to_numpy(result.params["mu"])
    assert np.isfinite(mu).all()
    assert np.isfinite(fw.to_numpy(result.state.params["mu"])).all()
    n = len(result.history["loss"])
    assert result.state.num_updates == n < 10
    if fw.name == "pyro":
        import pyro

        assert np.isfinite(float(pyro.param("mu").detach()))
        assert float(pyro.param("mu").detach()) == float(mu)


def test_num_updates_of_a_failed_fit(fw):
    """The model of test_non_finite_energy_stops_with_last_finite_parameters: one finite
    update, then NaN; num_updates counts the applied update only (also after a resume)."""
    def model(x):
        mu = fw.param("mu", fw.array(0.9))
        with fw.plate("data", x.shape[0]):
            fw.sample("x", fw.dist.Normal(0.0, 1.0), obs=x)
            ebm_ppl.factor("tilt", mu * x + (1 - mu) ** 0.5)

    data = fw.array(np.full((20,), 5.0, np.float32))
    kw = dict(estimator=ebm_ppl.PCD(num_chains=20), optimizer=fw.sgd(0.1), progress_bar=False)
    with pytest.raises(FloatingPointError, match="update 1 ") as info:
        ebm_ppl.fit_unnormalized(model, data, num_steps=10, **kw)
    first = info.value.result
    assert first.state.num_updates == 1 and len(first.history["loss"]) == 1
    with pytest.raises(FloatingPointError, match="update 1 .update 0 of this call") as info:
        ebm_ppl.fit_unnormalized(model, data, num_steps=10, resume=first, **kw)
    assert info.value.result.state.num_updates == 1
    assert len(info.value.result.history["loss"]) == 0


# ---- item 1: resume checked against the model ------------------------------------------

def _model_h(fw, size, site="x"):
    def model(x):
        h = fw.param("h", fw.zeros(size))
        with fw.plate("data", x.shape[0]):
            fw.sample(site, fw.dist.Bernoulli(0.5).expand([9]).to_event(1), obs=x)
            ebm_ppl.factor("f", (x * h).sum(-1))

    return model


def _resume_rejected(fw, result, model, match, **kw):
    fw.clear()
    before = _snapshot(fw, result)
    with pytest.raises(ValueError, match=match):
        ebm_ppl.fit_unnormalized(model, fw.array(X), num_steps=2, resume=result, progress_bar=False, **kw)
    for b, a in zip(before, _snapshot(fw, result)):
        for k in b:
            np.testing.assert_array_equal(b[k], a[k])
    assert _store(fw) == {}  # the rejected call left nothing in Pyro's param store


def test_resume_rejects_another_model(fw):
    result = ebm_ppl.fit_unnormalized(_model_h(fw, 9), fw.array(X), num_steps=3, progress_bar=False)
    _resume_rejected(fw, result, _model_h(fw, 1), "parameter 'h'.*shape")
    _resume_rejected(fw, result, _model_h(fw, 9, site="y"), "sites")
    _resume_rejected(fw, result, ising_model(fw), "parameters")

    def positive(x):
        h = fw.param("h", fw.zeros(9) + 1.0, constraint=fw.constraints.positive)
        with fw.plate("data", x.shape[0]):
            fw.sample("x", fw.dist.Bernoulli(0.5).expand([9]).to_event(1), obs=x)
            ebm_ppl.factor("f", (x * h).sum(-1))

    _resume_rejected(fw, result, positive, "parameter 'h'.*constraint")


def test_resume_rejects_another_optimizer_or_chains(fw):
    result = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=3, optimizer=fw.sgd(0.01),
                                      progress_bar=False)
    _resume_rejected(fw, result, ising_model(fw), "optimizer", optimizer=fw.adam(0.01))
    cd = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), ebm_ppl.CD(), num_steps=3, batch_size=20,
                                  progress_bar=False)
    _resume_rejected(fw, cd, ising_model(fw), "chains", estimator=ebm_ppl.CD(), batch_size=10)
    _resume_rejected(fw, cd, ising_model(fw), "estimator|fitted with", estimator=ebm_ppl.CD(2), batch_size=20)


# ---- item 4: sampler settings ----------------------------------------------------------

@pytest.mark.parametrize("make, arg", [
    (lambda: ebm_ppl.samplers.MALA(float("inf")), "step_size"),
    (lambda: ebm_ppl.samplers.MALA(float("nan")), "step_size"),
    (lambda: ebm_ppl.samplers.MALA(0.1, adapt_rate=float("nan")), "adapt_rate"),
    (lambda: ebm_ppl.samplers.MALA(0.1, adapt_rate=-0.1), "adapt_rate"),
    (lambda: ebm_ppl.samplers.MALA(0.1, target_accept=float("nan")), "target_accept"),
    (lambda: ebm_ppl.samplers.MALA("0.1"), "step_size"),
    (lambda: ebm_ppl.samplers.HMC(float("inf"), 5), "step_size"),
    (lambda: ebm_ppl.samplers.HMC(0.1, float("inf")), "num_leapfrog"),
    (lambda: ebm_ppl.samplers.HMC(0.1, 5, adapt_rate=-1), "adapt_rate"),
    (lambda: ebm_ppl.samplers.Langevin(float("inf")), "step_size"),
    (lambda: ebm_ppl.samplers.Langevin(0.1, noise_scale=float("nan")), "noise_scale"),
    (lambda: ebm_ppl.samplers.Langevin(0.1, noise_scale=-1), "noise_scale"),
])
def test_sampler_settings_are_checked(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_numpy_integer_counts_are_accepted():
    assert ebm_ppl.PCD(num_chains=np.int64(10), num_steps=np.int32(2)).num_chains == 10
    assert type(ebm_ppl.PCD(num_chains=np.int64(10)).num_chains) is int
    assert ebm_ppl.CD(num_steps=np.int64(3)).num_steps == 3


# ---- item 7: clear errors, nothing changed -----------------------------------------------

@pytest.fixture
def previous(fw):
    return ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=3, progress_bar=False)


def _reject_fresh(fw, exc, match, model, data, **kw):
    """A rejected call without resume: data unchanged, the Pyro store unchanged."""
    store = _store(fw)
    copy = {k: fw.to_numpy(v).copy() for k, v in data.items()} if isinstance(data, dict) else None
    with pytest.raises(exc, match=match):
        ebm_ppl.fit_unnormalized(model, data, num_steps=2, progress_bar=False, **kw)
    after = _store(fw)
    assert sorted(after) == sorted(store)
    for k in store:
        np.testing.assert_array_equal(store[k], after[k])
    if copy is not None:
        for k in copy:
            np.testing.assert_array_equal(copy[k], fw.to_numpy(data[k]))


def test_integer_data(fw, previous):
    xi = X.astype(np.int64)
    if fw.name == "pyro":  # Pyro's Bernoulli keeps float values: a clear error
        _rejected(fw, previous, TypeError, "data leaf 'data'.*site 'x'.*float", data=fw.array(xi, np.int64))
        _rejected(fw, previous, TypeError, "data leaf 'data'.*site 'x'.*float", data=fw.array(xi, np.bool_))
    x = np.arange(10, dtype=np.int32)
    _reject_fresh(fw, TypeError, "data leaf 'data'.*site 'x'.*continuous", gaussian_model(fw),
                  fw.array(x, np.int32))


def test_empty_and_0d_data(fw, previous):
    _rejected(fw, previous, ValueError, "data leaf 'data' has no examples", data=fw.array(X[:0]))
    _rejected(fw, previous, ValueError, "data leaf 'data' is 0-d", data=fw.array(np.float32(1.0)))


def test_dict_leaves_of_different_lengths(fw, previous):
    inner = ising_model(fw)

    def model(batch):
        inner(batch["x"])

    data = {"x": fw.array(X), "y": fw.array(X[:50])}
    _reject_fresh(fw, ValueError, "different numbers of examples.*'y': 50", model, data)


@pytest.mark.parametrize("seed", ["abc", None, 2**70, "5", 1.7, -1, True])
def test_bad_rng_seed(fw, previous, seed):
    _rejected(fw, previous, ValueError, "rng_seed", rng_seed=seed)
    with pytest.raises(ValueError, match="rng_seed"):
        ebm_ppl.sample(ising_model(fw), previous.params, fw.array(X[:1]), num_samples=2, num_warmup=1,
                       rng_seed=seed)


def test_data_of_the_other_framework(fw):
    from ebm_ppl.testing.frameworks import framework as make_framework

    other = make_framework("numpyro" if fw.name == "pyro" else "pyro")
    fw.clear()
    _reject_fresh(fw, TypeError, "data:.*(torch|jax)", ising_model(other), fw.array(X))
    other.clear()


def test_negative_or_nan_learning_rate(fw, previous):
    _rejected(fw, previous, ValueError, "optimizer.*(learning rate|lr)", optimizer=fw.sgd(-0.1))
    _rejected(fw, previous, ValueError, "optimizer.*(learning rate|lr|NaN)", optimizer=fw.adam(float("nan")))


def test_sample_with_nan_parameters(fw, previous):
    params = dict(previous.params)
    params["J"] = params["J"] * float("nan")
    with pytest.raises(ValueError, match=r"params\['J'\].*NaN"):
        ebm_ppl.sample(ising_model(fw), params, fw.array(X[:1]), num_samples=2, num_warmup=1)


def test_rejected_pyro_call_leaves_no_new_parameters(backend):
    if backend != "pyro":
        pytest.skip("the param store is Pyro's")
    import pyro
    from ebm_ppl.testing.frameworks import framework as make_framework

    fw = make_framework("pyro")
    pyro.param("J", fw.zeros(12) + 0.5)
    with pytest.raises(ValueError, match="batch_size"):
        ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=2, batch_size=1000, progress_bar=False)
    assert list(pyro.get_param_store().keys()) == ["J"]
    np.testing.assert_array_equal(fw.to_numpy(pyro.param("J")), 0.5)
    fw.clear()


# ---- item 6: one call at a time ------------------------------------------------------------

def test_concurrent_call_raises(fw):
    entered, release = threading.Event(), threading.Event()
    inner = ising_model(fw)

    def blocking(x):  # holds the first fit inside its model until released
        entered.set()
        release.wait(30)
        inner(x)

    errors = []

    def run():
        try:
            ebm_ppl.fit_unnormalized(blocking, fw.array(X), num_steps=2, progress_bar=False)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert entered.wait(30)
        with pytest.raises(RuntimeError, match="another thread.*not thread-safe"):
            ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=2, progress_bar=False)
        with pytest.raises(RuntimeError, match="another thread"):
            ebm_ppl.sample(ising_model(fw), {"J": fw.zeros(12), "h": fw.zeros(9)}, fw.array(X[:1]), num_samples=2)
    finally:
        release.set()
        thread.join(60)
    assert not errors, errors
    ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=2, progress_bar=False)  # free again


# ---- item 5: interrupts -----------------------------------------------------------------------

def _timed_fit(fw, num_steps, kw):
    fw.clear()
    start = time.perf_counter()
    result = ebm_ppl.fit_unnormalized(_model(fw), fw.array(X), num_steps=num_steps, **kw)
    return result, time.perf_counter() - start


def test_sigint_stops_with_a_resumable_result(fw):
    """SIGINT in the middle of a fit: KeyboardInterrupt with .result, honoured within a
    fraction of a second; resuming from it equals the uninterrupted fit bit for bit."""
    kw = _kw(fw)  # the same objects: NumPyro's compiled update is reused
    num_steps = 400
    _timed_fit(fw, num_steps, kw)  # warm up (compilation)
    whole, seconds = _timed_fit(fw, num_steps, kw)
    while seconds < 2.0:  # a fit long enough to interrupt in its middle
        num_steps *= 2
        whole, seconds = _timed_fit(fw, num_steps, kw)
    fw.clear()
    sent = []
    timer = threading.Timer(0.05, lambda: (sent.append(time.perf_counter()), os.kill(os.getpid(), signal.SIGINT)))

    def start_the_clock(step, params, chains):  # at the first epoch's end: the fit is running, and
        if not timer.is_alive() and not sent:  # runs for seconds more (a clock started before the
            timer.start()  # call would also time the setup, which under load can outlast the fit)
        return {}

    # Python's default SIGINT handler, which the deferral takes over (a process started in the
    # background by a non-interactive shell inherits SIGINT ignored: nothing to defer there)
    launched_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt, match="resume=err.result") as info:
            ebm_ppl.fit_unnormalized(_model(fw), fw.array(X), num_steps=num_steps, monitor=[start_the_clock],
                                     **kw)
        latency = time.perf_counter() - sent[0]
        timer.join()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the deferral put it back
    finally:
        signal.signal(signal.SIGINT, launched_with)
    partial = info.value.result
    assert 0 < partial.state.num_updates < num_steps
    assert len(partial.history["loss"]) == partial.state.num_updates
    assert latency < 1.0, latency  # 0.2 s chunks; generous for a loaded test machine
    rest = ebm_ppl.fit_unnormalized(_model(fw), fw.array(X), num_steps=num_steps - partial.state.num_updates,
                                    resume=partial, **kw)
    _assert_same(fw, rest, whole)


def test_keyboard_interrupt_under_another_handler(fw):
    """Where SIGINT has a handler of the user's (that raises), the KeyboardInterrupt is
    caught between chunks and still carries the last consistent result."""
    if fw.name == "pyro":
        pytest.skip("a KeyboardInterrupt raised inside a Pyro step may land mid-step; the default handler is deferred")
    num_steps = 20000

    def handler(signum, frame):
        raise KeyboardInterrupt

    model, kw = ising_model(fw), _kw(fw)
    ebm_ppl.fit_unnormalized(model, fw.array(X), num_steps=2, **kw)  # compile before the clock starts
    previous = signal.signal(signal.SIGINT, handler)
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt) as info:
            ebm_ppl.fit_unnormalized(model, fw.array(X), num_steps=num_steps, **kw)
    finally:
        timer.join()
        signal.signal(signal.SIGINT, previous)
    partial = getattr(info.value, "result", None)
    if partial is None:
        pytest.skip("the interrupt landed outside the fit loop (during setup)")
    n = partial.state.num_updates
    assert len(partial.history["loss"]) == n
    whole = ebm_ppl.fit_unnormalized(model, fw.array(X), num_steps=n, **kw)
    _assert_same(fw, partial, whole)


# ---- checkpoints ----------------------------------------------------------------------------------

def test_save_load_resumes_bit_for_bit_in_a_fresh_process(fw, tmp_path):
    model_src = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'backends')!r}, {os.path.join(ROOT, 'tests')!r}]
        import numpy as np, ebm_ppl
        from ebm_ppl.testing.frameworks import framework as make_framework
        from ebm_ppl.testing.ising import ising_model, ising_sample
        fw = make_framework({fw.name!r})
        X = ising_sample(np.full(12, 0.3), np.zeros(9), 100, seed=4)
        first = ebm_ppl.load(sys.argv[1])
        kw = dict(estimator=ebm_ppl.PCD(num_chains=30), optimizer=fw.adam(0.05), batch_size=30, rng_seed=7,
                  progress_bar=False)
        rest = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=25, resume=first, **kw)
        ebm_ppl.save(rest, sys.argv[2])
    """)
    first = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=35, **_kw(fw))
    ebm_ppl.save(first, tmp_path / "first.npz")
    script = tmp_path / "resume.py"
    script.write_text(model_src)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(script), str(tmp_path / "first.npz"), str(tmp_path / "rest.npz")],
                   check=True, env=env, capture_output=True)
    rest = ebm_ppl.load(tmp_path / "rest.npz")
    fw.clear()
    whole = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=60, **_kw(fw))
    _assert_same(fw, rest, whole)
    np.testing.assert_array_equal(rest.history["loss"], whole.history["loss"][35:])
    assert rest.backend == fw.name and type(rest.state.estimator) is ebm_ppl.PCD


def test_load_executes_nothing_and_round_trips(fw, tmp_path, monkeypatch):
    result = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=5, **_kw(fw))
    path = tmp_path / "fit.ckpt"
    ebm_ppl.save(result, path)
    assert os.listdir(tmp_path) == ["fit.ckpt"]  # no temporary file left, no suffix added

    def no_pickle(*args, **kwargs):
        raise AssertionError("load must not unpickle")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    loaded = ebm_ppl.load(path)
    monkeypatch.undo()
    _assert_same(fw, loaded, result)
    for k in result.history:
        np.testing.assert_array_equal(loaded.history[k], result.history[k])
    assert vars(loaded.state.estimator) == vars(result.state.estimator)
    assert loaded.state.signature == result.state.signature


def test_damaged_checkpoints_raise_clearly(fw, tmp_path, monkeypatch):
    result = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=3, **_kw(fw))
    path = tmp_path / "fit.npz"
    ebm_ppl.save(result, path)
    raw = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        ebm_ppl.load(tmp_path / "cut.npz")
    at = raw.index(b'"format"') + 3  # a byte inside the JSON metadata
    flipped = raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1:]
    (tmp_path / "flip.npz").write_bytes(flipped)
    with pytest.raises(ValueError, match="corrupt"):
        ebm_ppl.load(tmp_path / "flip.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not an ebm_ppl checkpoint"):
        ebm_ppl.load(tmp_path / "other.npz")
    from ebm_ppl import checkpoint

    monkeypatch.setattr(checkpoint, "VERSION", 99)  # a file from a later version
    ebm_ppl.save(result, tmp_path / "v99.npz")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="format version 99.*reads version 1"):
        ebm_ppl.load(tmp_path / "v99.npz")


def test_checkpoint_every_writes_resumable_checkpoints(fw, tmp_path):
    path = tmp_path / "ckpt.npz"
    whole = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=50, checkpoint_every=20,
                                     checkpoint_path=path, **_kw(fw))
    last = ebm_ppl.load(path)
    assert last.state.num_updates == 40 and len(last.history["loss"]) == 40
    fw.clear()
    rest = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=10, resume=last, **_kw(fw))
    _assert_same(fw, rest, whole)
    with pytest.raises(ValueError, match="checkpoint_every and checkpoint_path"):
        ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=2, checkpoint_every=1, **_kw(fw))
    with pytest.raises(ValueError, match="checkpoint_path.*does not exist"):
        ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=2, checkpoint_every=1,
                                 checkpoint_path=tmp_path / "nowhere" / "c.npz", **_kw(fw))


SOAK = textwrap.dedent("""
    import sys
    sys.path[:0] = [{root!r}, {backends!r}, {tests!r}]
    import numpy as np, ebm_ppl
    from ebm_ppl.testing.frameworks import framework as make_framework
    from ebm_ppl.testing.ising import ising_model, ising_sample
    fw = make_framework({backend!r})
    X = ising_sample(np.full(12, 0.3), np.zeros(9), 100, seed=4)
    total, path, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    resume = ebm_ppl.load(path) if len(sys.argv) > 4 else None
    done = 0 if resume is None else resume.state.num_updates
    kw = dict(estimator=ebm_ppl.PCD(num_chains=20), optimizer=fw.adam(0.01), batch_size=25, rng_seed=11,
              progress_bar=False)
    result = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=total - done, resume=resume,
                                      checkpoint_every=1000, checkpoint_path=path, **kw)
    ebm_ppl.save(result, out)
""")


@pytest.mark.slow
def test_soak_sigkill_and_restart_from_checkpoint(fw, tmp_path):
    """20 000 updates, checkpoints every 1 000, SIGKILL at a random moment, restart from
    the last checkpoint: the end equals an uninterrupted run bit for bit."""
    total = 20000
    script = tmp_path / "soak.py"
    script.write_text(SOAK.format(root=ROOT, backends=os.path.join(ROOT, "backends"),
                                  tests=os.path.join(ROOT, "tests"), backend=fw.name))
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def start(name):
        return subprocess.Popen([sys.executable, str(script), str(total), str(tmp_path / f"{name}.ckpt"),
                                 str(tmp_path / f"{name}.npz")], env=env)

    def wait_for_first_checkpoint(proc, name):
        while not (tmp_path / f"{name}.ckpt").exists():
            assert proc.poll() is None, "the run ended without writing a checkpoint"
            time.sleep(0.005)
        return time.perf_counter()

    proc = start("a")  # uninterrupted; times the part after the first checkpoint
    first = wait_for_first_checkpoint(proc, "a")
    assert proc.wait() == 0
    seconds = time.perf_counter() - first
    rng = np.random.default_rng()  # a random moment, on purpose: any moment must do
    fraction = 0.8
    for _ in range(5):
        proc = start("b")
        deadline = wait_for_first_checkpoint(proc, "b") + rng.uniform(0.0, fraction) * seconds
        while time.perf_counter() < deadline and proc.poll() is None:
            time.sleep(0.002)
        if proc.poll() is None:
            break
        # run "b" ended before its moment (it ran faster than the timed run "a", as under a
        # changing load): start it again and kill it earlier
        (tmp_path / "b.ckpt").unlink()
        fraction /= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = ebm_ppl.load(tmp_path / "b.ckpt").state.num_updates
    subprocess.run([sys.executable, str(script), str(total), str(tmp_path / "b.ckpt"), str(tmp_path / "b.npz"),
                    "resume"], check=True, env=env)
    a, b = ebm_ppl.load(tmp_path / "a.npz"), ebm_ppl.load(tmp_path / "b.npz")
    assert 0 < killed_at < total and killed_at % 1000 == 0
    _assert_same(fw, a, b)
    for k in a.state.params:
        np.testing.assert_array_equal(fw.to_numpy(a.state.params[k]), fw.to_numpy(b.state.params[k]))


def test_structure_comparison_ignores_dict_order():
    """JAX returns dict pytrees with sorted keys (module parameters): resume must not care."""
    from ebm_ppl._tree import describe

    a = {"w0": np.zeros((2, 3)), "b0": np.zeros(3)}
    assert describe(a) == describe({"b0": np.zeros(3), "w0": np.zeros((2, 3))})
    assert describe(a) != describe({"b0": np.zeros(4), "w0": np.zeros((2, 3))})
