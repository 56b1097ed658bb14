"""The estimator contract (ebm_ppl.estimators.base): a new estimator is one class.

``ExactPhase`` below is written here, outside the library, against the contract alone: its
negative phase is the exact model expectation by enumerating the 512 states of the 3x3
Ising model, so its fixed point is the exact MLE. Nothing else in ebm_ppl knows of it:
the fit, its history, checkpoints and resume work from what the class declares.
"""

import numpy as np
import pytest

import ebm_ppl
from ebm_ppl.estimators.base import REGISTRY, Estimator, Step
from models import STATES, X_ISING, ising_mean_loglik, ising_model


class ExactPhase(Estimator):
    """The exact log-likelihood gradient of an enumerable model with one site ``x``."""

    needs_sampler = False
    history_names = ("log_z",)

    def init(self, problem, rng_key, data_values, batch_size):
        return ()

    def step(self, rng_key, problem, state, params, batch_values, batch_index=None):
        ops, xp, info = problem.ops, problem.ops.xp, problem.info
        like = batch_values["x"]
        states = ops.from_numpy(STATES, like.dtype, like)
        with ops.no_grad():
            ld_states = info.log_density(ops.stop_gradient(params), {"x": states})
            log_z = ops.stop_gradient(xp.max(ld_states) + xp.log(xp.sum(xp.exp(ld_states - xp.max(ld_states)))))
            prob = xp.exp(ld_states - log_z)
        num = like.shape[0]
        rows = {"x": xp.concatenate([like, states], axis=0)}
        weights = xp.concatenate([xp.zeros(num, dtype=prob.dtype) - 1.0 / num, prob])
        ld, grads = info.weighted_param_grad(params, rows, ops.stop_gradient(weights))
        pos = xp.mean(ld[:num])
        return Step(state, log_z - pos, grads, {"positive_log_density": pos, "log_z": log_z})


def test_a_new_estimator_enters_the_registry_by_subclassing():
    assert REGISTRY[ExactPhase.registry_name()] is ExactPhase
    assert ExactPhase.registry_name().endswith(":ExactPhase")  # not ebm_ppl's: module-qualified
    assert REGISTRY["PCD"] is ebm_ppl.PCD


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_estimator_defined_outside_reaches_the_exact_mle(fw, ising_exact, tmp_path):
    """One class outside the library: the fit reaches the exact MLE, records its own
    history entry, reports no chains, and saves, loads and resumes exactly."""
    x = fw.array(X_ISING)
    opt = fw.adam(0.05)
    result = ebm_ppl.fit_unnormalized(ising_model(fw), x, estimator=ExactPhase(), optimizer=opt, num_steps=300,
                                      progress_bar=False)
    J, h = (np.asarray(result.params[k], np.float64) for k in ("J", "h"))
    assert abs(ising_mean_loglik(X_ISING, J, h) - ising_exact) < 1e-3
    assert result.history["log_z"].shape == (300,) and np.all(np.isfinite(result.history["log_z"]))
    assert np.all(np.isnan(result.history["negative_log_density"]))
    assert result.chains == {}
    # the loss is log Z - mean log p̃(batch) (the base measure in both): the exact negative mean
    # log-likelihood, at the parameters before the last update
    assert result.history["loss"][-1] == pytest.approx(-ising_mean_loglik(X_ISING, J, h), abs=1e-3)
    fw.clear()  # Pyro's param store: start the split fit from the model's initial values too
    half = ebm_ppl.fit_unnormalized(ising_model(fw), x, estimator=ExactPhase(), optimizer=fw.adam(0.05),
                                    num_steps=150, progress_bar=False)
    ebm_ppl.save(half, tmp_path / "half.npz")
    resumed = ebm_ppl.fit_unnormalized(ising_model(fw), x, estimator=ExactPhase(), optimizer=fw.adam(0.05),
                                       num_steps=150, progress_bar=False, resume=ebm_ppl.load(tmp_path / "half.npz"))
    for k in ("J", "h"):
        np.testing.assert_array_equal(np.asarray(resumed.params[k]), np.asarray(result.params[k]))


def test_an_object_that_is_not_an_estimator_is_refused(fw):
    class Duck:
        def init(self, *a):
            return ()

        def update(self, *a):
            return ()

    with pytest.raises(TypeError, match="estimator must be an ebm_ppl estimator"):
        ebm_ppl.fit_unnormalized(ising_model(fw), fw.array(X_ISING), estimator=Duck(), num_steps=1,
                                 progress_bar=False)
