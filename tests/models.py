"""Models and helpers shared by the test modules (written once against the ``fw`` facade)
and their exact answers. Test modules import from here, never from each other; the
reference problems live in :mod:`ebm_ppl.testing`, which the benchmarks use too."""

import itertools

import numpy as np
import pytest

import ebm_ppl
from ebm_ppl.testing.ising import (EDGES, I, K, STATES, ising_log_unnorm, ising_mean_loglik, ising_mle,  # noqa: F401
                                   ising_model, ising_sample)

# ---- the Ising data set of the accuracy tests (exact MLE by Newton's method)
rng = np.random.default_rng(1234)
J_TRUE = rng.uniform(-0.6, 0.6, 12)
H_TRUE = rng.uniform(-0.3, 0.3, 9)
X_ISING = ising_sample(J_TRUE, H_TRUE, 2000, seed=0)


def _fitted_loglik(fw, result):
    J = fw.to_numpy(result.params["J"]).astype(np.float64)
    h = fw.to_numpy(result.params["h"]).astype(np.float64)
    return ising_mean_loglik(X_ISING, J, h)



def gaussian_model(fw):
    def gaussian(x):
        prec = fw.param("prec", fw.array(1.0), constraint=fw.constraints.positive)
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.ImproperUniform(fw.constraints.real, (), ()), obs=x)
            ebm_ppl.energy("quadratic", 0.5 * prec * x**2)

    return gaussian



# ---- RBMs
def rbm_model(fw, num_visible, num_hidden, seed=1):
    W_init = 0.01 * np.random.default_rng(seed).normal(size=(num_visible, num_hidden))

    def rbm(v):
        W = fw.param("W", fw.array(W_init))
        b = fw.param("b", fw.zeros(num_visible))
        c = fw.param("c", fw.zeros(num_hidden))
        with fw.plate("data", v.shape[0]):
            v = fw.sample("v", fw.dist.Bernoulli(0.5).expand([num_visible]).to_event(1), obs=v)
            h = fw.sample("h", fw.dist.Bernoulli(0.5).expand([num_hidden]).to_event(1))
            ebm_ppl.factor("rbm", ((v @ W) * h).sum(-1) + (v * b).sum(-1) + (h * c).sum(-1))

    return rbm



def rbm_model_at(fw, W, b, c):
    num_visible, num_hidden = W.shape

    def rbm(v):
        W_ = fw.param("W", fw.array(W))
        b_ = fw.param("b", fw.array(b))
        c_ = fw.param("c", fw.array(c))
        with fw.plate("data", v.shape[0]):
            v = fw.sample("v", fw.dist.Bernoulli(0.5).expand([num_visible]).to_event(1), obs=v)
            h = fw.sample("h", fw.dist.Bernoulli(0.5).expand([num_hidden]).to_event(1))
            ebm_ppl.factor("rbm", ((v @ W_) * h).sum(-1) + (v * b_).sum(-1) + (h * c_).sum(-1))

    return rbm



def rbm_params(fw, W, b, c):
    return {"W": fw.array(W), "b": fw.array(b), "c": fw.array(c)}



def random_rbm(num_visible, num_hidden, seed):
    r = np.random.default_rng(seed)
    return (0.3 * r.standard_normal((num_visible, num_hidden)), 0.1 * r.standard_normal(num_visible),
            0.1 * r.standard_normal(num_hidden))



def rbm_exact_log_z(W, b, c):
    """Enumerate the hidden states; sum each visible unit out analytically (softplus)."""
    num_visible, num_hidden = W.shape
    hs = np.array(list(itertools.product([0, 1], repeat=num_hidden)), dtype=np.float64)
    free = hs @ c + np.logaddexp(0.0, b + hs @ W.T).sum(1)
    return (num_visible + num_hidden) * np.log(0.5) + float(np.logaddexp.reduce(free))



def rbm_log_marginal(v, W, b, c):
    """log Σ_h p̃(v, h), base measures included."""
    num_visible, num_hidden = W.shape
    return (num_visible + num_hidden) * np.log(0.5) + v @ b + np.logaddexp(0.0, c + v @ W).sum(1)



# ---- rejected calls change nothing
X_BAD = ising_sample(np.full(12, 0.3), np.zeros(9), 100, seed=4)



def _snapshot(fw, result):
    params = {k: fw.to_numpy(v).copy() for k, v in result.params.items()}
    chains = {k: fw.to_numpy(v).copy() for k, v in result.state.estimator_state.position.items()}
    return params, chains



def _store(fw):
    if fw.name != "pyro":
        return {}
    import pyro

    return {k: v.detach().clone().numpy() for k, v in pyro.get_param_store().items()}



def _rejected(fw, previous, exc, match, data=None, model=None, **kwargs):
    data = fw.array(X_BAD) if data is None else data
    data_before = {k: fw.to_numpy(v).copy() for k, v in data.items()} if isinstance(data, dict) else fw.to_numpy(data).copy()
    before, store_before = _snapshot(fw, previous), _store(fw)
    kwargs.setdefault("num_steps", 2)
    with pytest.raises(exc, match=match):
        ebm_ppl.fit_unnormalized(model or ising_model(fw), data, resume=previous, progress_bar=False, **kwargs)
    after = _snapshot(fw, previous)
    for b, a in zip(before, after):
        for k in b:
            np.testing.assert_array_equal(b[k], a[k])
    for k, v in store_before.items():
        np.testing.assert_array_equal(v, _store(fw)[k])
    if isinstance(data, dict):
        for k in data:
            np.testing.assert_array_equal(data_before[k], fw.to_numpy(data[k]))
    else:
        np.testing.assert_array_equal(data_before, fw.to_numpy(data))
