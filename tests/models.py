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
