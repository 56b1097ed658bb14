"""Exact pseudo-likelihood and ratio-matching objectives in numpy (float64), and their optima.

For binary models: the pseudo-likelihood term of coordinate d, −log p(x_d | x_−d) =
softplus(δ_d), and the ratio-matching term σ(δ_d)² (Hyvärinen 2007; Goodfellow, Bengio &
Courville, *Deep Learning*, eq. 18.26), δ_d = log p̃(x with d flipped) − log p̃(x); for the
3x3 Ising model (linear in its parameters) and for an RBM's free energy (its hidden
layer summed out); their minima by scipy's L-BFGS. What tests/test_pseudo_likelihood.py,
tests/test_ratio_matching.py and benchmarks/pl_rm_accuracy.py compare ebm_ppl's
``PseudoLikelihood`` and ``RatioMatching`` with.
"""

import itertools

import numpy as np

import ebm_ppl

from .ising import I, K

__all__ = ["ising_flip_features", "flip_objective", "lbfgs", "rbm_flip_objective", "rbm_penalized_model",
           "hidden_permutation_diff"]


def _coordinate_terms(delta, kind):
    """Per (coordinate, row) loss and its derivative in delta = log p̃(flipped) − log p̃(x):
    pseudo-likelihood −log p(x_d | x_−d) = softplus(delta); ratio matching σ(delta)²."""
    sig = 1.0 / (1.0 + np.exp(-delta))
    if kind == "pl":
        return np.logaddexp(0.0, delta), sig
    return sig**2, 2 * sig**2 * (1 - sig)


def ising_flip_features(x):
    """(9, n, 21): features [s_i s_k, s] of x with spin d flipped minus those of x."""
    def feats(v):
        s = 2 * np.asarray(v, np.float64) - 1
        return np.concatenate([s[:, I] * s[:, K], s], axis=1)

    x = np.asarray(x, np.float64)
    return np.stack([feats(np.where(np.eye(9)[d] > 0, 1 - x, x)) - feats(x) for d in range(9)])


def flip_objective(theta, dF, kind):
    """Mean over rows of Σ_d of the pseudo-likelihood (``kind="pl"``, minus log) or ratio
    matching (``"rm"``) term of a binary model linear in ``theta``, and its gradient; ``dF``
    from :func:`ising_flip_features`."""
    value, slope = _coordinate_terms(dF @ theta, kind)
    return value.sum(0).mean(), (slope[..., None] * dF).sum(0).mean(0)


def lbfgs(fn, theta0, *args):
    """The minimum of ``fn(theta, *args) -> (value, gradient)`` by scipy's L-BFGS-B."""
    from scipy.optimize import minimize

    out = minimize(fn, theta0, args=args, jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "gtol": 1e-12, "ftol": 1e-15})
    return out.x, float(out.fun)


def rbm_flip_objective(theta, x, num_hidden, kind, lam=0.0):
    """:func:`flip_objective` of an RBM's free energy log Σ_h p̃(v, h) (``theta`` = W, b, c
    flattened), plus ``lam / (2 n) ||theta||²``; value and gradient."""
    x = np.asarray(x, np.float64)
    n, nv = x.shape
    W = theta[:nv * num_hidden].reshape(nv, num_hidden)
    b, c = theta[nv * num_hidden:nv * num_hidden + nv], theta[nv * num_hidden + nv:]

    def free(v):
        a = c + v @ W
        return v @ b + np.logaddexp(0.0, a).sum(-1), 1.0 / (1.0 + np.exp(-a))

    f0, s0 = free(x)
    value, gW, gb, gc = 0.0, np.zeros_like(W), np.zeros_like(b), np.zeros_like(c)
    for d in range(nv):
        xf = x.copy()
        xf[:, d] = 1 - xf[:, d]
        f1, s1 = free(xf)
        term, w = _coordinate_terms(f1 - f0, kind)
        value += term.sum()
        gW += xf.T @ (w[:, None] * s1) - x.T @ (w[:, None] * s0)
        gb += w @ (xf - x)
        gc += w @ (s1 - s0)
    grad = np.concatenate([gW.ravel(), gb, gc]) / n + lam / n * theta
    return value / n + 0.5 * lam / n * float(theta @ theta), grad


def rbm_penalized_model(fw, W0, lam):
    """A 6 x 3 RBM with the L2 penalty lam/2 ||θ||² as a parameter-only factor (once per data
    set): with it the maximum pseudo-likelihood is finite (without, a hidden unit's weights
    grow without bound on these data)."""
    def rbm(v):
        W = fw.param("W", fw.array(W0))
        b = fw.param("b", fw.zeros(6))
        c = fw.param("c", fw.zeros(3))
        with fw.plate("data", v.shape[0]):
            v = fw.sample("v", fw.dist.Bernoulli(0.5).expand([6]).to_event(1), obs=v)
            h = fw.sample("h", fw.dist.Bernoulli(0.5).expand([3]).to_event(1))
            ebm_ppl.factor("rbm", ((v @ W) * h).sum(-1) + (v * b).sum(-1) + (h * c).sum(-1))
        fw.factor("l2", -0.5 * lam * ((W**2).sum() + (b**2).sum() + (c**2).sum()))

    return rbm


def hidden_permutation_diff(fitted, theta, num_visible, num_hidden):
    """The largest parameter difference, minimized over permutations of the hidden units
    (the objective does not change when they are relabelled)."""
    def split(t):
        n = num_visible * num_hidden
        return t[:n].reshape(num_visible, num_hidden), t[n:n + num_visible], t[n + num_visible:]

    W, b, c = split(fitted)
    W_, b_, c_ = split(theta)
    return min(max(np.abs(W[:, p] - W_).max(), np.abs(b - b_).max(), np.abs(c[list(p)] - c_).max())
               for p in itertools.permutations(range(num_hidden)))
