"""fit_unnormalized(monitor=...): values every N updates in history, checked against the
evaluation API at the same parameters; the fit itself is unchanged by monitoring."""

import numpy as np
import pytest

import ebm_ppl
from models import ising_model, ising_sample

X = ising_sample(np.full(12, 0.3), np.zeros(9), 300, seed=3)
HELD_OUT = ising_sample(np.full(12, 0.3), np.zeros(9), 100, seed=4)


@pytest.mark.slow  # an accuracy / integration test: CI's slow pass runs it
def test_monitor_records_exact_pseudo_likelihood_and_diagnostics(fw):
    seen = {}

    def keep(step, params, chains):  # a user callback: sees constrained params and chains
        seen[step] = {k: fw.to_numpy(v).copy() for k, v in params.items()}
        return {"chain_mean": float(np.mean(fw.to_numpy(chains["x"])))}

    monitor = ebm_ppl.Monitor(every=20, data=fw.array(HELD_OUT), exact=True, pseudo_likelihood=True,
                              diagnostics=True, diagnostic_steps=20).add(keep)
    kw = dict(estimator=ebm_ppl.PCD(num_chains=50), optimizer=fw.adam(0.05), progress_bar=False, rng_seed=2)
    result = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=60, monitor=monitor, **kw)
    h = result.history
    for name in ("log_likelihood", "pseudo_log_likelihood", "rhat", "ess", "chain_mean"):
        assert h[name].shape == (60,), name
        assert np.all(np.isfinite(h[name][19::20])) and np.isnan(h[name][:19]).all(), name
    assert sorted(seen) == [20, 40, 60]
    for step, params in seen.items():  # the recorded exact values are log_likelihood at those parameters
        ll = ebm_ppl.log_likelihood(ising_model(fw), {k: fw.array(v) for k, v in params.items()}, fw.array(HELD_OUT))
        np.testing.assert_allclose(h["log_likelihood"][step - 1], np.mean(fw.to_numpy(ll)), rtol=1e-5)
        assert h["pseudo_log_likelihood"][step - 1] < 0
    assert np.all(h["rhat"][19::20] > 0.9) and np.all(h["ess"][19::20] > 1)
    # monitoring changes nothing in the fit itself
    fw.clear()
    kw["optimizer"] = fw.adam(0.05)
    plain = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=60, **kw)
    np.testing.assert_array_equal(fw.to_numpy(plain.params["J"]), fw.to_numpy(result.params["J"]))
    np.testing.assert_array_equal(plain.history["loss"], h["loss"])


def test_monitor_early_stop_any_every_and_bad_settings(fw):
    monitor = ebm_ppl.Monitor(every=10, diagnostics=True, diagnostic_steps=8,
                              early_stop=lambda values: len(values["rhat"]) >= 2)
    result = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=100, monitor=monitor,
                                      progress_bar=False)
    assert len(result.history["loss"]) == 20 and result.state.num_updates == 20
    # `every` need not divide the updates per epoch: chunks end at its multiples
    steps = []
    every4 = ebm_ppl.Monitor(every=4, diagnostics=False).add(lambda step, p, c: steps.append(step) or {"n": step})
    result = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=10, batch_size=100,
                                      monitor=every4, progress_bar=False)
    assert steps == [4, 8]
    assert np.flatnonzero(np.isfinite(result.history["n"])).tolist() == [3, 7]
    with pytest.raises(ValueError, match="every"):
        ebm_ppl.Monitor(every=0)
    with pytest.raises(ValueError, match="data"):
        ebm_ppl.Monitor(every=5, exact=True)


def test_monitor_list_of_callables_once_per_epoch(fw):
    calls = []
    result = ebm_ppl.fit_unnormalized(
        ising_model(fw), fw.array(X), num_steps=9, batch_size=100, progress_bar=False,
        monitor=[lambda step, params, chains: calls.append(step) or {"n": float(step)}])
    assert calls == [3, 6, 9]
    assert np.array_equal(np.isnan(result.history["n"]), [True, True, False] * 3)
