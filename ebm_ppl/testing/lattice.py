"""A 4x4 Ising lattice (2^16 states) with strong couplings (0.9) and unequal mode weights, and its
exact MLE by enumeration: a problem where PCD's chains do not mix between the two modes."""

import itertools

import numpy as np

import ebm_ppl

SIDE = 4
D = SIDE * SIDE
EDGES = [(SIDE * r + c, SIDE * r + c + 1) for r in range(SIDE) for c in range(SIDE - 1)] + [
    (SIDE * r + c, SIDE * r + c + SIDE) for r in range(SIDE - 1) for c in range(SIDE)
]
I = [e[0] for e in EDGES]
K = [e[1] for e in EDGES]
J_TRUE = np.full(len(EDGES), 0.9)  # strong: Gibbs sweeps rarely cross between the two modes
H_TRUE = np.full(D, 0.05)  # the all-up mode carries about 4/5 of the mass


def lattice_model(fw):
    def lattice(x):
        J = fw.param("J", fw.zeros(len(EDGES)))
        h = fw.param("h", fw.zeros(D))
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.Bernoulli(0.5).expand([D]).to_event(1), obs=x)
            s = 2 * x - 1
            ebm_ppl.factor("pairs", (s[..., I] * s[..., K] * J).sum(-1) + (s * h).sum(-1))

    return lattice


_STATES = None


def states():
    global _STATES
    if _STATES is None:
        _STATES = np.array(list(itertools.product([0, 1], repeat=D)), dtype=np.float64)
    return _STATES


def features(x):
    s = 2 * np.asarray(x, np.float64) - 1
    return np.concatenate([s[:, I] * s[:, K], s], axis=1)


def mean_loglik(x, J, h):
    theta = np.concatenate([J, h])
    log_z = np.logaddexp.reduce(features(states()) @ theta)
    return float(np.mean(features(x) @ theta) - log_z)


def sample(n, seed, J=J_TRUE, h=H_TRUE):
    logits = features(states()) @ np.concatenate([J, h])
    p = np.exp(logits - np.logaddexp.reduce(logits))
    idx = np.random.default_rng(seed).choice(len(p), size=n, p=p)
    return states()[idx].astype(np.float32)


def mle(x, num_iters=100):
    """Exact MLE by Newton's method on the exponential family (damped, convex)."""
    F = features(states())
    target = features(x).mean(0)
    theta = np.zeros(F.shape[1])

    def objective(t):
        return target @ t - np.logaddexp.reduce(F @ t)

    for _ in range(num_iters):
        logits = F @ theta
        p = np.exp(logits - np.logaddexp.reduce(logits))
        mean = p @ F
        cov = (F * p[:, None]).T @ F - np.outer(mean, mean)
        step = np.linalg.solve(cov + 1e-9 * np.eye(len(theta)), target - mean)
        scale, now = 1.0, objective(theta)
        while objective(theta + scale * step) < now and scale > 1e-6:  # backtracking
            scale /= 2
        theta = theta + scale * step
        if np.abs(target - mean).max() < 1e-10:
            break
    return theta[: len(EDGES)], theta[len(EDGES):]
