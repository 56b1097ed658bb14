"""Acceptance: maximum-likelihood fits against exact answers (enumeration, closed form)."""

import numpy as np
import pytest

import ebm_ppl
from models import X_ISING, _fitted_loglik, gaussian_model, ising_model


@pytest.mark.slow
def test_ising_pcd_reaches_exact_mle(fw, ising_exact):
    result = ebm_ppl.fit_unnormalized(
        ising_model(fw), fw.array(X_ISING),
        estimator=ebm_ppl.PCD(num_chains=500, num_steps=2),  # "auto": checkerboard Gibbs sweeps
        optimizer=fw.adam_decay(0.05, 0.999),
        num_steps=3000, rng_seed=0, progress_bar=False,
    )
    gap = ising_exact - _fitted_loglik(fw, result)
    print(f"{fw.name}: Ising PCD gap to the exact MLE {gap:.4f} nats/example")
    assert 0 <= gap < 0.01, gap
    assert len(result.history["loss"]) == 3000
    assert np.all(np.isnan(result.history["acceptance_rate"]))  # Gibbs sweeps have none


@pytest.mark.slow
def test_ising_cd5_minibatch_close_to_mle(fw, ising_exact):
    result = ebm_ppl.fit_unnormalized(
        ising_model(fw), fw.array(X_ISING),
        estimator=ebm_ppl.CD(num_steps=5),
        optimizer=fw.adam_decay(0.05, 0.999),
        num_steps=3000, batch_size=200, rng_seed=0, progress_bar=False,
    )
    gap = ising_exact - _fitted_loglik(fw, result)
    print(f"{fw.name}: Ising CD-5 gap to the exact MLE {gap:.4f} nats/example")
    assert 0 <= gap < 0.02, gap



X_GAUSS = np.random.default_rng(5).normal(0.0, 1 / np.sqrt(2.0), 1000).astype(np.float32)
PREC_MLE = 1.0 / np.mean(X_GAUSS.astype(np.float64) ** 2)


@pytest.mark.parametrize(
    "estimator", [ebm_ppl.PCD(num_chains=1000, num_steps=1), ebm_ppl.CD(num_steps=5)], ids=["pcd", "cd5"]
)
def test_gaussian_energy_mala(fw, estimator):
    result = ebm_ppl.fit_unnormalized(
        gaussian_model(fw), fw.array(X_GAUSS), estimator=estimator,
        sampler=ebm_ppl.samplers.MALA(step_size=0.2),
        optimizer=fw.adam_decay(0.05, 0.998), num_steps=1500, rng_seed=0, progress_bar=False,
    )
    prec = float(fw.to_numpy(result.params["prec"]))
    print(f"{fw.name}: precision {prec:.4f}, MLE {PREC_MLE:.4f}, acceptance {result.history['acceptance_rate'][-200:].mean():.3f}")
    assert abs(prec / PREC_MLE - 1) < 0.04, (prec, PREC_MLE)
    acc = result.history["acceptance_rate"]
    assert np.all(np.isfinite(acc)) and 0.3 < acc[-200:].mean() <= 1.0


def tilted_model(fw):
    def tilted(x):
        mu = fw.param("mu", fw.array(0.0))
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.Normal(0.0, 1.0), obs=x)
            ebm_ppl.factor("tilt", mu * x)

    return tilted


def test_tilted_normal_default_sampler(fw):
    x = np.random.default_rng(7).normal(0.7, 1.0, 500).astype(np.float32)
    result = ebm_ppl.fit_unnormalized(
        tilted_model(fw), fw.array(x), optimizer=fw.adam_decay(0.05, 0.998),
        num_steps=1500, rng_seed=0, progress_bar=False,
    )
    mu = float(fw.to_numpy(result.params["mu"]))
    print(f"{fw.name}: tilted normal mu {mu:.4f}, MLE {x.astype(np.float64).mean():.4f}")
    assert abs(mu - x.astype(np.float64).mean()) < 0.05, (mu, x.mean())
    acc = result.history["acceptance_rate"][-200:].mean()
    assert 0.3 < acc < 0.95, acc
