"""fit_unnormalized(monitor=...): values every N updates in history, checked against the
evaluation API at the same parameters; the fit itself is unchanged by monitoring."""

import logging

import numpy as np
import pytest

import ebm_ppl
from models import (_rejected, _store, gaussian_model, ising_model, ising_sample, rbm_model, tilted_normal_mean_loglik,
                    tilted_normal_model)

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


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
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


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_default_monitor_records_the_exact_log_likelihood_and_changes_nothing(fw):
    """``Monitor(every, data=held_out)`` and nothing else: the exact held-out log-likelihood
    at every evaluation (the Ising model enumerates); the fit is the same bit for bit."""
    kw = dict(estimator=ebm_ppl.PCD(num_chains=50), progress_bar=False, rng_seed=2, num_steps=20)
    monitor = ebm_ppl.Monitor(every=10, data=fw.array(HELD_OUT))
    result = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), optimizer=fw.adam(0.05), monitor=monitor, **kw)
    ll = result.history["log_likelihood"]
    assert ll.shape == (20,) and np.all(np.isfinite(ll[9::10])) and np.isnan(np.delete(ll, [9, 19])).all()
    exact = ebm_ppl.log_likelihood(ising_model(fw), result.params, fw.array(HELD_OUT))
    np.testing.assert_allclose(ll[19], np.mean(fw.to_numpy(exact)), rtol=1e-5)
    fw.clear()
    plain = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), optimizer=fw.adam(0.05), **kw)
    for name in ("J", "h"):
        np.testing.assert_array_equal(fw.to_numpy(plain.params[name]), fw.to_numpy(result.params[name]))
    np.testing.assert_array_equal(plain.history["loss"], result.history["loss"])
    fw.clear()  # exact=False: an explicit opt-out
    off = ebm_ppl.Monitor(every=10, data=fw.array(HELD_OUT), exact=False, diagnostics=False).add(
        lambda step, p, c: {"n": float(step)})
    result = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), optimizer=fw.adam(0.05), monitor=off, **kw)
    assert "log_likelihood" not in result.history and np.isfinite(result.history["n"][9::10]).all()


@pytest.mark.slow  # AIS at every evaluation: 21 s on NumPyro; CI's slow pass runs it
def test_default_monitor_falls_back_to_ais_with_one_notice(fw, caplog):
    """A model that does not enumerate (a continuous site): ``"log_likelihood"`` from AIS, said
    once on the "ebm_ppl" logger (not a warning); close to the exact value, known here."""
    rng = np.random.default_rng(5)
    x, held = rng.normal(0, 0.7, 200), rng.normal(0, 0.7, 100)
    model = tilted_normal_model(fw)  # one object: the second fit reuses the compiled update
    monitor = ebm_ppl.Monitor(every=5, data=fw.array(held), diagnostics=False)
    with caplog.at_level(logging.WARNING, logger="ebm_ppl"):
        result = ebm_ppl.fit_unnormalized(model, fw.array(x), num_steps=5, monitor=monitor, optimizer=fw.adam(0.05),
                                          progress_bar=False)
    ll = result.history["log_likelihood"]
    assert np.isfinite(ll[4]) and np.isnan(ll[:4]).all()
    notes = [r.getMessage() for r in caplog.records if r.name == "ebm_ppl"]
    assert len(notes) == 1 and "AIS" in notes[0] and "num_chains=50" in notes[0] and "exact=False" in notes[0]
    truth = tilted_normal_mean_loglik(fw.to_numpy(fw.array(held)), float(fw.to_numpy(result.params["prec"])))
    assert abs(ll[4] - truth) < 0.1
    # an explicit ais=: "ais_log_likelihood" only, and no further notice
    caplog.clear()
    explicit = ebm_ppl.Monitor(every=5, data=fw.array(held), ais=dict(num_chains=20, num_temperatures=50),
                               diagnostics=False)
    with caplog.at_level(logging.WARNING, logger="ebm_ppl"):
        result = ebm_ppl.fit_unnormalized(model, fw.array(x), num_steps=5, monitor=explicit, optimizer=fw.adam(0.05),
                                          progress_bar=False)
    assert "log_likelihood" not in result.history and np.isfinite(result.history["ais_log_likelihood"][4])
    assert not [r for r in caplog.records if r.name == "ebm_ppl"]


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_monitor_that_cannot_evaluate_is_refused_before_the_first_update(fw):
    """Refused (ValueError / NotImplementedError naming what) before any update: a resumed
    result, the Pyro param store and the data unchanged (a fresh fit leaves no parameter
    behind), no callable called."""
    calls = []

    def never(step, params, chains):
        calls.append(step)
        return {}

    held = fw.array(HELD_OUT)
    previous = ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X), num_steps=1, progress_bar=False)
    _rejected(fw, previous, ValueError, "held-out.*shape", data=fw.array(X),
              monitor=ebm_ppl.Monitor(every=1, data=held[:, :8]).add(never))
    rng = np.random.default_rng(6)
    v = fw.array((rng.random((100, 6)) < 0.4).astype(np.float32))
    x = fw.array(rng.normal(0, 0.7, 100))
    cases = [  # a fresh fit each: (model, data, monitor, error, what the message names)
        (rbm_model(fw, 6, 3), v, ebm_ppl.Monitor(every=1, data=v, pseudo_likelihood=True), NotImplementedError,
         "pseudo_log_likelihood.*latent"),
        (tilted_normal_model(fw), x, ebm_ppl.Monitor(every=1, data=x, exact=True), ValueError, "exact=True"),
        (gaussian_model(fw), x, ebm_ppl.Monitor(every=1, data=x), ValueError, "nor by AIS"),  # improper base
        (ising_model(fw), fw.array(X), ebm_ppl.Monitor(every=1, data=held[:, :8]), ValueError, "held-out"),
    ]
    for model, data, monitor, error, match in cases:
        fw.clear()
        with pytest.raises(error, match=match):
            ebm_ppl.fit_unnormalized(model, data, num_steps=1, progress_bar=False, monitor=monitor.add(never))
        assert _store(fw) == {}
    assert calls == []
