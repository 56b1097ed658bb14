"""A 4-D Gaussian energy with a learned mean and lower-Cholesky precision, and data from a
fixed non-diagonal Gaussian: the reference problem of score matching (issue 22).

log p̃(x) = -½ (x - μ)ᵀ L Lᵀ (x - μ), μ and L (``constraints.lower_cholesky``) parameters,
x an ``ImproperUniform`` real vector. Score matching over the Gaussian family recovers the
first two moments of what it is fitted to: exact and sliced score matching the sample mean
and the inverse sample covariance S⁻¹ (S with 1/N), denoising score matching with noise σ the
data convolved with N(0, σ²I), so (S + σ²I)⁻¹.
"""

import numpy as np

import ebm_ppl

_rng = np.random.default_rng(0)
_A = _rng.normal(size=(4, 4)) * 0.5 + np.eye(4)
MEAN_TRUE = np.array([1.0, -0.5, 0.3, 2.0])
X4 = _rng.multivariate_normal(MEAN_TRUE, _A @ _A.T, size=3000)  # (3000, 4)
X_MEAN, X_COV = X4.mean(0), np.cov(X4.T, bias=True)

_MODELS = {}


def gaussian4_model(fw, dim=4):
    """The Gaussian energy, one model object per backend (NumPyro keeps a compiled update per
    model object; the initial values are made afresh at every run, so Pyro may share it too)."""
    if (fw.name, dim) not in _MODELS:
        def gaussian4(x):
            mu = fw.param("mu", fw.zeros(dim))
            L = fw.param("L", fw.array(np.eye(dim)), constraint=fw.constraints.lower_cholesky)
            with fw.plate("data", x.shape[0]):
                x = fw.sample("x", fw.dist.ImproperUniform(fw.constraints.real_vector, (), (dim,)), obs=x)
                z = (x - mu) @ L
                ebm_ppl.factor("quadratic", -0.5 * (z**2).sum(-1))

        _MODELS[fw.name, dim] = gaussian4
    return _MODELS[fw.name, dim]


def score_matching_optimum(x, noise_scale=0.0):
    """(mean, precision) that score matching reaches on ``x`` (denoising: ``noise_scale`` σ)."""
    x = np.asarray(x, np.float64)
    cov = np.cov(x.T, bias=True) + noise_scale**2 * np.eye(x.shape[1])
    return x.mean(0), np.linalg.inv(cov)


def relative_error(a, b):
    """‖a − b‖ / ‖b‖ (Frobenius for matrices)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
