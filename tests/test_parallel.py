"""More than one device (issue 16): NumPyro ``devices=`` on simulated CPU devices and Pyro
under torch.distributed (gloo), each in subprocesses; the scaling benchmark and the GPU
script's dry run; bad settings."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import ebm_ppl
from models import ising_mean_loglik, ising_mle, ising_model

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "backends"), env.get("PYTHONPATH", "")])
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sharding_check(*args):
    pytest.importorskip("numpyro")
    out = subprocess.run([sys.executable, os.path.join(HERE, "sharding_check.py"), *args], env=_env(),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sharded():
    return _sharding_check()


@pytest.mark.slow
def test_numpyro_sharded_fit_equals_one_device_fit(sharded):
    assert sharded["num_devices"] == 4
    for name, r in sharded["fits"].items():
        assert r["params"] < 1e-5, (name, r)
        assert r["chains"] < 1e-5, (name, r)
        assert r["loss"] < 1e-4, (name, r)
        assert r["state_spec"] in ("P('shards',)", "P('chains',)"), (name, r)  # the chains are split
    for name in ("PCD", "PCD-mesh", "PT", "ReplayBuffer", "PCD-MALA"):
        assert sharded["fits"][name]["chains_devices"] == 4, name
    assert sharded["fits"]["FPCD"]["chains_devices"] == 2
    assert sharded["resume"] < 1e-5


@pytest.mark.slow
def test_numpyro_two_jax_processes_equal_one_process(tmp_path):
    """Two local processes joined by ``jax.distributed.initialize`` (CPU, gloo collectives)
    run one fit sharded over the global devices (one a process): the same parameters,
    losses and chains as the fit in one process, up to the order of float sums."""
    pytest.importorskip("numpyro")
    worker = os.path.join(HERE, "jax_dist_worker.py")
    port = _free_port()
    outs = [str(tmp_path / f"process{i}.npz") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, worker, str(i), str(port), outs[i]], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    single = str(tmp_path / "single.npz")
    out = subprocess.run([sys.executable, worker, "single", single], env=_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    one, (p0, p1) = np.load(single), [np.load(o) for o in outs]
    for p in (p0, p1):
        assert int(p["process_count"]) == 2 and int(p["device_count"]) == 2
    for name in ("PCD", "PCD-MALA"):
        for p in (p0, p1):
            assert int(p[f"{name}/chains_devices"]) == 2, name  # the chains are split over both processes
            assert int(p[f"{name}/chains_local_rows"]) * 2 == one[f"{name}/chains/x"].shape[0], name
            for key in one.files:
                if key.startswith(f"{name}/"):
                    tol = 1e-4 if key.endswith("loss") else 1e-5
                    np.testing.assert_allclose(p[key], one[key], rtol=0, atol=tol, err_msg=key)
        for key in p0.files:  # both processes hold the same (global) result
            np.testing.assert_array_equal(p0[key], p1[key], err_msg=key)


@pytest.mark.slow
def test_numpyro_sample_and_ais_sharded(sharded):
    assert sharded["sample"] < 1e-5
    one, many, se = sharded["ais"]
    assert abs(one - many) < 1e-4 + 1e-3 * se, sharded["ais"]


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_numpyro_bad_settings_raise():
    e = _sharding_check("errors")["errors"]
    assert e["too_many_devices"].startswith("ValueError") and "5" in e["too_many_devices"], e
    assert "num_chains=30" in e["chains_not_divisible"], e
    assert "buffer_size=66" in e["buffer_not_divisible"], e
    assert "batch_size=50" in e["batch_not_divisible"], e
    assert "devices" in e["bad_type"], e
    assert e["duplicate"] is not None and "devices" in e["duplicate"], e
    assert "num_chains=30" in e["sample_not_divisible"], e
    assert "num_chains=30" in e["ais_not_divisible"], e


def test_devices_on_pyro_raises_before_anything_changes():
    pytest.importorskip("pyro")
    import pyro
    from ebm_ppl.testing.frameworks import framework as make_framework

    fw = make_framework("pyro")
    pyro.clear_param_store()
    X = fw.array(np.ones((8, 9), np.float32))
    model = ising_model(fw)
    with pytest.raises(NotImplementedError, match="devices=2.*Pyro"):
        ebm_ppl.fit_unnormalized(model, X, estimator=ebm_ppl.PCD(num_chains=8), optimizer=fw.adam(0.05),
                                 num_steps=2, progress_bar=False, devices=2)
    assert len(pyro.get_param_store()) == 0
    params = {"J": fw.array(np.zeros(12, np.float32)), "h": fw.array(np.zeros(9, np.float32))}
    with pytest.raises(NotImplementedError, match="Pyro"):
        ebm_ppl.sample(model, params, X[:1], num_samples=4, num_chains=2, devices=2)
    with pytest.raises(NotImplementedError, match="Pyro"):
        ebm_ppl.log_partition(model, params, X, method="ais", num_chains=4, devices=2)


def _run_ranks(tmp_path, num_steps, world=2, mode="fit"):
    pytest.importorskip("pyro")
    port = _free_port()
    outs = [str(tmp_path / f"rank{r}.npz") for r in range(world)]
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "dist_worker.py"), str(r), str(world), str(port),
                               outs[r], str(num_steps), mode], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(world)]
    logs = [p.communicate()[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return [np.load(o) for o in outs]


@pytest.mark.slow  # an accuracy / integration test: CI's slow pass runs it
def test_pyro_two_gloo_ranks_identical_params(tmp_path):
    r0, r1 = _run_ranks(tmp_path, 20)
    np.testing.assert_array_equal(r0["J"], r1["J"])
    np.testing.assert_array_equal(r0["h"], r1["h"])
    np.testing.assert_array_equal(r0["loss"], r1["loss"])
    assert r0["chains"].shape == (250, 9)  # 500 chains, 250 a rank
    assert not np.array_equal(r0["chains"], r1["chains"])  # the ranks' streams differ


@pytest.mark.slow
def test_pyro_two_gloo_ranks_reach_exact_mle(tmp_path):
    sys.path.insert(0, HERE)
    from dist_worker import ising_data

    X = ising_data()
    J, h = ising_mle(X)
    exact = ising_mean_loglik(X, J, h)
    r0, r1 = _run_ranks(tmp_path, 3000)
    np.testing.assert_array_equal(r0["J"], r1["J"])
    gap = exact - ising_mean_loglik(X, r0["J"].astype(np.float64), r0["h"].astype(np.float64))
    print(f"pyro, 2 gloo ranks: Ising PCD gap to the exact MLE {gap:.4f} nats/example")
    assert 0 <= gap < 0.01, gap


@pytest.mark.slow
def test_pyro_two_gloo_ranks_checkpoint_resumes_exactly(tmp_path):
    """checkpoint_every under torch.distributed: rank 0 writes one file with every rank's
    chains and streams; both ranks resume from it and end bit for bit where the
    uninterrupted 2-rank fit ends (Ising PCD with minibatches; PPCA with
    positive="persistent" and MALA's adapted step sizes). A one-process fit refuses it."""
    import pyro
    from ebm_ppl.testing.frameworks import framework as make_framework

    num_steps = 20
    ranks = _run_ranks(tmp_path, num_steps, mode="checkpoint")
    for r, out in enumerate(ranks):
        for name, num_chains in (("ising", 500), ("ppca", 1000)):
            assert int(out[f"{name}_ckpt_updates"]) == num_steps // 2, (r, name)
            assert out[f"{name}_ckpt_chains"].shape[0] == num_chains, (r, name)  # every rank's chains
            whole = [k for k in out.files if k.startswith(f"{name}_whole_")]
            assert whole, name
            for key in whole:
                want, got = out[key], out[key.replace("_whole_", "_resumed_")]
                if key.endswith("_loss"):
                    want = want[num_steps // 2:]
                np.testing.assert_array_equal(got, want, err_msg=f"rank {r}: {key}")
    assert not np.array_equal(ranks[0]["ising_whole_chains_x"], ranks[1]["ising_whole_chains_x"])
    np.testing.assert_array_equal(ranks[0]["ppca_whole_latents_z"], ranks[1]["ppca_whole_latents_z"])

    loaded = ebm_ppl.load(tmp_path / "ckpt_ising.npz")
    assert len(loaded.state.rng_key) == 2 and len(loaded.state.estimator_state) == 2
    fw = make_framework("pyro")
    pyro.clear_param_store()
    with pytest.raises(ValueError, match="2 ranks of torch.distributed.*one process"):
        ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(np.ones((8, 9), np.float32)),
                                 estimator=ebm_ppl.PCD(num_chains=500, num_steps=2), optimizer=fw.adam_decay(0.05, 0.999),
                                 num_steps=2, progress_bar=False, resume=loaded)
    assert len(pyro.get_param_store()) == 0


@pytest.mark.slow
def test_pyro_two_gloo_ranks_persistent_ppca_reaches_mle(tmp_path):
    """positive="persistent" under torch.distributed: the per-example latent chains are
    kept whole on every rank and every rank's new rows are shared after each update; the
    2-rank fit reaches the MLE as the one-process fit does
    (tests/test_estimators.py::test_ppca_persistent_positive_reaches_mle)."""
    from ebm_ppl.testing.ppca import ppca_data, ppca_mean_loglik, ppca_mle

    x = ppca_data()
    best = ppca_mean_loglik(x, *ppca_mle(x))
    r0, r1 = _run_ranks(tmp_path, 3000, mode="ppca")
    for key in ("W", "mu", "sigma", "latents_z"):
        np.testing.assert_array_equal(r0[key], r1[key], err_msg=key)
    gap = best - ppca_mean_loglik(x, r0["W"].astype(np.float64), r0["mu"].astype(np.float64),
                                  float(r0["sigma"]))
    print(f"pyro, 2 gloo ranks: PPCA persistent positive phase, gap to the MLE {gap:.4f} nats/example")
    assert 0 <= gap < 0.01, gap


@pytest.mark.slow
def test_gpu_script_dry_run_and_scaling():
    """benchmarks/gpu.sh --dry-run: the RBM, first-update, MALA and scaling benchmarks at toy
    size on CPU; scaling.py reports the 1 -> 2 device speed-up."""
    out = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu.sh"), "--dry-run"], env=_env(PYTHON=sys.executable),
                         capture_output=True, text=True)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    assert "card:" in out.stdout and "dry run done" in out.stdout
    assert "ratio ebm_ppl / hand-written JAX first call" in out.stdout and "M/s" in out.stdout
    lines = [ln for ln in out.stdout.splitlines() if "speed-up" in ln]
    assert any(ln.startswith("numpyro  2 devices") for ln in lines), out.stdout


def test_spmd_philox_equals_jax_philox():
    """The partitionable Philox draws JAX's philox4x32 numbers bit for bit (the reason a
    sharded fit's streams are the one-device fit's)."""
    jax = pytest.importorskip("jax")
    from ebm_ppl_numpyro.parallel import spmd_philox

    data = jax.random.key_data(jax.random.PRNGKey(7)).astype(np.uint32)
    for shape in [(5,), (3, 7), (64, 9)]:
        ours = jax.random.uniform(jax.random.wrap_key_data(data, impl=spmd_philox), shape)
        theirs = jax.random.uniform(jax.random.wrap_key_data(data, impl="philox4x32"), shape)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
