"""One-hot sites (issue 24): Pyro's ``OneHotCategorical`` moved by ``sampler="auto"`` (Gibbs
over the K states of each group), enumerated by exact ``log_partition`` / ``log_likelihood``,
drawn by ``sample``; the refusals name the site and say what moves it.

NumPyro has no one-hot distribution (``numpyro.distributions`` has ``Categorical`` but no
``OneHotCategorical``), so the model tests run on Pyro; the Gibbs update itself is written
once over the backend's ops and is checked on both backends against an exact target."""

import itertools

import numpy as np
import pytest

import ebm_ppl
from ebm_ppl.backend import SiteInfo, get_backend

VS = np.array(list(itertools.product([0, 1], repeat=6)), dtype=np.float64)  # (64, 6)


def _target(xp, A, c):
    """log p̃ of two one-hot groups of 3 states: h0ᵀ A h1 + c·h (per chain)."""

    def logdensity(position):
        h = position["h"]
        return ((h[:, 0, :] @ A) * h[:, 1, :]).sum(-1) + (h * c).sum(-1).sum(-1)

    return logdensity


def test_gibbs_one_hot_update_draws_the_exact_distribution(fw):
    """Gibbs over a (2, 3) one-hot site whose two groups interact: after 15 sweeps the 9 joint
    states of 4000 chains have the exact frequencies (binomial sd <= 0.008; tolerance 0.035),
    and every row stays one-hot. Both backends' ops run the same update."""
    ops = get_backend(fw.name).ops
    rng = np.random.default_rng(0)
    A, c = rng.normal(0, 1.0, (3, 3)), rng.normal(0, 0.5, (2, 3))
    like = fw.array(np.zeros(1))
    site = SiteInfo("h", (2, 3), True, False, None, None, "OneHot()", like.dtype, True)
    kernel = ebm_ppl.samplers.Gibbs().build(ops, [site])
    logdensity = _target(ops.xp, fw.array(A), fw.array(c))
    num_chains = 4000
    start = np.eye(3)[np.zeros((num_chains, 2), int)]  # every chain in one state
    position = {"h": fw.array(start)}
    aux = kernel.init(position)
    key = ops.seed(0, like)
    step = ops.jit(lambda k, p, a: kernel.step(k, p, a, logdensity))
    for _ in range(15):
        key, sub = ops.split(key, 2)
        position, aux, _ = step(sub, position, aux)
    h = fw.to_numpy(position["h"]).astype(np.float64)
    assert h.shape == (num_chains, 2, 3)
    assert set(np.unique(h)) <= {0.0, 1.0} and np.all(h.sum(-1) == 1)
    got = np.bincount(h[:, 0].argmax(-1) * 3 + h[:, 1].argmax(-1), minlength=9) / num_chains
    logp = np.array([A[i, j] + c[0, i] + c[1, j] for i in range(3) for j in range(3)])
    want = np.exp(logp - np.logaddexp.reduce(logp))
    assert np.abs(got - want).max() < 0.035, (got, want)


# ---- a Pyro RBM whose hidden layer is one OneHotCategorical of K = 3 states (6 visible units)
def one_hot_rbm(W_init):
    import pyro
    import pyro.distributions as dist
    import torch

    def rbm(v):
        W = pyro.param("W", torch.as_tensor(W_init, dtype=torch.float32))
        b = pyro.param("b", torch.zeros(6))
        c = pyro.param("c", torch.zeros(3))
        with pyro.plate("data", v.shape[0]):
            v = pyro.sample("v", dist.Bernoulli(0.5).expand([6]).to_event(1), obs=v)
            h = pyro.sample("h", dist.OneHotCategorical(logits=torch.zeros(3)))
            ebm_ppl.factor("rbm", ((v @ W) * h).sum(-1) + (v * b).sum(-1) + (h * c).sum(-1))

    return rbm


def _free(W, b, c):
    """log Σ_h p̃(v, h) for the 64 visible states, without the base constants."""
    return VS @ b + np.logaddexp.reduce(VS @ W + c, axis=1)


def exact_mean_loglik(x, W, b, c):
    """Exact mean log-likelihood of binary rows ``x`` (64 x 3 joint states enumerated)."""
    free = _free(W, b, c)
    idx = (x @ (2 ** np.arange(6)[::-1])).astype(int)
    return float(free[idx].mean() - np.logaddexp.reduce(free))


def exact_log_z(W, b, c):
    """log Z with the base measure (Bernoulli(0.5)^6 x uniform over 3 states) included."""
    return float(np.logaddexp.reduce(_free(W, b, c)) + 6 * np.log(0.5) - np.log(3))


def truth_and_data(num_rows=3000):
    r = np.random.default_rng(0)
    W, b, c = r.normal(0, 1.5, (6, 3)), r.normal(0, 0.5, 6), r.normal(0, 0.5, 3)
    free = _free(W, b, c)
    p = np.exp(free - np.logaddexp.reduce(free))
    x = VS[np.random.default_rng(2).choice(64, num_rows, p=p)]
    return (W, b, c), x.astype(np.float32)


def mle(x, inits):
    """The exact MLE (L-BFGS on the enumerated log-likelihood, best of the given starts)."""
    import torch

    xt = torch.as_tensor(x, dtype=torch.float64)
    vs = torch.as_tensor(VS)
    best = (-np.inf, None)
    for W0, b0, c0 in inits:
        theta = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (W0, b0, c0)]
        opt = torch.optim.LBFGS(theta, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-12,
                                line_search_fn="strong_wolfe")

        def loss():
            opt.zero_grad()
            W, b, c = theta
            free = lambda v: v @ b + torch.logsumexp(v @ W + c, dim=1)  # noqa: E731
            out = -(free(xt).mean() - torch.logsumexp(free(vs), dim=0))
            out.backward()
            return out

        for _ in range(5):
            opt.step(loss)
        params = [t.detach().numpy() for t in theta]
        ll = exact_mean_loglik(x, *params)
        if ll > best[0]:
            best = (ll, params)
    return best


def test_one_hot_site_is_enumerated_and_sampled():
    """At fixed parameters: exact log_partition and log_likelihood (the one-hot site summed
    over its 3 states) equal the enumeration by hand; ``sample`` (default sampler) draws the
    hidden state and the visible layer with their exact marginal frequencies (4000 draws,
    binomial sd <= 0.008; tolerance 0.035)."""
    import pyro
    import torch

    pyro.clear_param_store()
    (W, b, c), x = truth_and_data(200)
    params = {"W": torch.as_tensor(W, dtype=torch.float32), "b": torch.as_tensor(b, dtype=torch.float32),
              "c": torch.as_tensor(c, dtype=torch.float32)}
    model = one_hot_rbm(np.zeros((6, 3)))
    xt = torch.as_tensor(x)
    log_z = ebm_ppl.log_partition(model, params, xt[:5], method="exact")
    assert abs(log_z.estimate - exact_log_z(W, b, c)) < 1e-4
    ll = ebm_ppl.log_likelihood(model, params, xt[:20]).numpy()
    free = _free(W, b, c)
    want = free[(x[:20] @ (2 ** np.arange(6)[::-1])).astype(int)] - np.logaddexp.reduce(free)
    np.testing.assert_allclose(ll, want, atol=1e-4)
    draws = ebm_ppl.sample(model, params, xt[:1], num_samples=4000, num_chains=400, num_warmup=200, thinning=5)
    h = draws["h"].numpy().astype(np.float64)
    assert np.all(h.sum(-1) == 1)
    joint = (VS @ b)[:, None] + VS @ W + c  # (64, 3) log p̃ up to constants
    p = np.exp(joint - np.logaddexp.reduce(joint.ravel()))
    np.testing.assert_allclose(h.mean(0), p.sum(0), atol=0.035)
    np.testing.assert_allclose(draws["v"].numpy().mean(0), p.sum(1) @ VS, atol=0.035)


def test_one_hot_refusals_name_the_site_and_what_moves_it():
    """A sampler that cannot move a one-hot site says Gibbs() or sampler='auto' does; a site
    that "auto" cannot move is refused without suggesting sampler='auto'."""
    import pyro
    import pyro.distributions as dist
    import torch

    pyro.clear_param_store()
    _, x = truth_and_data(50)
    with pytest.raises(TypeError, match=r"site 'h'.*OneHotCategorical.*Gibbs\(\) or sampler='auto'"):
        ebm_ppl.fit_unnormalized(one_hot_rbm(np.zeros((6, 3))), torch.as_tensor(x),
                                 sampler=ebm_ppl.samplers.GibbsWithGradients(), num_steps=1, progress_bar=False)

    def counts(n):
        rate = pyro.param("rate", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", n.shape[0]):
            pyro.sample("n", dist.Poisson(rate), obs=n)

    with pytest.raises(TypeError, match="sampler='auto' cannot move site 'n'") as err:
        ebm_ppl.fit_unnormalized(counts, torch.tensor([0.0, 2.0, 1.0]), num_steps=1, progress_bar=False)
    assert "or sampler='auto'" not in str(err.value)


@pytest.mark.slow  # an accuracy / integration test: CI's slow pass runs it
def test_one_hot_rbm_fits_to_the_exact_mle():
    """Acceptance (issue 24): the one-hot RBM fits with the default estimator settings'
    sampler ("auto": Gibbs over h's 3 states, block Gibbs on v) and its exact mean
    log-likelihood comes within 0.02 nats of the exact MLE's (best of L-BFGS runs from the
    truth and from the fit)."""
    import pyro
    import torch

    pyro.clear_param_store()
    (W0, b0, c0), x = truth_and_data()
    W_init = 0.01 * np.random.default_rng(1).normal(size=(6, 3))
    result = ebm_ppl.fit_unnormalized(
        one_hot_rbm(W_init), torch.as_tensor(x), ebm_ppl.PCD(num_chains=200, num_steps=1),
        optimizer=pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.05},
                                            "gamma": 0.999}),
        num_steps=1500, batch_size=300, progress_bar=False)
    P = {k: v.detach().numpy().astype(np.float64) for k, v in result.params.items()}
    fitted = exact_mean_loglik(x, P["W"], P["b"], P["c"])
    best, _ = mle(x, [(W0, b0, c0), (P["W"], P["b"], P["c"])])
    print(f"one-hot RBM: fitted mean log-likelihood {fitted:.4f}, exact MLE {best:.4f}, gap {best - fitted:.4f}")
    assert tuple(result.chains["h"].shape) == (200, 3)
    assert best - fitted < 0.02, (fitted, best)
