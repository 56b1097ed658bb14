"""Noise-contrastive estimation (issue 22, items 4-6): ebm_ppl.NCE on both backends.

The accuracy tests compare with optima computed without the library: the exact MLE of the
3x3 Ising model (Newton's method, ``ising_exact``), its exact log Z by the 512 states
(numpy), and the RBM's exact log-likelihood maximized by scipy's L-BFGS. Their thresholds
were set from the spread of a numpy re-implementation of the same updates over 8 seeds
(Ising, ν = 8, 300 updates of Adam(0.02): log-likelihood gap at most 0.001 nats, log Z error
standard deviation 0.011): the acceptance bounds (0.02 nats, 0.05 in log Z) are 20 times and
4.5 standard deviations away.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import ebm_ppl
from ebm_ppl.estimators.nce import _profile_log_z
from models import (X_ISING, _store, exact_ising_log_z, gaussian_model, ising_mean_loglik, ising_model,
                    rbm_exact_log_z, rbm_log_marginal, rbm_model, small_rbm_mean_loglik, small_rbm_truth_and_data)

HERE = os.path.dirname(os.path.abspath(__file__))
X_SMALL = X_ISING[:600]


def _params(fw, result):
    return {k: np.asarray(fw.to_numpy(v), np.float64) for k, v in result.params.items()}


def _marginal_noise(fw, x):
    """Independent Bernoulli noise with the data's marginals (batch shape (9,): summed)."""
    p = np.clip(x.mean(0), 0.05, 0.95)
    return fw.dist.Bernoulli(probs=fw.array(p))


# ---- settings

@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), True, "2", None])
def test_bad_noise_ratio_is_refused(bad):
    with pytest.raises(ValueError, match="noise_ratio"):
        ebm_ppl.NCE(noise_ratio=bad)


@pytest.mark.parametrize("bad", [3.0, "base", {}, {"x": 1.0}, {1: None}, [None]])
def test_bad_noise_is_refused(bad):
    with pytest.raises(ValueError, match="noise"):
        ebm_ppl.NCE(noise=bad)


def test_repr_and_number_of_noise_rows():
    assert repr(ebm_ppl.NCE(noise_ratio=4)) == "NCE(noise_ratio=4.0)"
    assert ebm_ppl.NCE(noise_ratio=np.float32(0.5)).noise_ratio == 0.5
    est = ebm_ppl.NCE(noise_ratio=0.3)
    assert [est.num_noise(b) for b in (1, 10, 64, 100)] == [1, 3, 19, 30]  # max(1, round(ν B))
    assert ebm_ppl.NCE(noise_ratio=2.5).num_noise(3) == 8  # 7.5 rounds half to even
    assert ebm_ppl.estimators.base.REGISTRY["NCE"] is ebm_ppl.NCE


# ---- the profile in log Z

def test_profile_is_the_exact_minimizer(fw):
    """The safeguarded Newton solve equals scipy's minimizer of the (convex) NCE loss in
    log Z, from a warm start and from starts far off (the bracket takes over)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_expit

    from ebm_ppl.backend import get_backend

    ops = get_backend(fw.name).ops
    rng = np.random.default_rng(0)
    for nu in (0.5, 3.7):
        a = rng.normal(1.0, 2.0, 300)
        b = rng.normal(-1.0, 1.5, int(300 * nu))

        def loss(c):
            return -(np.mean(log_expit(a - c)) + nu * np.mean(log_expit(c - b)))

        want = minimize_scalar(loss, bracket=(-5, 5), tol=1e-12).x
        for start in (want + 0.3, -60.0, 80.0):
            got = _profile_log_z(ops, fw.array(a), fw.array(b), nu, fw.array(start))
            assert abs(float(fw.to_numpy(got)) - want) < 1e-4, (nu, start)


# ---- fits

@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_short_fit_history_and_no_chains(fw):
    """At θ = 0 the model is its base measure: log Z = 0 exactly, and the first update's
    data and noise have log p̃ = 9 log 0.5."""
    result = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_SMALL), estimator=ebm_ppl.NCE(noise_ratio=1.5),
                                      optimizer=fw.adam(0.05), num_steps=6, batch_size=150, progress_bar=False)
    h = result.history
    assert set(h) == {"loss", "positive_log_density", "negative_log_density", "acceptance_rate", "log_z"}
    assert all(v.shape == (6,) for v in h.values())
    assert abs(h["log_z"][0]) < 1e-6
    assert h["positive_log_density"][0] == pytest.approx(9 * math.log(0.5), abs=1e-5)
    assert h["negative_log_density"][0] == pytest.approx(9 * math.log(0.5), abs=1e-5)
    # −[log σ(−log ν) + ν log σ(log ν)] = (1 + ν) log(1 + ν) − ν log ν
    assert h["loss"][0] == pytest.approx(2.5 * math.log(2.5) - 1.5 * math.log(1.5), abs=1e-5)
    assert np.all(np.isnan(h["acceptance_rate"]))
    assert np.all(np.diff(h["log_z"]) != 0)
    assert result.chains == {} and result.state.estimator_state.log_z.shape == ()


@pytest.mark.slow
def test_nce_reaches_the_exact_mle_and_log_z(fw, ising_exact):
    """Acceptance 4: base-measure noise, ν = 8, the whole data set each update."""
    result = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_ISING), estimator=ebm_ppl.NCE(noise_ratio=8),
                                      optimizer=fw.adam(0.02), num_steps=300, progress_bar=False)
    p = _params(fw, result)
    assert ising_exact - ising_mean_loglik(X_ISING, p["J"], p["h"]) < 0.02
    exact = exact_ising_log_z(p["J"], p["h"])
    assert abs(result.history["log_z"][-1] - exact) < 0.05
    # the learned log Z is log_partition's quantity (base measures included)
    lz = ebm_ppl.log_partition(ising_model(fw), result.params, fw.array(X_ISING[:1]), method="exact")
    assert lz.estimate == pytest.approx(exact, abs=1e-4)


@pytest.mark.slow
def test_nce_with_given_noise_reaches_the_exact_mle(fw, ising_exact):
    """A user-given noise: independent Bernoullis with the data's marginals."""
    est = ebm_ppl.NCE(noise=_marginal_noise(fw, X_ISING), noise_ratio=4)
    result = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_ISING), estimator=est, optimizer=fw.adam(0.02),
                                      num_steps=300, progress_bar=False)
    p = _params(fw, result)
    assert ising_exact - ising_mean_loglik(X_ISING, p["J"], p["h"]) < 0.02
    assert abs(result.history["log_z"][-1] - exact_ising_log_z(p["J"], p["h"])) < 0.05


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_given_noise_on_a_continuous_site(fw):
    """An improper base (ImproperUniform) needs a given noise: a standard normal. p̃ =
    exp(−prec x² / 2): the fit moves prec from 1 towards 1 / mean(x²) = 4, and log Z
    towards its exact value ½ log(2π / prec)."""
    x = np.random.default_rng(3).normal(0.0, 0.5, 1000).astype(np.float32)
    with pytest.raises(ValueError, match="improper.*'x'|'x'.*improper"):
        ebm_ppl.fit_unnormalized(gaussian_model(fw), fw.array(x), estimator=ebm_ppl.NCE(), num_steps=1,
                                 progress_bar=False)
    est = ebm_ppl.NCE(noise=fw.dist.Normal(fw.array(0.0), fw.array(1.0)), noise_ratio=2)
    result = ebm_ppl.fit_unnormalized(gaussian_model(fw), fw.array(x), estimator=est, optimizer=fw.adam(0.1),
                                      num_steps=60, progress_bar=False)
    prec = float(fw.to_numpy(result.params["prec"]))
    assert 2.0 < prec < 6.0
    assert abs(result.history["log_z"][-1] - 0.5 * math.log(2 * math.pi / prec)) < 0.15


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_dict_noise_over_two_observed_sites(fw):
    """Two observed sites, one noise distribution each (a dict), on 1000 exact draws of the
    model at w = 0.4: w within 0.03 of the exact MLE (scipy on the 32 enumerated states),
    log Z within 0.03 of the exact value at the fitted w (6 seeds of the same fit: |Δw| <=
    0.006, |Δ log Z| <= 0.005)."""
    from scipy.optimize import minimize_scalar

    states = np.array(list(np.ndindex(*(2,) * 5)), float)
    stat = states[:, :3].sum(1) * states[:, 3:].sum(1)

    def log_z(w):
        return float(np.logaddexp.reduce(w * stat + 5 * math.log(0.5)))

    x = states[np.random.default_rng(0).choice(32, 1000, p=np.exp(0.4 * stat - log_z(0.4) + 5 * math.log(0.5)))]
    a, b = x[:, :3], x[:, 3:]
    w_mle = minimize_scalar(lambda w: log_z(w) - np.mean(w * a.sum(1) * b.sum(1))).x

    def two_sites(batch):
        w = fw.param("w", fw.array(0.0))
        with fw.plate("data", batch["a"].shape[0]):
            a = fw.sample("a", fw.dist.Bernoulli(0.5).expand([3]).to_event(1), obs=batch["a"])
            b = fw.sample("b", fw.dist.Bernoulli(0.5).expand([2]).to_event(1), obs=batch["b"])
            ebm_ppl.factor("ab", w * a.sum(-1) * b.sum(-1))

    data = {"a": fw.array(a), "b": fw.array(b)}
    noise = {"a": fw.dist.Bernoulli(probs=fw.array(a.mean(0))), "b": fw.dist.Bernoulli(probs=fw.array(b.mean(0)))}
    with pytest.raises(ValueError, match="2 observed sites.*dict"):
        ebm_ppl.fit_unnormalized(two_sites, data, estimator=ebm_ppl.NCE(noise=noise["a"]), num_steps=1,
                                 progress_bar=False)
    result = ebm_ppl.fit_unnormalized(two_sites, data, estimator=ebm_ppl.NCE(noise=noise, noise_ratio=4),
                                      optimizer=fw.adam(0.05), num_steps=100, progress_bar=False)
    w = float(fw.to_numpy(result.params["w"]))
    assert abs(w - w_mle) < 0.03
    assert abs(result.history["log_z"][-1] - log_z(w)) < 0.03


# ---- resume, checkpoints, minibatches, monitor, trainer

@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_resume_continues_exactly(fw, tmp_path):
    """37 + 43 updates, resumed from a checkpoint saved and loaded in between (mid-epoch),
    == one fit of 80, bit for bit (history, log Z, parameters): the noise comes from the
    update's key."""
    kw = dict(estimator=ebm_ppl.NCE(noise_ratio=1.5), optimizer=fw.adam(0.05), progress_bar=False, rng_seed=3,
              batch_size=150)
    first = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_SMALL), num_steps=37, **kw)
    ebm_ppl.save(first, tmp_path / "first.ebm")
    loaded = ebm_ppl.load(tmp_path / "first.ebm")
    assert isinstance(loaded.state.estimator_state, ebm_ppl.estimators.NCEState)
    resumed = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_SMALL), num_steps=43, resume=loaded, **kw)
    fw.clear()
    if fw.name == "pyro":
        kw["optimizer"] = fw.adam(0.05)
    whole = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_SMALL), num_steps=80, **kw)
    assert set(whole.history) == set(resumed.history)
    for name, values in whole.history.items():
        np.testing.assert_array_equal(resumed.history[name], values[37:], err_msg=name)
    for name in ("J", "h"):
        np.testing.assert_array_equal(fw.to_numpy(resumed.params[name]), fw.to_numpy(whole.params[name]))
    np.testing.assert_array_equal(fw.to_numpy(resumed.state.estimator_state.log_z),
                                  fw.to_numpy(whole.state.estimator_state.log_z))
    assert resumed.state.num_updates == 80


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_given_noise_resumes_in_process_but_is_not_saved(fw, tmp_path):
    noise = _marginal_noise(fw, X_SMALL)
    kw = dict(estimator=ebm_ppl.NCE(noise=noise, noise_ratio=1.5), optimizer=fw.adam(0.05), progress_bar=False,
              batch_size=150)
    first = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_SMALL), num_steps=5, **kw)
    resumed = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_SMALL), num_steps=4, resume=first, **kw)
    fw.clear()
    if fw.name == "pyro":
        kw["optimizer"] = fw.adam(0.05)
    whole = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_SMALL), num_steps=9, **kw)
    np.testing.assert_array_equal(resumed.history["log_z"], whole.history["log_z"][5:])
    for name in ("J", "h"):
        np.testing.assert_array_equal(fw.to_numpy(resumed.params[name]), fw.to_numpy(whole.params[name]))
    with pytest.raises(TypeError, match="noise"):
        ebm_ppl.save(whole, tmp_path / "given.ebm")
    assert not (tmp_path / "given.ebm").exists()
    # checkpoints of such a fit are refused before the first update, not at the first checkpoint
    before = {k: fw.to_numpy(v).copy() for k, v in whole.params.items()}
    with pytest.raises(TypeError, match="checkpoint_path.*noise"):
        ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_SMALL), num_steps=4, resume=whole,
                                 checkpoint_every=2, checkpoint_path=tmp_path / "ckpt.ebm", **kw)
    assert not (tmp_path / "ckpt.ebm").exists()
    for k, v in before.items():
        np.testing.assert_array_equal(fw.to_numpy(whole.params[k]), v)


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_minibatches_monitor_and_trainer(fw):
    """Minibatches with ν · B not an integer (64 · 0.3 = 19.2: 19 noise rows), a Monitor
    recording the exact held-out log-likelihood (no chain diagnostics: no chains), and
    Trainer.run equal to fit_unnormalized."""
    est = ebm_ppl.NCE(noise_ratio=0.3)
    monitor = ebm_ppl.Monitor(every=4, data=fw.array(X_ISING[1000:1200]), exact=True)
    kw = dict(optimizer=fw.adam(0.05), num_steps=8, progress_bar=False)
    fw.clear()
    a = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_SMALL), estimator=est, batch_size=64, monitor=monitor,
                                 **kw)
    ll = a.history["log_likelihood"]
    assert np.isnan(ll[[0, 1, 2, 4, 5, 6]]).all() and np.isfinite(ll[[3, 7]]).all()
    p = _params(fw, a)
    assert ll[7] == pytest.approx(ising_mean_loglik(X_ISING[1000:1200], p["J"], p["h"]), abs=1e-4)
    assert "rhat" not in a.history and a.chains == {}
    fw.clear()
    kw.pop("optimizer")
    b = ebm_ppl.Trainer(ising_model(fw), est, batch_size=64, optimizer=fw.adam(0.05)).run(fw.array(X_SMALL), **kw)
    np.testing.assert_array_equal(a.history["log_z"], b.history["log_z"])
    for name in ("J", "h"):
        np.testing.assert_array_equal(fw.to_numpy(a.params[name]), fw.to_numpy(b.params[name]))


# ---- a binary latent layer summed out

@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_rbm_free_energy_and_marginal_base(fw):
    """With an RBM's hidden layer, NCE's log p̃ of a row is the free energy log Σ_h p̃(v, h)
    and the base-measure noise's log q is that of v alone (h's base summed out)."""
    from ebm_ppl._problem import compile_problem

    r = np.random.default_rng(0)
    W, b, c = r.normal(0, 0.5, (6, 3)), r.normal(0, 0.3, 6), r.normal(0, 0.3, 3)
    x = (r.random((20, 6)) < 0.4).astype(np.float32)
    params = {"W": fw.array(W), "b": fw.array(b), "c": fw.array(c)}
    problem, data = compile_problem(rbm_model(fw, 6, 3), params, fw.array(x), None, (), None)
    params_u = problem.info.unconstrain(params)
    ld, log_q, rows = ebm_ppl.NCE()._log_densities(problem, params_u, {"v": data})
    np.testing.assert_allclose(fw.to_numpy(ld), rbm_log_marginal(x.astype(np.float64), W, b, c), atol=1e-4)
    np.testing.assert_allclose(fw.to_numpy(log_q), np.full(20, 6 * math.log(0.5)), atol=1e-5)
    h_mean = 1 / (1 + np.exp(-(c + x @ W)))
    np.testing.assert_allclose(fw.to_numpy(rows["h"]), h_mean, atol=1e-5)


@pytest.mark.slow
def test_nce_fits_an_rbm_with_its_hidden_layer_summed_out(fw):
    """A 6 x 3 RBM on 3000 exact draws: the NCE fit's exact log-likelihood within 0.02
    nats of scipy's L-BFGS optimum of the exact log-likelihood, log Z within 0.05."""
    from scipy.optimize import minimize

    _, x = small_rbm_truth_and_data()
    W0 = 0.01 * np.random.default_rng(1).normal(size=(6, 3))  # rbm_model's initial weights

    def negll(theta):
        return -small_rbm_mean_loglik(x, theta[:18].reshape(6, 3), theta[18:24], theta[24:])

    best = -minimize(negll, np.concatenate([W0.ravel(), np.zeros(9)]), method="L-BFGS-B").fun
    result = ebm_ppl.fit_unnormalized(rbm_model(fw, 6, 3), fw.array(x), estimator=ebm_ppl.NCE(noise_ratio=8),
                                      optimizer=fw.adam(0.03), num_steps=600, progress_bar=False)
    p = _params(fw, result)
    assert best - small_rbm_mean_loglik(x, p["W"], p["b"], p["c"]) < 0.02
    assert abs(result.history["log_z"][-1] - rbm_exact_log_z(p["W"], p["b"], p["c"])) < 0.05


# ---- refusals: clear errors, nothing changed

def _refused(fw, model, x, exc, match, **kwargs):
    """The call raises ``exc`` matching ``match``; the Pyro param store and the data are as before."""
    data = fw.array(x)
    before, store = fw.to_numpy(data).copy(), _store(fw)
    with pytest.raises(exc, match=match):
        ebm_ppl.fit_unnormalized(model, data, num_steps=2, progress_bar=False, **kwargs)
    np.testing.assert_array_equal(before, fw.to_numpy(data))
    after = _store(fw)
    assert set(after) == set(store)
    for k, v in store.items():
        np.testing.assert_array_equal(v, after[k])


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_refusals_change_nothing(fw):
    ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_SMALL), num_steps=2, progress_bar=False)  # a store to keep

    def continuous_latent(x):
        w = fw.param("w", fw.array(0.1))
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.Bernoulli(0.5).expand([3]).to_event(1), obs=x)
            z = fw.sample("z", fw.dist.Normal(0.0, 1.0))
            ebm_ppl.factor("f", w * z * x.sum(-1))

    def learned_base(x):
        mu = fw.param("mu", fw.array(0.5))
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.Normal(mu, 1.0), obs=x)
            ebm_ppl.energy("q", 0.5 * x**2)

    bits = X_SMALL[:, :3]
    _refused(fw, continuous_latent, bits, NotImplementedError, "latent site.*'z'", estimator=ebm_ppl.NCE())
    _refused(fw, learned_base, np.zeros(10, np.float32), NotImplementedError, "depends on the parameters",
             estimator=ebm_ppl.NCE())
    wrong_shape = fw.dist.Bernoulli(probs=fw.array(np.full(8, 0.5)))
    _refused(fw, ising_model(fw), X_SMALL, ValueError, "noise.*'x'.*shape", estimator=ebm_ppl.NCE(noise=wrong_shape))
    real = fw.dist.Normal(fw.array(np.zeros(9)), 1.0)
    _refused(fw, ising_model(fw), X_SMALL, ValueError, "noise.*'x'.*outside the site's support",
             estimator=ebm_ppl.NCE(noise=real))
    _refused(fw, ising_model(fw), X_SMALL, ValueError, "noise names the sites \\['y'\\]",
             estimator=ebm_ppl.NCE(noise={"y": _marginal_noise(fw, X_SMALL)}))
    other = __import__("ebm_ppl.testing.frameworks", fromlist=["framework"]).framework(
        "numpyro" if fw.name == "pyro" else "pyro")
    _refused(fw, ising_model(fw), X_SMALL, ValueError, "noise for site 'x' cannot be drawn",
             estimator=ebm_ppl.NCE(noise=_marginal_noise(other, X_SMALL)))


def test_covariates_are_refused(fw):
    from models import crf_model, crf_sample, crf_true_theta

    x, y = crf_sample(crf_true_theta(), 50, seed=0)
    with pytest.raises(NotImplementedError, match="covariates.*NCE"):
        ebm_ppl.fit_unnormalized(crf_model(fw), {"x": fw.array(x), "y": fw.array(y)}, covariates=("x",),
                                 estimator=ebm_ppl.NCE(), num_steps=1, progress_bar=False)


# ---- NumPyro devices=

_SHARDED = """
import os, sys, json
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, {here!r})
import numpy as np, jax
import ebm_ppl
from ebm_ppl.testing.frameworks import framework
from models import X_ISING, ising_model
fw = framework("numpyro")
out = {{}}
for ratio in (1.5, 0.25):  # 90 noise rows, split over the 2 devices; 15 rows, not split
    # plain SGD: Adam's first step is lr * g / (|g| + 1e-8), so a gradient that is zero in exact
    # arithmetic (from J = h = 0, at ratio 0.25 a coordinate whose data and noise sums agree)
    # turns the two summation orders' round-off (1e-9) into steps of up to lr
    kw = dict(estimator=ebm_ppl.NCE(noise_ratio=ratio), optimizer=fw.sgd(0.5), num_steps=10, batch_size=60,
              progress_bar=False)
    one = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_ISING[:600]), **kw)
    two = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_ISING[:600]), devices=2, **kw)
    out[str(ratio)] = [max(float(np.abs(np.asarray(one.params[k]) - np.asarray(two.params[k])).max()) for k in "Jh"),
                       float(np.abs(one.history["log_z"] - two.history["log_z"]).max())]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_numpyro_devices_equal_one_device():
    pytest.importorskip("numpyro")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    root = os.path.dirname(HERE)
    env["PYTHONPATH"] = os.pathsep.join([root, os.path.join(root, "backends"), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", _SHARDED.format(here=HERE)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    import json

    for ratio, (params, log_z) in json.loads(run.stdout.strip().splitlines()[-1]).items():
        assert params < 1e-5 and log_z < 1e-4, (ratio, params, log_z)
