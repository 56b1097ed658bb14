"""Conditional models (``covariates=``): a chain CRF p(y | x) with 4 binary labels and 5
continuous inputs, checked against its exact conditional likelihood (16 label states per
example) and the exact conditional MLE, on both backends."""

import numpy as np
import pytest

import ebm_ppl
from models import (CRF_INPUTS, CRF_LABELS, CRF_STATES, crf_cll, crf_features, crf_mle, crf_model, crf_pack, crf_sample,
                    crf_true_theta)

THETA = crf_true_theta()
X, Y = crf_sample(THETA, 2500, seed=1)  # 2000 train, 500 test


def _data(fw, rows):
    return {"x": fw.array(X[rows]), "y": fw.array(Y[rows])}


def _theta(fw, params):
    p = {k: fw.to_numpy(v) for k, v in params.items()}
    return crf_pack(p["W"], p["b"], p["P"])


def _random_params(fw, seed=0):
    rng = np.random.default_rng(seed)
    return {"W": fw.array(rng.standard_normal((CRF_INPUTS, CRF_LABELS))), "b": fw.array(rng.standard_normal(CRF_LABELS)),
            "P": fw.array(rng.standard_normal(CRF_LABELS - 1))}


def test_log_likelihood_and_log_partition_are_exact_per_example(fw):
    params = _random_params(fw)
    data = _data(fw, slice(0, 50))
    theta = _theta(fw, params)
    ll = fw.to_numpy(ebm_ppl.log_likelihood(crf_model(fw), params, data, covariates=("x",)))
    np.testing.assert_allclose(ll, crf_cll(X[:50], Y[:50], theta), rtol=1e-5, atol=1e-4)
    lz = ebm_ppl.log_partition(crf_model(fw), params, data, covariates="x")
    # log Z(x_i) = log p~(y_i | x_i) - log p(y_i | x_i), the Bernoulli(0.5) base of the 4 labels included
    log_p_tilde = crf_features(Y[:50], X[:50]) @ theta + CRF_LABELS * np.log(0.5)
    np.testing.assert_allclose(lz.estimate, log_p_tilde - crf_cll(X[:50], Y[:50], theta), rtol=1e-5, atol=1e-4)
    assert lz.stderr == 0.0 and np.ptp(lz.estimate) > 0.1  # Z depends on the inputs


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_fit_smoke_cd_and_pcd(fw):
    """A short fit runs with each estimator and moves the test CLL up from the zero model's."""
    train, test = _data(fw, slice(0, 400)), slice(2000, 2500)
    base = crf_cll(X[test], Y[test], np.zeros_like(THETA)).mean()
    for est in (ebm_ppl.CD(1), ebm_ppl.PCD(num_steps=1)):
        fw.clear()
        r = ebm_ppl.fit_unnormalized(crf_model(fw), train, est, optimizer=fw.adam(0.05), num_steps=60,
                                     batch_size=100, covariates=("x",), progress_bar=False)
        assert crf_cll(X[test], Y[test], _theta(fw, r.params)).mean() > base + 0.2
        assert set(r.chains) == {"y"}
    # PCD keeps one chain per training example
    assert r.chains["y"].shape == (400, CRF_LABELS)
    # a monitor evaluates the exact conditional log-likelihood of held-out examples
    fw.clear()
    held_out = _data(fw, test)
    r = ebm_ppl.fit_unnormalized(crf_model(fw), train, ebm_ppl.CD(1), optimizer=fw.adam(0.05), num_steps=8,
                                 batch_size=100, covariates=("x",), progress_bar=False,
                                 monitor=ebm_ppl.Monitor(every=4, data=held_out, exact=True, diagnostics=False))
    want = crf_cll(X[test], Y[test], _theta(fw, r.params)).mean()
    np.testing.assert_allclose(r.history["log_likelihood"][-1], want, rtol=1e-5, atol=1e-4)


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_pcd_resume_equals_one_call(fw, tmp_path):
    kw = dict(estimator=ebm_ppl.PCD(num_steps=1), batch_size=50, covariates=("x",), progress_bar=False, rng_seed=2)
    data, model, opt = _data(fw, slice(0, 200)), crf_model(fw), fw.adam(0.05)  # the same objects: compiled once
    first = ebm_ppl.fit_unnormalized(model, data, optimizer=opt, num_steps=7, **kw)
    ebm_ppl.save(first, tmp_path / "crf")  # through a checkpoint file
    resumed = ebm_ppl.fit_unnormalized(model, data, optimizer=opt, num_steps=9, resume=ebm_ppl.load(tmp_path / "crf"),
                                       **kw)
    fw.clear()
    whole = ebm_ppl.fit_unnormalized(model, data, optimizer=opt, num_steps=16, **kw)
    np.testing.assert_allclose(resumed.history["loss"], whole.history["loss"][7:], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_theta(fw, resumed.params), _theta(fw, whole.params), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(fw.to_numpy(resumed.chains["y"]), fw.to_numpy(whole.chains["y"]))


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_sample_draws_from_each_examples_conditional(fw):
    params = _random_params(fw, seed=1)
    theta = _theta(fw, params)
    rows = slice(0, 2)
    draws = fw.to_numpy(ebm_ppl.sample(crf_model(fw), params, _data(fw, rows), num_samples=3000, num_chains=100,
                                       num_warmup=50, thinning=2, covariates=("x",))["y"])
    assert draws.shape == (3000, 2, CRF_LABELS)
    for i in range(2):
        p = np.exp(crf_cll(np.repeat(X[i:i + 1], 16, 0), CRF_STATES, theta))
        code = (draws[:, i] * 2 ** np.arange(CRF_LABELS)[::-1]).sum(-1).astype(int)
        freq = np.bincount(code, minlength=16) / len(code)
        # 3000 draws from 100 chains (2 Gibbs sweeps apart): 6 binomial standard errors,
        # doubled for autocorrelation between successive draws of a chain
        se = np.sqrt(p * (1 - p) / len(code))
        assert np.all(np.abs(freq - p) < 12 * se + 1e-3), (freq, p)


def test_bad_covariates_raise_naming_the_leaf(fw):
    data = _data(fw, slice(0, 20))
    with pytest.raises(ValueError, match="'x'"):  # x is neither observed nor a covariate
        ebm_ppl.fit_unnormalized(crf_model(fw), data, num_steps=1, progress_bar=False)
    with pytest.raises(ValueError, match="'z'"):
        ebm_ppl.fit_unnormalized(crf_model(fw), data, num_steps=1, covariates=("x", "z"), progress_bar=False)
    with pytest.raises(ValueError, match="'y'"):  # the obs of a sample site cannot be an input
        ebm_ppl.fit_unnormalized(crf_model(fw), data, num_steps=1, covariates=("x", "y"), progress_bar=False)
    bad_x = X[:20].copy()
    bad_x[3, 1] = np.nan
    with pytest.raises(ValueError, match="'x'.*NaN"):
        ebm_ppl.fit_unnormalized(crf_model(fw), {"x": fw.array(bad_x), "y": data["y"]}, num_steps=1,
                                 covariates=("x",), progress_bar=False)
    with pytest.raises(NotImplementedError, match="PT"):
        ebm_ppl.fit_unnormalized(crf_model(fw), data, ebm_ppl.PT(num_chains=10, num_temperatures=3), num_steps=1,
                                 covariates=("x",), progress_bar=False)
    with pytest.raises(NotImplementedError, match="ais"):
        ebm_ppl.log_partition(crf_model(fw), _random_params(fw), data, method="ais", covariates=("x",))


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["CD", "PCD"])
def test_crf_reaches_the_conditional_mle(fw, estimator):
    """Issue 14, acceptance 1: test conditional log-likelihood within 0.01 nats/example of
    the exact conditional MLE's (2000 train / 500 test, data from known weights).

    Calibration: with rng_seed 0-3 on both backends and both estimators the differences
    measured lay in [-0.002, +0.0025] (the fit's own noise around the MLE after a decaying
    learning rate; on the test set a fit may land above the MLE): 0.01 is 4x the largest."""
    train, test = slice(0, 2000), slice(2000, 2500)
    mle = crf_cll(X[test], Y[test], crf_mle(X[train], Y[train])).mean()
    est = ebm_ppl.CD(1) if estimator == "CD" else ebm_ppl.PCD(num_steps=1)
    r = ebm_ppl.fit_unnormalized(crf_model(fw), _data(fw, train), est, optimizer=fw.adam_decay(0.05, 0.997),
                                 num_steps=1000, batch_size=200, covariates=("x",), progress_bar=False)
    fitted = fw.to_numpy(ebm_ppl.log_likelihood(crf_model(fw), r.params, _data(fw, test), covariates=("x",)))
    np.testing.assert_allclose(fitted, crf_cll(X[test], Y[test], _theta(fw, r.params)), rtol=1e-5, atol=1e-4)
    print(f"{fw.name} {estimator}: MLE test CLL {mle:.4f}, fitted {fitted.mean():.4f}, "
          f"difference {mle - fitted.mean():.4f}")
    assert abs(mle - fitted.mean()) < 0.01
