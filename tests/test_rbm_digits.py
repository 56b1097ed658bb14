"""Issue 4 acceptance: a 64x16 Bernoulli RBM on binarized digits, exact held-out likelihood."""

import itertools

import numpy as np
import pytest

import ebm_ppl
from models import rbm_model

NUM_HIDDEN = 16


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x = (load_digits().data / 16.0 > 0.5).astype(np.float32)
    train, test = train_test_split(x, test_size=0.2, random_state=0)
    return train, test


def exact_mean_loglik(x, W, b, c):
    """Exact mean log p(v): hidden units summed analytically, log Z by enumerating 2^16 h."""
    W, b, c = (np.asarray(a, np.float64) for a in (W, b, c))
    x = np.asarray(x, np.float64)
    log_pv = x @ b + np.logaddexp(0, x @ W + c).sum(-1)
    hs = np.array(list(itertools.product([0, 1], repeat=W.shape[1])), np.float64)
    log_z = np.logaddexp.reduce(hs @ c + np.logaddexp(0, hs @ W.T + b).sum(-1))
    return float(np.mean(log_pv) - log_z)


@pytest.fixture(scope="module")
def sklearn_best(digits):
    """scikit-learn's BernoulliRBM, best held-out exact log-likelihood of lr 0.05 and 0.01."""
    from sklearn.neural_network import BernoulliRBM

    train, test = digits
    scores = []
    for lr in (0.05, 0.01):
        rbm = BernoulliRBM(n_components=NUM_HIDDEN, learning_rate=lr, batch_size=10, n_iter=100, random_state=0)
        rbm.fit(train)
        scores.append(exact_mean_loglik(test, rbm.components_.T, rbm.intercept_visible_, rbm.intercept_hidden_))
    return max(scores)


def _fit(fw, train, sampler):
    return ebm_ppl.fit_unnormalized(
        rbm_model(fw, 64, NUM_HIDDEN), fw.array(train),
        estimator=ebm_ppl.PCD(num_chains=100, num_steps=5), sampler=sampler,
        optimizer=fw.adam_decay(0.03, 0.9993), num_epochs=200, batch_size=100, progress_bar=False,
    )


def _held_out(fw, result, test):
    P = {k: fw.to_numpy(v) for k, v in result.params.items()}
    return exact_mean_loglik(test, P["W"], P["b"], P["c"])


@pytest.mark.slow
def test_rbm_block_gibbs_beats_sklearn(fw, digits, sklearn_best):
    train, test = digits
    result = _fit(fw, train, ebm_ppl.samplers.BlockGibbs(["h", "v"]))
    ll = _held_out(fw, result, test)
    print(f"{fw.name}: BlockGibbs held-out {ll:.3f}, scikit-learn best {sklearn_best:.3f}")
    assert ll > -19.1
    assert ll >= sklearn_best + 0.5


@pytest.mark.slow
def test_rbm_auto_beats_sklearn(fw, digits, sklearn_best):
    train, test = digits
    result = _fit(fw, train, "auto")
    ll = _held_out(fw, result, test)
    print(f"{fw.name}: auto held-out {ll:.3f}, scikit-learn best {sklearn_best:.3f}")
    assert ll >= sklearn_best + 0.5


@pytest.mark.slow
def test_monitor_records_exact_held_out_and_rhat(fw, digits):
    """Issue 13: the digits RBM monitored every 10 epochs by ``Monitor(exact=True)`` (the
    visible layer summed out analytically, 2^16 hidden states enumerated) and the chains'
    split R-hat; the recorded values equal the exact held-out log-likelihood computed by
    hand and ``ebm_ppl.log_likelihood`` at the same parameters."""
    train, test = digits
    per_epoch = len(train) // 100
    seen = {}

    def keep(step, params, chains):
        seen[step] = {k: fw.to_numpy(v).astype(np.float64) for k, v in params.items()}
        return {}

    monitor = ebm_ppl.Monitor(every=10 * per_epoch, data=fw.array(test), exact=True, diagnostics=True,
                              diagnostic_steps=30).add(keep)
    result = ebm_ppl.fit_unnormalized(
        rbm_model(fw, 64, NUM_HIDDEN), fw.array(train), estimator=ebm_ppl.PCD(num_chains=100, num_steps=5),
        optimizer=fw.adam_decay(0.03, 0.9993), num_epochs=30, batch_size=100, progress_bar=False, monitor=monitor,
    )
    h = result.history
    at = np.arange(1, 4) * 10 * per_epoch - 1
    print(f"{fw.name}: held-out every 10 epochs {h['log_likelihood'][at]}, R-hat {h['rhat'][at]}")
    assert np.all(np.isfinite(h["log_likelihood"][at])) and np.isnan(h["log_likelihood"]).sum() == len(at) * (10 * per_epoch - 1)
    assert np.all(h["rhat"][at] > 0.9) and np.all(h["rhat"][at] < 2.0)
    assert h["log_likelihood"][at[-1]] > h["log_likelihood"][at[0]]  # the fit improves
    for i in at:  # every recorded value is the exact held-out log-likelihood at those parameters
        P = seen[int(i) + 1]
        np.testing.assert_allclose(h["log_likelihood"][i], exact_mean_loglik(test, P["W"], P["b"], P["c"]), atol=2e-3)
    step = int(at[-1] + 1)
    P = seen[step]
    hs = np.array(list(itertools.product([0, 1], repeat=NUM_HIDDEN)), np.float64)
    log_z = np.logaddexp.reduce(hs @ P["c"] + np.logaddexp(0, hs @ P["W"].T + P["b"]).sum(-1)) + 80 * np.log(0.5)
    ll = ebm_ppl.log_likelihood(rbm_model(fw, 64, NUM_HIDDEN), {k: fw.array(v) for k, v in P.items()},
                                fw.array(test), log_z=float(log_z))
    np.testing.assert_allclose(h["log_likelihood"][step - 1], np.mean(fw.to_numpy(ll)), atol=2e-3)
