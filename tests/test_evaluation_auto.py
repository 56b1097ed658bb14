"""log_partition's default ``method="auto"`` (exact where the model enumerates, else
bidirectional AIS), the honest interval ``lower <= upper`` of every method, the matching
log-likelihood interval, and the AIS progress bar.

The acceptance test (issue 24) runs ten bidirectional estimates (seeds 0..9) on the 3x3
Ising test problem with its couplings x2.5 and asks for the exact log Z inside
[lower, upper] in at least eight. Its calibration is stated at the test.
"""

import inspect

import numpy as np
import pytest

import ebm_ppl
from ebm_ppl.evaluation import ais as ais_module
from models import (H_EVAL, J_EVAL, STATES, exact_ising_log_z, ising_log_unnorm, ising_model, random_rbm,
                    rbm_exact_log_z, rbm_params)
from models import rbm_model_at as rbm_model
from models import run, tilted_normal_model


def ising_params(fw, J, h):
    return {"J": fw.array(J), "h": fw.array(h)}


def boltzmann_model(fw, num_units):
    """A fully visible Boltzmann machine (every pair of binary units coupled): no unit can be
    summed out, and 25 units make 2**25 joint states, past the enumeration budget."""
    L0 = 0.02 * np.ones((num_units, num_units))

    def model(v):
        L = fw.param("L", fw.array(L0))
        with fw.plate("data", v.shape[0]):
            v = fw.sample("v", fw.dist.Bernoulli(0.5).expand([num_units]).to_event(1), obs=v)
            ebm_ppl.factor("pairs", ((v @ L) * v).sum(-1))

    return model, {"L": fw.array(L0)}


def test_logz_fields_and_positional_construction():
    assert ebm_ppl.LogZ._fields == ("estimate", "stderr", "lower", "upper", "lower_stderr", "upper_stderr",
                                    "data_bound", "upper_is_exact_start", "forward", "reverse", "method")
    lz = ebm_ppl.LogZ(1.0, 0.5, 0.0, 2.0, 0.1, 0.2, float("nan"), True)
    assert lz.upper_is_exact_start and np.isnan(lz.forward) and np.isnan(lz.reverse) and lz.method is None
    assert inspect.signature(ebm_ppl.log_partition).parameters["method"].default == "auto"


# ---- (a) method="auto" ----------------------------------------------------------------------


def test_auto_is_exact_on_the_ising_model(fw):
    model, params, ex = ising_model(fw, J_EVAL, H_EVAL), ising_params(fw, J_EVAL, H_EVAL), fw.array(np.zeros((1, 9)))
    exact = exact_ising_log_z(J_EVAL, H_EVAL)
    for lz in (ebm_ppl.log_partition(model, params, ex, method="auto"), ebm_ppl.log_partition(model, params, ex)):
        assert lz.method == "exact" and lz.stderr == 0.0
        assert lz.lower == lz.upper == lz.estimate == lz.forward == lz.reverse
        assert abs(lz.estimate - exact) < 1e-3


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_auto_is_exact_on_an_rbm_with_its_visible_layer_summed_out(fw):
    """24 visible x 6 hidden: 2**30 joint states; the visible layer is summed out
    analytically and the 64 hidden states enumerated."""
    W, b, c = random_rbm(24, 6, 1)
    lz = ebm_ppl.log_partition(rbm_model(fw, W, b, c), rbm_params(fw, W, b, c), fw.array(np.zeros((1, 24))))
    assert lz.method == "exact" and lz.stderr == 0.0 and lz.lower == lz.upper == lz.estimate
    assert abs(lz.estimate - rbm_exact_log_z(W, b, c)) < 1e-3


@pytest.mark.slow  # 25-unit bidirectional AIS: 55 s on NumPyro; CI's slow pass runs it
def test_auto_runs_bidirectional_past_the_enumeration_budget(fw):
    """2**25 joint states and no layer to sum out: bidirectional AIS (a few temperatures:
    only the choice and the interval's order are checked; ``method="exact"`` refuses)."""
    model, params = boltzmann_model(fw, 25)
    ex = fw.array(np.zeros((1, 25)))
    lz, _ = run(ebm_ppl.log_partition, model, params, ex, num_chains=8, num_temperatures=5, progress_bar=False)
    assert lz.method == "bidirectional" and not lz.upper_is_exact_start
    assert lz.lower <= min(lz.forward, lz.reverse) <= max(lz.forward, lz.reverse) <= lz.upper
    assert lz.estimate == 0.5 * (lz.forward + lz.reverse)
    with pytest.raises(ValueError, match="33554432"):
        ebm_ppl.log_partition(model, params, ex, method="exact")


def test_auto_runs_bidirectional_on_a_continuous_site(fw):
    """A Normal(0, 1) base: bidirectional AIS (reverse from 100 MALA steps at β = 1, not
    exact draws). 200 chains: each side's standard error is near 0.012 (measured), and the
    exact value is allowed 0.02 nats outside the interval (the reverse start is
    approximate): 3.7 standard errors of a side in all, a failure probability below 1e-3
    for normal errors."""
    a = 3.0
    lz, _ = run(ebm_ppl.log_partition, tilted_normal_model(fw), {"prec": fw.array(a)}, fw.array(np.zeros(1)),
                num_chains=200, num_temperatures=100)
    assert lz.method == "bidirectional" and not lz.upper_is_exact_start
    assert lz.lower <= lz.upper
    assert lz.lower - 0.02 < -0.5 * np.log(1 + a) < lz.upper + 0.02, lz


# ---- (b) the acceptance test: coverage of the bidirectional interval ----------------------


@pytest.mark.slow  # the acceptance test of issue 24: 20 AIS runs (numpyro compiles each), CI's slow pass runs it
def test_bidirectional_interval_covers_the_exact_value(fw):
    """The 3x3 Ising test problem with couplings x2.5; ten runs (seeds 0..9), 100
    temperatures, 50 chains each. Every interval is ordered, and at least eight of ten hold
    the exact log Z.

    Calibration (measured for issue 24, seeds 0..99 on Pyro and 0..59 on NumPyro): the
    interval held the exact value in every one of the 160 runs (the raw sides alone, the
    old bracket, in 74: on this problem their bias is small next to their noise). Per-run
    coverage is then at least 0.98 (95% one-sided, 1 − 3/160), and three or more misses
    in ten, the failure of this test, have probability below 1e-3 for any set of ten
    seeds."""
    J = 2.5 * J_EVAL
    model, params, ex = ising_model(fw, J, H_EVAL), ising_params(fw, J, H_EVAL), fw.array(np.zeros((1, 9)))
    exact = exact_ising_log_z(J, H_EVAL)
    intervals = []
    for seed in range(10):
        lz, _ = run(ebm_ppl.log_partition, model, params, ex, method="bidirectional", num_temperatures=100,
                    num_chains=50, rng_seed=seed, progress_bar=False)
        assert lz.method == "bidirectional" and lz.upper_is_exact_start
        intervals.append((lz.lower, lz.upper))
    assert all(lo <= hi for lo, hi in intervals), intervals
    inside = sum(lo <= exact <= hi for lo, hi in intervals)
    assert inside >= 8, (exact, intervals)


# ---- (c) the interval of every method -----------------------------------------------------


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_interval_of_ais_and_exact(fw):
    J = 2.0 * J_EVAL
    model, params, ex = ising_model(fw, J, H_EVAL), ising_params(fw, J, H_EVAL), fw.array(np.zeros((1, 9)))
    lz = ebm_ppl.log_partition(model, params, ex, method="ais", num_chains=20, num_temperatures=20)
    assert lz.method == "ais" and lz.upper == float("inf") and np.isnan(lz.reverse)
    assert lz.estimate == lz.forward and lz.lower == lz.forward - 2 * lz.stderr <= lz.upper
    one, _ = run(ebm_ppl.log_partition, model, params, ex, method="ais", num_chains=1, num_temperatures=5)
    assert np.isnan(one.stderr) and one.lower == -float("inf") <= one.upper  # no error estimate: no bound
    exact = ebm_ppl.log_partition(model, params, ex, method="exact")
    assert exact.method == "exact" and exact.lower == exact.upper == exact.estimate


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_log_likelihood_interval(fw):
    J = 2.5 * J_EVAL
    model, params, ex = ising_model(fw, J, H_EVAL), ising_params(fw, J, H_EVAL), fw.array(np.zeros((1, 9)))
    x = STATES[::37]
    log_p = ising_log_unnorm(x, J, H_EVAL) + 9 * np.log(0.5)
    exact = ebm_ppl.log_likelihood(model, params, fw.array(x), interval=True)
    assert isinstance(exact, ebm_ppl.evaluation.LogLikelihood)
    for v in exact:
        np.testing.assert_allclose(fw.to_numpy(v), log_p - exact_ising_log_z(J, H_EVAL), atol=1e-3)
    lz, _ = run(ebm_ppl.log_partition, model, params, ex, method="bidirectional", num_temperatures=20,
                num_chains=20, progress_bar=False)
    ll, _ = run(ebm_ppl.log_likelihood, model, params, fw.array(x), log_z=lz, interval=True)
    np.testing.assert_allclose(fw.to_numpy(ll.estimate), log_p - lz.estimate, atol=1e-3)
    np.testing.assert_allclose(fw.to_numpy(ll.lower), log_p - lz.upper, atol=1e-3)
    np.testing.assert_allclose(fw.to_numpy(ll.upper), log_p - lz.lower, atol=1e-3)
    plain = ebm_ppl.log_likelihood(model, params, fw.array(x), log_z=lz)
    np.testing.assert_array_equal(fw.to_numpy(plain), fw.to_numpy(ll.estimate))
    by_hand = ebm_ppl.log_likelihood(model, params, fw.array(x), log_z=ebm_ppl.LogZ(30.0, 0.5), interval=True)
    np.testing.assert_allclose(fw.to_numpy(by_hand.lower), log_p - 31.0, atol=1e-3)
    np.testing.assert_allclose(fw.to_numpy(by_hand.upper), log_p - 29.0, atol=1e-3)


# ---- the progress bar ---------------------------------------------------------------------


@pytest.mark.slow  # three AIS runs compiled: 30 s on NumPyro; CI's slow pass runs it
def test_progress_bar_and_chunking_leave_the_result_unchanged(fw, capsys, monkeypatch):
    J = 2.0 * J_EVAL
    model, params, ex = ising_model(fw, J, H_EVAL), ising_params(fw, J, H_EVAL), fw.array(np.zeros((1, 9)))
    kw = dict(method="bidirectional", num_chains=10, num_temperatures=30, rng_seed=3)
    shown, _ = run(ebm_ppl.log_partition, model, params, ex, progress_bar=True, **kw)
    assert "log_partition (AIS)" in capsys.readouterr().err
    hidden, _ = run(ebm_ppl.log_partition, model, params, ex, progress_bar=False, **kw)
    assert "log_partition (AIS)" not in capsys.readouterr().err
    monkeypatch.setattr(ais_module, "NUM_CHUNKS", 1)  # the whole annealing in one piece
    whole, _ = run(ebm_ppl.log_partition, model, params, ex, progress_bar=False, **kw)
    for other in (hidden, whole):  # the same random streams: the same numbers
        assert (other.forward, other.reverse) == (shown.forward, shown.reverse)
    assert shown.method == hidden.method == whole.method == "bidirectional"
    with pytest.raises(ValueError, match="progress_bar"):
        ebm_ppl.log_partition(model, params, ex, method="ais", progress_bar="yes")
