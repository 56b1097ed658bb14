"""Rao-Blackwellized gradients (``rao_blackwell=True``): a binary latent layer's conditional
means in both phases, used only where the model's structure makes that exact."""

import itertools

import numpy as np
import pytest

import ebm_ppl
from models import random_rbm, rbm_model, rbm_model_at, rbm_params, small_rbm_mean_loglik, small_rbm_truth_and_data

V, H = 6, 3
VS = np.array(list(itertools.product([0, 1], repeat=V)), float)


def _problem(fw, model, params):
    from ebm_ppl._problem import PROBE_SEED, compile_problem

    problem, _ = compile_problem(model, params, fw.array(np.zeros((1, V), np.float32)), None, (), None)
    probes = problem.probe(problem.ops.seed(PROBE_SEED, problem.ops.first_leaf(problem.info.init_params)))
    return problem, probes


def test_conditional_means_are_the_hidden_probabilities(fw):
    """For an RBM, E[h | v] = sigmoid(c + vW): the closed form, at every row, to float32 rounding."""
    from ebm_ppl._rao_blackwell import conditional_means, rao_blackwell_site

    W, b, c = random_rbm(V, H, 3)
    problem, probes = _problem(fw, rbm_model_at(fw, W, b, c), rbm_params(fw, W, b, c))
    assert rao_blackwell_site(problem, ebm_ppl.PCD(rao_blackwell=True), probes) == ("h", 0.0, 1.0)
    assert rao_blackwell_site(problem, ebm_ppl.PCD(), probes) is None
    v = np.random.default_rng(0).integers(0, 2, (20, V)).astype(np.float32)
    h = np.random.default_rng(1).integers(0, 2, (20, H)).astype(np.float32)
    position = problem.to_internal({"v": fw.array(v), "h": fw.array(h)})
    out = conditional_means(problem, ("h", 0.0, 1.0), problem.info.init_params, position)
    np.testing.assert_allclose(fw.to_numpy(out["h"]), 1 / (1 + np.exp(-(c + v @ W))), atol=2e-6)
    np.testing.assert_array_equal(fw.to_numpy(out["v"]), v)


def _cubic_rbm(fw):
    """log p̃ with g(h) = h³ − h² + h in place of h: equal to an RBM's at h in {0, 1} (so an
    exact sum over h is still a softplus), but not affine in between."""
    W0 = 0.3 * np.random.default_rng(0).standard_normal((V, H))

    def model(v):
        W = fw.param("W", fw.array(W0))
        with fw.plate("data", v.shape[0]):
            v = fw.sample("v", fw.dist.Bernoulli(0.5).expand([V]).to_event(1), obs=v)
            h = fw.sample("h", fw.dist.Bernoulli(0.5).expand([H]).to_event(1))
            ebm_ppl.factor("rbm", ((v @ W) * (h ** 3 - h ** 2 + h)).sum(-1))

    return model, {"W": fw.array(W0)}


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_needs_a_layer_affine_on_the_whole_segment(fw):
    """A model affine in h only at h in {0, 1} is summable (exact evaluation is right) but is
    refused for Rao-Blackwellized gradients, naming the site, before anything runs."""
    from ebm_ppl.evaluation.analytic import summable_sites

    model, params = _cubic_rbm(fw)
    problem, probes = _problem(fw, model, params)
    assert "h" in summable_sites(problem, problem.info.init_params, probes())
    assert "h" not in summable_sites(problem, problem.info.init_params, probes(), fractional=True)
    x = fw.array(VS[:32].astype(np.float32))
    with pytest.raises(ValueError, match=r"rao_blackwell=True.*\['h'\]"):
        ebm_ppl.fit_unnormalized(model, x, ebm_ppl.PCD(num_chains=10, rao_blackwell=True), num_steps=2,
                                 batch_size=8, progress_bar=False)


def test_needs_a_latent_site_and_a_bool(fw):
    def visible_only(v):
        b = fw.param("b", fw.zeros(V))
        with fw.plate("data", v.shape[0]):
            v = fw.sample("v", fw.dist.Bernoulli(0.5).expand([V]).to_event(1), obs=v)
            ebm_ppl.factor("bias", (v * b).sum(-1))

    x = fw.array(VS[:32].astype(np.float32))
    with pytest.raises(ValueError, match="CD\\(rao_blackwell=True\\): the model has no latent site"):
        ebm_ppl.fit_unnormalized(visible_only, x, ebm_ppl.CD(rao_blackwell=True), num_steps=2, batch_size=8,
                                 progress_bar=False)
    for cls in (ebm_ppl.CD, ebm_ppl.PCD, ebm_ppl.PT, ebm_ppl.FPCD, ebm_ppl.ReplayBuffer):
        with pytest.raises(ValueError, match="rao_blackwell must be True or False"):
            cls(rao_blackwell="yes")
        assert "rao_blackwell=True" in repr(cls(rao_blackwell=True))


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["cd", "pcd"])
def test_rao_blackwellized_fit_reaches_the_true_likelihood(fw, estimator):
    """CD-1 and PCD-1 with conditional means: the exact log-likelihood of the fit is within
    0.02 nats of the data-generating parameters' (the criterion of test_latent's PCD test;
    the MLE lies above the truth on training data). CD-1 is biased, but on this small RBM its
    fixed point is close to the MLE."""
    (W0, B0, C0), x = small_rbm_truth_and_data()
    est = (ebm_ppl.PCD(num_chains=200, num_steps=1, rao_blackwell=True) if estimator == "pcd"
           else ebm_ppl.CD(num_steps=1, rao_blackwell=True))
    result = ebm_ppl.fit_unnormalized(rbm_model(fw, V, H), fw.array(x), est, optimizer=fw.adam_decay(0.05, 0.999),
                                      num_steps=1500, batch_size=300, progress_bar=False)
    P = {k: fw.to_numpy(v).astype(float) for k, v in result.params.items()}
    gap = small_rbm_mean_loglik(x, W0, B0, C0) - small_rbm_mean_loglik(x, P["W"], P["b"], P["c"])
    assert gap < 0.02, gap
