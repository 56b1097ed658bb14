"""Samplers leave the right distribution invariant (exact enumeration, closed forms).

Tolerances come from Monte Carlo standard errors: with 20,000 draws from 200 chains
(thinned) the standard error of a spin mean or an edge correlation is below 0.01 for the
couplings used here, so the 0.04 bound sits more than 4 standard errors out (a false
failure rate below ~1e-4 per statistic).
"""

import numpy as np
import pytest

import ebm_ppl
from models import I, K, STATES, ising_log_unnorm, ising_model

rng = np.random.default_rng(42)
J_FIXED = rng.uniform(-0.6, 0.6, 12)
H_FIXED = rng.uniform(-0.3, 0.3, 9)


def exact_ising_moments(J, h):
    logp = ising_log_unnorm(STATES, J, h)
    p = np.exp(logp - np.logaddexp.reduce(logp))
    s = 2 * STATES - 1
    return p @ s, p @ (s[:, I] * s[:, K])


@pytest.mark.parametrize("sampler", [ebm_ppl.samplers.Gibbs(), "auto"], ids=["gibbs", "auto"])
def test_ising_moments(fw, sampler):
    model = ising_model(fw, J_FIXED, H_FIXED)
    params = {"J": fw.array(J_FIXED), "h": fw.array(H_FIXED)}
    draws = ebm_ppl.sample(model, params, fw.array(np.zeros((1, 9))), num_samples=20000,
                           sampler=sampler, num_chains=200, num_warmup=100, thinning=2)
    x = fw.to_numpy(draws["x"]).astype(np.float64)
    assert x.shape == (20000, 9)
    s = 2 * x - 1
    mean, corr = exact_ising_moments(J_FIXED, H_FIXED)
    np.testing.assert_allclose(s.mean(0), mean, atol=0.04)
    np.testing.assert_allclose((s[:, I] * s[:, K]).mean(0), corr, atol=0.04)


PREC = np.array([[2.0, 0.9], [0.9, 1.0]])
COV = np.linalg.inv(PREC)


def gaussian2d_model(fw):
    def model(x):
        scale = fw.param("scale", fw.array(1.0), constraint=fw.constraints.positive)
        P = fw.array(PREC)
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.ImproperUniform(fw.constraints.real, (), (2,)), obs=x)
            ebm_ppl.energy("quad", 0.5 * scale * ((x @ P) * x).sum(-1))

    return model


@pytest.mark.parametrize(
    "sampler, tol",
    [(ebm_ppl.samplers.MALA(0.3), 0.06), ("auto", 0.06), (ebm_ppl.samplers.Langevin(0.05), 0.12)],
    ids=["mala", "auto", "langevin"],
)
def test_gaussian_moments(fw, sampler, tol):
    """Mean and covariance within tol, relative to the marginal scales."""
    draws = ebm_ppl.sample(gaussian2d_model(fw), {"scale": fw.array(1.0)}, fw.array(np.zeros((1, 2))),
                           num_samples=20000, sampler=sampler, num_chains=200, num_warmup=500, thinning=5)
    x = fw.to_numpy(draws["x"]).astype(np.float64)
    sd = np.sqrt(np.diag(COV))
    np.testing.assert_allclose(x.mean(0) / sd, 0.0, atol=tol)
    np.testing.assert_allclose(np.cov(x.T) / np.outer(sd, sd), COV / np.outer(sd, sd), atol=tol)
