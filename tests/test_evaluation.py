"""log_partition (enumeration, AIS) and log_likelihood against exact answers in numpy.

Tolerances: enumeration is exact up to float32 rounding (1e-3). The AIS bounds are the
acceptance bounds of the issue, and each sits several Monte Carlo standard errors out:
the Ising run (200 chains, 1000 temperatures) has a standard error near 0.007 nats, so
0.05 is about 7 of them; the RBM run (100 chains, 1000 temperatures) near 0.016 nats, so
0.1 is about 6 (AIS's downward bias, of order the variance of log w / (2n), is far smaller).
"""


import numpy as np
import pytest

import ebm_ppl
from ebm_ppl.evaluation.ais import temperature_schedule
from models import STATES, ising_log_unnorm, ising_model, random_rbm, rbm_exact_log_z, rbm_log_marginal, rbm_params
from models import rbm_model_at as rbm_model

rng = np.random.default_rng(7)
J_FIXED = rng.uniform(-0.6, 0.6, 12)
H_FIXED = rng.uniform(-0.3, 0.3, 9)
BASE = 9 * np.log(0.5)


def exact_ising_log_z(J, h):
    return float(np.logaddexp.reduce(ising_log_unnorm(STATES, J, h) + BASE))


def ising_params(fw, J, h):
    return {"J": fw.array(J), "h": fw.array(h)}



def test_public_names():
    for name in ["log_partition", "log_likelihood", "LogZ"]:
        assert name in ebm_ppl.__all__ and hasattr(ebm_ppl, name)
    assert ebm_ppl.LogZ._fields[:4] == ("estimate", "stderr", "lower", "upper")


# ---- log_partition(method="exact") -------------------------------------------------------


def test_exact_log_partition_ising(fw):
    log_z = ebm_ppl.log_partition(ising_model(fw, J_FIXED, H_FIXED), ising_params(fw, J_FIXED, H_FIXED),
                                  fw.array(np.zeros((1, 9))))
    assert isinstance(log_z, ebm_ppl.LogZ)
    assert log_z.stderr == 0.0
    assert abs(log_z.estimate - exact_ising_log_z(J_FIXED, H_FIXED)) < 1e-3


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_exact_log_partition_with_latent_sites_in_chunks(fw):
    """10 visible + 8 hidden units: 2**18 joint states, four chunks of 2**16."""
    W, b, c = random_rbm(10, 8, seed=1)
    log_z = ebm_ppl.log_partition(rbm_model(fw, W, b, c), rbm_params(fw, W, b, c), fw.array(np.zeros((1, 10))))
    assert log_z.stderr == 0.0
    assert abs(log_z.estimate - rbm_exact_log_z(W, b, c)) < 1e-3


def coupled_model(fw, num_visible, num_hidden):
    """Binary units with couplings inside each layer: no layer can be summed out analytically."""

    def model(v):
        L = fw.param("L", fw.array(0.1 * np.ones((num_visible, num_visible))))
        M = fw.param("M", fw.array(0.1 * np.ones((num_hidden, num_hidden))))
        with fw.plate("data", v.shape[0]):
            v = fw.sample("v", fw.dist.Bernoulli(0.5).expand([num_visible]).to_event(1), obs=v)
            h = fw.sample("h", fw.dist.Bernoulli(0.5).expand([num_hidden]).to_event(1))
            ebm_ppl.factor("pairs", ((v @ L) * v).sum(-1) + ((h @ M) * h).sum(-1))

    params = {"L": fw.array(0.1 * np.ones((num_visible, num_visible))),
              "M": fw.array(0.1 * np.ones((num_hidden, num_hidden)))}
    return model, params


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_exact_log_partition_refuses_too_many_states(fw):
    """2**25 joint states and no layer that can be summed out analytically (an RBM's
    would be: see test_evaluation_bracket.py)."""
    model, params = coupled_model(fw, 20, 5)
    with pytest.raises(ValueError, match="33554432"):
        ebm_ppl.log_partition(model, params, fw.array(np.zeros((1, 20))), method="exact")


def gaussian_model(fw, base="normal"):
    def model(x):
        a = fw.param("a", fw.array(1.0), constraint=fw.constraints.positive)
        with fw.plate("data", x.shape[0]):
            d = fw.dist.Normal(0.0, 1.0) if base == "normal" else fw.dist.ImproperUniform(fw.constraints.real, (), ())
            x = fw.sample("x", d, obs=x)
            ebm_ppl.energy("quad", 0.5 * a * x**2)

    return model


def test_exact_log_partition_refuses_continuous_site(fw):
    with pytest.raises(TypeError, match="'x'.*continuous"):
        ebm_ppl.log_partition(gaussian_model(fw), {"a": fw.array(1.0)}, fw.array(np.zeros(1)), method="exact")


# ---- log_partition(method="ais") ---------------------------------------------------------


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_ais_ising_doubled_couplings(fw):
    J = 2 * J_FIXED
    log_z = ebm_ppl.log_partition(ising_model(fw, J, H_FIXED), ising_params(fw, J, H_FIXED),
                                  fw.array(np.zeros((1, 9))), method="ais", num_chains=200,
                                  num_temperatures=1000)
    assert 0.0 < log_z.stderr < 0.1
    assert abs(log_z.estimate - exact_ising_log_z(J, H_FIXED)) < 0.05


@pytest.mark.slow
def test_ais_rbm_64_by_16(fw):
    W, b, c = random_rbm(64, 16, seed=0)
    log_z = ebm_ppl.log_partition(rbm_model(fw, W, b, c), rbm_params(fw, W, b, c), fw.array(np.zeros((1, 64))),
                                  method="ais", num_chains=100, num_temperatures=1000)
    assert 0.0 < log_z.stderr < 0.05
    assert abs(log_z.estimate - rbm_exact_log_z(W, b, c)) < 0.1


def test_ais_continuous_site(fw):
    """Normal(0, 1) base times exp(-a x²/2): Z = (1 + a)**-0.5, moved by MALA ("auto").

    Bound: 5 reported standard errors plus 0.01 for the error of the standard error.
    """
    a = 3.0
    log_z = ebm_ppl.log_partition(gaussian_model(fw), {"a": fw.array(a)}, fw.array(np.zeros(1)), method="ais",
                                  num_chains=200, num_temperatures=100)
    assert 0.0 < log_z.stderr < 0.05
    assert abs(log_z.estimate + 0.5 * np.log(1 + a)) < 5 * log_z.stderr + 0.01


def hierarchical_model(fw):
    """z ~ N(0, 1) latent, x | z ~ N(z, 1) observed, times exp(c x z): a base measure whose
    second site depends on the first's value. Z = (2 - (1 + c)²)^(-1/2) (the precision
    matrix [[2, -1], [-1, 1]] of (z, x) with -c added off the diagonal)."""

    def model(x):
        c = fw.param("c", fw.array(0.2))
        with fw.plate("data", x.shape[0]):
            z = fw.sample("z", fw.dist.Normal(0.0, 1.0))
            x = fw.sample("x", fw.dist.Normal(z, 1.0), obs=x)
            ebm_ppl.factor("coupling", c * x * z)

    return model


def test_ais_draws_a_dependent_base_jointly(fw):
    """AIS starts from the joint base p(z) p(x | z), drawn ancestrally: with 10 temperatures
    the chains barely move, so a start that drew x apart from z (from p(x | another z), as
    before: correlation 0 instead of 1/√2) was 9 standard errors low (0.168 against 0.290).

    Bound: 5 reported standard errors plus 0.01 (AIS's downward bias here, of order the
    variance of log w over 2 n, is under 0.001)."""
    c = 0.2
    log_z = ebm_ppl.log_partition(hierarchical_model(fw), {"c": fw.array(c)}, fw.array(np.zeros(1)), method="ais",
                                  num_chains=2000, num_temperatures=10)
    assert 0.0 < log_z.stderr < 0.03
    assert abs(log_z.estimate + 0.5 * np.log(2 - (1 + c) ** 2)) < 5 * log_z.stderr + 0.01


def test_ais_refuses_improper_base(fw):
    with pytest.raises(ValueError, match="'x'.*improper"):
        ebm_ppl.log_partition(gaussian_model(fw, base="improper"), {"a": fw.array(1.0)}, fw.array(np.zeros(1)),
                              method="ais", num_temperatures=10)


@pytest.mark.parametrize("schedule", ["sigmoid", "linear", "geometric"])
def test_temperature_schedules(schedule):
    betas = temperature_schedule(schedule, 50)
    assert betas.shape == (51,) and betas[0] == 0.0 and betas[-1] == 1.0
    assert np.all(np.diff(betas) > 0)


def test_bad_schedule_and_method(fw):
    model, params, ex = ising_model(fw), ising_params(fw, J_FIXED, H_FIXED), fw.array(np.zeros((1, 9)))
    with pytest.raises(ValueError, match="schedule"):
        ebm_ppl.log_partition(model, params, ex, method="ais", schedule="cosine")
    with pytest.raises(ValueError, match="schedule"):
        ebm_ppl.log_partition(model, params, ex, method="ais", schedule=[0.0, 0.5])
    with pytest.raises(ValueError, match="method"):
        ebm_ppl.log_partition(model, params, ex, method="bridge")
    with pytest.raises(ValueError, match="num_chains"):
        ebm_ppl.log_partition(model, params, ex, method="ais", num_chains=0)


def test_ais_explicit_schedule_is_plain_importance_sampling_at_one_step(fw):
    """With betas (0, 1) AIS is importance sampling from the base: exact for a flat model."""
    log_z = ebm_ppl.log_partition(ising_model(fw), ising_params(fw, np.zeros(12), np.zeros(9)),
                                  fw.array(np.zeros((1, 9))), method="ais", schedule=[0.0, 1.0])
    assert abs(log_z.estimate) < 1e-5 and log_z.stderr < 1e-5


# ---- log_likelihood -----------------------------------------------------------------------


def test_log_likelihood_ising(fw):
    model, params = ising_model(fw, J_FIXED, H_FIXED), ising_params(fw, J_FIXED, H_FIXED)
    x = STATES[::7]
    expected = ising_log_unnorm(x, J_FIXED, H_FIXED) + BASE - exact_ising_log_z(J_FIXED, H_FIXED)
    ll = fw.to_numpy(ebm_ppl.log_likelihood(model, params, fw.array(x)))
    assert ll.shape == (len(x),)
    np.testing.assert_allclose(ll, expected, atol=1e-3)
    # the probabilities of all 512 states sum to one
    ll_all = fw.to_numpy(ebm_ppl.log_likelihood(model, params, fw.array(STATES)))
    assert abs(np.logaddexp.reduce(ll_all.astype(np.float64))) < 1e-3
    shifted = ebm_ppl.log_likelihood(model, params, fw.array(x), log_z=ebm_ppl.LogZ(1.0, 0.1))
    np.testing.assert_allclose(fw.to_numpy(shifted), expected + exact_ising_log_z(J_FIXED, H_FIXED) - 1.0,
                               atol=1e-3)


def test_log_likelihood_rbm_sums_out_hidden_units(fw):
    W, b, c = random_rbm(10, 8, seed=3)
    v = np.random.default_rng(4).integers(0, 2, (37, 10)).astype(np.float64)
    expected = rbm_log_marginal(v, W, b, c) - rbm_exact_log_z(W, b, c)
    ll = fw.to_numpy(ebm_ppl.log_likelihood(rbm_model(fw, W, b, c), rbm_params(fw, W, b, c), fw.array(v)))
    np.testing.assert_allclose(ll, expected, atol=1e-3)


def test_log_likelihood_needs_log_z_when_not_enumerable(fw):
    model, params = gaussian_model(fw), {"a": fw.array(3.0)}
    x = np.array([-1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="log_z"):
        ebm_ppl.log_likelihood(model, params, fw.array(x))
    log_z = -0.5 * np.log(4.0)
    ll = fw.to_numpy(ebm_ppl.log_likelihood(model, params, fw.array(x), log_z=log_z))
    expected = -0.5 * x**2 - 0.5 * np.log(2 * np.pi) - 1.5 * x**2 - log_z
    np.testing.assert_allclose(ll, expected, atol=1e-4)


def test_log_likelihood_refuses_too_many_latent_states(fw):
    model, params = coupled_model(fw, 4, 25)
    with pytest.raises(ValueError, match="33554432"):
        ebm_ppl.log_likelihood(model, params, fw.array(np.zeros((2, 4))), log_z=0.0)
