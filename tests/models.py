"""Test models written once against the ``fw`` facade, and their exact answers."""

import itertools

import numpy as np

import ebm_ppl

# 3x3 grid: 12 edges
EDGES = [(3 * r + c, 3 * r + c + 1) for r in range(3) for c in range(2)] + [
    (3 * r + c, 3 * r + c + 3) for r in range(2) for c in range(3)
]
I = [e[0] for e in EDGES]
K = [e[1] for e in EDGES]
STATES = np.array(list(itertools.product([0, 1], repeat=9)), dtype=np.float64)  # (512, 9)


def ising_model(fw, J0=None, h0=None):
    J0 = fw.zeros(12) if J0 is None else fw.array(J0)
    h0 = fw.zeros(9) if h0 is None else fw.array(h0)

    def ising(x):
        J = fw.param("J", J0)
        h = fw.param("h", h0)
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.Bernoulli(0.5).expand([9]).to_event(1), obs=x)
            s = 2 * x - 1
            ebm_ppl.factor("pairs", (s[..., I] * s[..., K] * J).sum(-1) + (s * h).sum(-1))

    return ising


def ising_log_unnorm(states, J, h):
    s = 2 * states - 1
    return (s[:, I] * s[:, K] * J).sum(-1) + (s * h).sum(-1)


def ising_mean_loglik(x, J, h):
    """Exact mean log-likelihood (Bernoulli(0.5) base measure included)."""
    base = 9 * np.log(0.5)
    lz = np.logaddexp.reduce(ising_log_unnorm(STATES, J, h) + base)
    return float(np.mean(ising_log_unnorm(x, J, h) + base) - lz)


def ising_sample(J, h, n, seed):
    p = np.exp(ising_log_unnorm(STATES, J, h) - np.logaddexp.reduce(ising_log_unnorm(STATES, J, h)))
    idx = np.random.default_rng(seed).choice(len(STATES), size=n, p=p)
    return STATES[idx].astype(np.float32)


def ising_mle(x, num_iters=200):
    """Exact MLE by Newton's method on the (convex) exponential family."""
    s = 2 * STATES - 1
    feats = np.concatenate([s[:, I] * s[:, K], s], axis=1)  # (512, 21)
    sx = 2 * x.astype(np.float64) - 1
    target = np.concatenate([sx[:, I] * sx[:, K], sx], axis=1).mean(0)
    theta = np.zeros(21)
    for _ in range(num_iters):
        logits = feats @ theta
        p = np.exp(logits - np.logaddexp.reduce(logits))
        mean = p @ feats
        cov = (feats * p[:, None]).T @ feats - np.outer(mean, mean)
        step = np.linalg.solve(cov + 1e-10 * np.eye(21), target - mean)
        theta = theta + step
        if np.abs(step).max() < 1e-12:
            break
    return theta[:12], theta[12:]


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
