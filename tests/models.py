"""Models and helpers shared by the test modules (written once against the ``fw`` facade)
and their exact answers. Test modules import from here, never from each other; the
reference problems live in :mod:`ebm_ppl.testing`, which the benchmarks use too."""

import itertools
import warnings

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


# ---- the fixed 3x3 Ising parameters of the evaluation tests (as test_evaluation.py draws them)
_rng_eval = np.random.default_rng(7)
J_EVAL = _rng_eval.uniform(-0.6, 0.6, 12)
H_EVAL = _rng_eval.uniform(-0.3, 0.3, 9)


def exact_ising_log_z(J, h):
    """log Z of the 3x3 Ising model by its 512 states, the Bernoulli(0.5) base included."""
    return float(np.logaddexp.reduce(ising_log_unnorm(STATES, J, h) + 9 * np.log(0.5)))


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


def tilted_normal_model(fw):
    """x ~ Normal(0, 1) tilted by exp(-prec x**2 / 2): a continuous site, so log Z cannot be
    enumerated (AIS can: the base is proper); exactly p(x) = Normal(x; 0, 1 / sqrt(1 + prec))."""
    def tilted(x):
        prec = fw.param("prec", fw.array(1.0), constraint=fw.constraints.positive)
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.Normal(0.0, 1.0), obs=x)
            ebm_ppl.energy("quadratic", 0.5 * prec * x**2)

    return tilted


def tilted_normal_mean_loglik(x, prec):
    """The exact mean log-likelihood of ``x`` under :func:`tilted_normal_model` at ``prec``."""
    x = np.asarray(x, np.float64)
    return float(np.mean(-0.5 * np.log(2 * np.pi) + 0.5 * np.log1p(prec) - 0.5 * (1 + prec) * x**2))



# ---- RBMs
def rbm_model(fw, num_visible, num_hidden, seed=1):
    """A Bernoulli RBM with small random weights and zero biases (see :func:`rbm_model_at`)."""
    W_init = 0.01 * np.random.default_rng(seed).normal(size=(num_visible, num_hidden))
    return rbm_model_at(fw, W_init, np.zeros(num_visible), np.zeros(num_hidden))


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



def small_rbm_truth_and_data(num_rows=3000):
    """A 6 x 3 Bernoulli RBM ``(W, b, c)`` and ``num_rows`` exact draws of its visible layer
    (float32): the data of the latent-RBM accuracy tests."""
    vs = np.array(list(itertools.product([0, 1], repeat=6)), float)
    r = np.random.default_rng(0)
    W, b, c = r.normal(0, 1.0, (6, 3)), r.normal(0, 0.5, 6), r.normal(0, 0.5, 3)
    lpv = vs @ b + np.logaddexp(0, vs @ W + c).sum(-1)
    x = vs[np.random.default_rng(2).choice(len(vs), num_rows, p=np.exp(lpv - np.logaddexp.reduce(lpv)))]
    return (W, b, c), x.astype(np.float32)


def small_rbm_mean_loglik(x, W, b, c):
    """Exact mean log-likelihood of binary rows ``x`` under an RBM whose visible states can be
    enumerated (the hidden layer summed out analytically)."""
    num_visible = W.shape[0]
    vs = np.array(list(itertools.product([0, 1], repeat=num_visible)), float)
    lpv = vs @ b + np.logaddexp(0, vs @ W + c).sum(-1)
    idx = (x @ (2 ** np.arange(num_visible)[::-1])).astype(int)
    return float(np.mean(lpv[idx]) - np.logaddexp.reduce(lpv))



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


# A linear-chain CRF: 4 binary labels y, 5 continuous inputs x (a covariate, not modelled).
# log p~(y | x) = sum_j y_j (x W + b)_j + sum_j P_j y_j y_{j+1}; features phi(y, x) are linear
# in (W, b, P), so the exact conditional log-likelihood is concave and is computed by
# enumerating the 16 label states of each example.
CRF_LABELS, CRF_INPUTS = 4, 5
CRF_STATES = np.array(list(itertools.product([0, 1], repeat=CRF_LABELS)), dtype=np.float64)  # (16, 4)


def crf_model(fw):
    def crf(batch):
        W = fw.param("W", fw.zeros(CRF_INPUTS, CRF_LABELS))
        b = fw.param("b", fw.zeros(CRF_LABELS))
        P = fw.param("P", fw.zeros(CRF_LABELS - 1))
        x = batch["x"]
        with fw.plate("data", x.shape[0]):
            y = fw.sample("y", fw.dist.Bernoulli(0.5).expand([CRF_LABELS]).to_event(1), obs=batch["y"])
            ebm_ppl.factor("crf", (y * (x @ W + b)).sum(-1) + (y[..., :-1] * y[..., 1:] * P).sum(-1))

    return crf


def crf_features(y, x):
    """phi(y, x) for rows of y (..., 4) and x (..., 5): (..., 27) = [x (x) y, y, y_j y_{j+1}]."""
    y = np.broadcast_to(y, x.shape[:-1] + y.shape[-1:])
    outer = (x[..., :, None] * y[..., None, :]).reshape(y.shape[:-1] + (-1,))
    return np.concatenate([outer, y, y[..., :-1] * y[..., 1:]], axis=-1)


def crf_pack(W, b, P):
    return np.concatenate([np.ravel(W), np.ravel(b), np.ravel(P)])


def crf_unpack(theta):
    n = CRF_INPUTS * CRF_LABELS
    return theta[:n].reshape(CRF_INPUTS, CRF_LABELS), theta[n:n + CRF_LABELS], theta[n + CRF_LABELS:]


def crf_cll(x, y, theta):
    """Per-example exact conditional log-likelihood log p(y_i | x_i) (numpy, float64)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    score = crf_features(y, x) @ theta
    all_scores = crf_features(CRF_STATES[None], np.broadcast_to(x[:, None], (len(x), 16, CRF_INPUTS))) @ theta
    m = all_scores.max(1)
    return score - (m + np.log(np.exp(all_scores - m[:, None]).sum(1)))


def crf_sample(theta, n, seed):
    """n examples (x, y): x ~ N(0, I_5), y ~ p(y | x; theta) exactly."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, CRF_INPUTS))
    s = crf_features(CRF_STATES[None], np.broadcast_to(x[:, None], (n, 16, CRF_INPUTS))) @ theta
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    idx = (rng.random((n, 1)) < p.cumsum(1)).argmax(1)
    return x, CRF_STATES[idx]


def crf_true_theta(seed=0):
    rng = np.random.default_rng(seed)
    return crf_pack(0.8 * rng.standard_normal((CRF_INPUTS, CRF_LABELS)), 0.3 * rng.standard_normal(CRF_LABELS),
                    np.array([1.0, -1.0, 0.5]))


def crf_mle(x, y, num_iters=500):
    """The exact conditional MLE (L-BFGS on the enumerated conditional log-likelihood)."""
    from scipy.optimize import minimize

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    phi_data = crf_features(y, x).mean(0)
    phi_all = crf_features(CRF_STATES[None], np.broadcast_to(x[:, None], (len(x), 16, CRF_INPUTS)))

    def f(theta):
        s = phi_all @ theta
        m = s.max(1, keepdims=True)
        w = np.exp(s - m)
        log_z = (m[:, 0] + np.log(w.sum(1)))
        w /= w.sum(1, keepdims=True)
        expected = (w[..., None] * phi_all).sum(1).mean(0)
        return -(phi_data @ theta - log_z.mean()), -(phi_data - expected)

    out = minimize(f, np.zeros(phi_data.shape[0]), jac=True, method="L-BFGS-B",
                   options={"maxiter": num_iters, "gtol": 1e-10, "ftol": 1e-14})
    return out.x


# 5 spins, fully connected: 10 couplings, enumerable (32 states)
PAIRS5 = list(itertools.combinations(range(5), 2))
STATES5 = np.array(list(itertools.product([0, 1], repeat=5)), dtype=np.float64)  # (32, 5)


def _pair_feats5(x):
    s = 2 * np.asarray(x, dtype=np.float64) - 1
    return np.stack([s[:, i] * s[:, k] for i, k in PAIRS5], axis=1)  # (n, 10)


def ising5_model(fw, lam=None):
    """Fully connected 5-spin Ising model, couplings ``J`` only; with ``lam`` an L2 penalty
    -lam/2 ||J||² as a parameter-only factor outside the data plate (a Gaussian log prior)."""
    I5 = [p[0] for p in PAIRS5]
    K5 = [p[1] for p in PAIRS5]

    def ising5(x):
        J = fw.param("J", fw.zeros(10))
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.Bernoulli(0.5).expand([5]).to_event(1), obs=x)
            s = 2 * x - 1
            ebm_ppl.factor("pairs", (s[..., I5] * s[..., K5] * J).sum(-1))
        if lam is not None:
            fw.factor("l2", -0.5 * lam * (J ** 2).sum())

    return ising5


def ising5_sample(J, n, seed):
    logits = _pair_feats5(STATES5) @ J
    p = np.exp(logits - np.logaddexp.reduce(logits))
    return STATES5[np.random.default_rng(seed).choice(len(STATES5), size=n, p=p)].astype(np.float32)


def ising5_map(x, lam, num_iters=100):
    """Exact MAP of Σᵢ log p(xᵢ | J) - lam/2 ||J||² (penalty once per data set), by Newton."""
    feats = _pair_feats5(STATES5)
    n = len(x)
    target = _pair_feats5(x).sum(0)
    J = np.zeros(10)
    for _ in range(num_iters):
        logits = feats @ J
        p = np.exp(logits - np.logaddexp.reduce(logits))
        mean = p @ feats
        cov = (feats * p[:, None]).T @ feats - np.outer(mean, mean)
        grad = target - n * mean - lam * J
        step = np.linalg.solve(n * cov + lam * np.eye(10), grad)
        J = J + step
        if np.abs(step).max() < 1e-12:
            break
    return J


def neural_energy_model(backend, form, hidden=32, seed=1):
    """A 2-D neural energy E(x) = MLP(x) + 0.05 |x|² (the quadratic keeps it normalizable),
    written with a module of the framework: ``form`` is ``"pyromodule"``, ``"module"``
    (``pyro.module``), ``"module_update"`` (``update_module_params=True``), ``"flax"`` or
    ``"equinox"``. Returns ``(model, module)`` (the module: the Pyro network, else None)."""
    if backend == "pyro":
        import torch
        import pyro
        import pyro.distributions as dist
        from pyro.nn import PyroModule
        from torch import nn

        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                            nn.Linear(hidden, 1))
        if form == "pyromodule":
            mod = PyroModule[nn.Sequential](PyroModule[nn.Linear](2, hidden), PyroModule[nn.Tanh](),
                                            PyroModule[nn.Linear](hidden, hidden), PyroModule[nn.Tanh](),
                                            PyroModule[nn.Linear](hidden, 1))
            mod.load_state_dict(net.state_dict())
            get = lambda: mod  # noqa: E731
        else:
            mod = net
            get = lambda: pyro.module("net", mod, update_module_params=form == "module_update")  # noqa: E731

        def model(x):
            m = get()
            with pyro.plate("data", x.shape[0]):
                x = pyro.sample("x", dist.ImproperUniform(dist.constraints.real, (), (2,)), obs=x)
                ebm_ppl.energy("e", m(x).squeeze(-1) + 0.05 * (x ** 2).sum(-1))

        return model, mod
    import jax
    import numpyro
    import numpyro.distributions as dist
    from numpyro.contrib.module import eqx_module, flax_module

    if form == "flax":
        import flax.linen as fnn

        class Net(fnn.Module):
            @fnn.compact
            def __call__(self, x):
                x = fnn.tanh(fnn.Dense(hidden)(x))
                return fnn.Dense(1)(fnn.tanh(fnn.Dense(hidden)(x)))

        def net_fn():
            return flax_module("net", Net(), input_shape=(1, 2))
    else:
        import equinox as eqx

        mlp = eqx.nn.MLP(2, 1, hidden, 2, activation=jax.nn.tanh, key=jax.random.PRNGKey(seed))

        def net_fn():
            return jax.vmap(eqx_module("net", mlp))

    def model(x):
        net = net_fn()
        with numpyro.plate("data", x.shape[0]):
            x = numpyro.sample("x", dist.ImproperUniform(dist.constraints.real, (), (2,)), obs=x)
            ebm_ppl.energy("e", net(x).squeeze(-1) + 0.05 * (x ** 2).sum(-1))

    return model, None


def two_gaussians(n, seed):
    """A 2-D mixture of two Gaussians and its exact log density."""
    rng = np.random.default_rng(seed)
    means = np.array([[-1.5, 0.0], [1.5, 0.5]])
    z = rng.integers(2, size=n)
    return (means[z] + 0.6 * rng.standard_normal((n, 2))).astype(np.float32)


def two_gaussians_log_density(x):
    means = np.array([[-1.5, 0.0], [1.5, 0.5]])
    d = ((np.asarray(x, np.float64)[:, None, :] - means) ** 2).sum(-1)
    return np.logaddexp.reduce(-d / (2 * 0.36), axis=1) - np.log(2 * 2 * np.pi * 0.36)


def run(fn, *args, **kwargs):
    """Call ``fn`` recording EstimateWarnings (other warnings still raise)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error")
        warnings.simplefilter("always", ebm_ppl.EstimateWarning)
        out = fn(*args, **kwargs)
    return out, [w for w in caught if issubclass(w.category, ebm_ppl.EstimateWarning)]



# ---- pseudo-likelihood and ratio matching: exact objectives in numpy (ebm_ppl.testing.coordinates)
from ebm_ppl.testing.coordinates import (  # noqa: E402,F401
    flip_objective, hidden_permutation_diff, ising_flip_features, lbfgs, rbm_flip_objective, rbm_penalized_model)
