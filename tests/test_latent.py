"""Latent sites: the positive phase samples them given the batch, the negative phase jointly."""

import numpy as np
import pytest

import ebm_ppl
from models import rbm_model, small_rbm_mean_loglik, small_rbm_truth_and_data


@pytest.mark.slow  # an accuracy / integration test: CI's slow pass runs it
def test_small_rbm_reaches_true_likelihood(fw):
    """PCD with a latent hidden layer: the exact log-likelihood of the fit is within 0.02
    nats of the data-generating parameters' (the MLE lies above the truth on training data;
    0.02 nats is ~3x the spread seen across seeds)."""
    (W0, B0, C0), x = small_rbm_truth_and_data()
    result = ebm_ppl.fit_unnormalized(
        rbm_model(fw, 6, 3), fw.array(x), ebm_ppl.PCD(num_chains=200, num_steps=1),
        optimizer=fw.adam_decay(0.05, 0.999), num_steps=1500, batch_size=300, progress_bar=False,
    )
    P = {k: fw.to_numpy(v).astype(float) for k, v in result.params.items()}
    gap = small_rbm_mean_loglik(x, W0, B0, C0) - small_rbm_mean_loglik(x, P["W"], P["b"], P["c"])
    assert gap < 0.02, gap
    assert set(result.chains) == {"v", "h"}
    assert tuple(result.chains["h"].shape) == (200, 3)


MU = np.array([[-2.0, 0.0], [2.0, 0.0]])


def gaussian_bernoulli_rbm(fw, num_hidden=2):
    W_init = 0.1 * np.random.default_rng(3).normal(size=(2, num_hidden))

    def gbrbm(v):
        W = fw.param("W", fw.array(W_init))
        b = fw.param("b", fw.zeros(2))
        c = fw.param("c", fw.zeros(num_hidden))
        with fw.plate("data", v.shape[0]):
            v = fw.sample("v", fw.dist.Normal(0.0, 1.0).expand([2]).to_event(1), obs=v)
            h = fw.sample("h", fw.dist.Bernoulli(0.5).expand([num_hidden]).to_event(1))
            ebm_ppl.factor("coupling", ((v @ W) * h).sum(-1) + (v * b).sum(-1) + (h * c).sum(-1))

    return gbrbm


@pytest.mark.slow  # an accuracy / integration test: CI's slow pass runs it
def test_gaussian_bernoulli_rbm_recovers_both_components(fw):
    """Real visible units (Normal base), binary hidden units, mixed sampler ("auto": Gibbs on
    h, MALA on v). Criterion: 4000 draws from the fit put 50% ± 12% of their mass nearer each
    true component mean (the binomial sd of the fraction is 0.008; the slack is for the fit),
    and each side's mean is within 0.35 of the true component mean (the sd of a side mean is
    about 0.025)."""
    rng = np.random.default_rng(4)
    comp = rng.integers(0, 2, 2000)
    x = (MU[comp] + rng.normal(size=(2000, 2))).astype(np.float32)
    model = gaussian_bernoulli_rbm(fw)
    result = ebm_ppl.fit_unnormalized(
        model, fw.array(x), ebm_ppl.PCD(num_chains=200, num_steps=2),
        optimizer=fw.adam_decay(0.05, 0.999), num_steps=1500, batch_size=200, progress_bar=False,
    )
    draws = ebm_ppl.sample(model, result.params, fw.array(x[:1]), num_samples=4000, num_chains=200,
                           num_warmup=300, thinning=5)
    v = fw.to_numpy(draws["v"]).astype(float)
    nearer_right = np.linalg.norm(v - MU[1], axis=1) < np.linalg.norm(v - MU[0], axis=1)
    assert abs(nearer_right.mean() - 0.5) < 0.12, nearer_right.mean()
    for side, mu in ((nearer_right, MU[1]), (~nearer_right, MU[0])):
        np.testing.assert_allclose(v[side].mean(0), mu * 1.0, atol=0.35)
