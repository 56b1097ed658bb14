"""The 3x3 Ising model written once against the ``fw`` facade, and its exact answers."""

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


_NUMPYRO_MODELS = {}


def ising_model(fw, J0=None, h0=None):
    """The 3x3 Ising model. NumPyro: one model object per initial value, so that every
    test fitting it reuses one compiled update (fit_unnormalized keeps compiled updates by
    model identity); Pyro: a new model each call (``pyro.param`` keeps its initial tensor
    as the parameter's storage, so a fit would change a shared initial value)."""
    if fw.name != "numpyro":
        return _ising_model(fw, J0, h0)
    key = tuple(None if a is None else np.asarray(a, np.float32).tobytes() for a in (J0, h0))
    if key not in _NUMPYRO_MODELS:
        _NUMPYRO_MODELS[key] = _ising_model(fw, J0, h0)
    return _NUMPYRO_MODELS[key]


def _ising_model(fw, J0=None, h0=None):
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
