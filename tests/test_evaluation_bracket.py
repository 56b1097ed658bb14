"""Exact evaluation with a layer summed out analytically, base-rate AIS, the bidirectional
bracket and the sanity checks (EstimateWarning), against brute-force enumeration in numpy.

Statistical bounds are Monte Carlo standard errors: a bracket side is allowed 4 of its
reported standard errors plus 0.02 nats (the error of the standard error itself at 100
chains) on the wrong side of the exact value.
"""

import itertools

import numpy as np
import pytest

import ebm_ppl
from models import random_rbm, rbm_exact_log_z, rbm_log_marginal, rbm_params, run
from models import rbm_model_at as rbm_model


def brute_log_z(W, b, c):
    nv, nh = W.shape
    V = np.array(list(itertools.product([0, 1], repeat=nv)), float)
    H = np.array(list(itertools.product([0, 1], repeat=nh)), float)
    lp = (V @ W) @ H.T + (V @ b)[:, None] + (H @ c)[None] + (nv + nh) * np.log(0.5)
    return float(np.logaddexp.reduce(lp.ravel()))


def peaked_rbm(seed=0, nv=12, nh=4, scale=3.0):
    W, b, c = random_rbm(nv, nh, seed)
    return scale * W, b, c


def test_public_names_and_fields():
    assert "EstimateWarning" in ebm_ppl.__all__ and issubclass(ebm_ppl.EstimateWarning, UserWarning)
    assert ebm_ppl.LogZ._fields[:4] == ("estimate", "stderr", "lower", "upper")
    assert ebm_ppl.LogZ(1.0, 0.5).estimate == 1.0


def test_summable_sites_are_measured(fw):
    """An RBM's layers are summable; a Boltzmann machine with visible-visible couplings is not."""
    from ebm_ppl._problem import PROBE_SEED, compile_problem
    from ebm_ppl.evaluation.analytic import summable_sites

    W, b, c = random_rbm(6, 3, 0)
    problem, _ = compile_problem(rbm_model(fw, W, b, c), rbm_params(fw, W, b, c), fw.array(np.zeros((1, 6))),
                                 None, (), None)
    probes = problem.probe(problem.ops.seed(PROBE_SEED, problem.ops.first_leaf(problem.info.init_params)))()
    assert summable_sites(problem, problem.info.init_params, probes) == ["v", "h"]

    def coupled(v):
        L = fw.param("L", fw.array(0.1 * np.ones((6, 6))))
        with fw.plate("data", v.shape[0]):
            v = fw.sample("v", fw.dist.Bernoulli(0.5).expand([6]).to_event(1), obs=v)
            ebm_ppl.factor("pairs", ((v @ L) * v).sum(-1))

    problem, _ = compile_problem(coupled, {"L": fw.array(0.1 * np.ones((6, 6)))}, fw.array(np.zeros((1, 6))),
                                 None, (), None)
    probes = problem.probe(problem.ops.seed(PROBE_SEED, problem.ops.first_leaf(problem.info.init_params)))()
    assert summable_sites(problem, problem.info.init_params, probes) == []


def test_exact_sums_a_layer_out(fw):
    """24 visible x 6 hidden: 2**30 joint states, too many to enumerate; the visible layer
    is summed out analytically and the 64 hidden states enumerated."""
    W, b, c = random_rbm(24, 6, 1)
    log_z = ebm_ppl.log_partition(rbm_model(fw, W, b, c), rbm_params(fw, W, b, c), fw.array(np.zeros((1, 24))))
    assert log_z.stderr == 0.0 and log_z.lower == log_z.upper == log_z.estimate
    assert abs(log_z.estimate - rbm_exact_log_z(W, b, c)) < 1e-3
    W, b, c = peaked_rbm()
    log_z = ebm_ppl.log_partition(rbm_model(fw, W, b, c), rbm_params(fw, W, b, c), fw.array(np.zeros((1, 12))))
    assert abs(log_z.estimate - brute_log_z(W, b, c)) < 1e-3


def test_log_likelihood_sums_out_a_wide_hidden_layer(fw):
    """4 visible x 40 hidden: 2**40 hidden states, summed out analytically (softplus)."""
    W, b, c = random_rbm(4, 40, 2)
    v = np.random.default_rng(3).integers(0, 2, (9, 4)).astype(np.float64)
    ll = fw.to_numpy(ebm_ppl.log_likelihood(rbm_model(fw, W, b, c), rbm_params(fw, W, b, c), fw.array(v)))
    V = np.array(list(itertools.product([0, 1], repeat=4)), float)
    log_z = np.logaddexp.reduce(rbm_log_marginal(V, W, b, c))  # by the 16 visible states
    np.testing.assert_allclose(ll, rbm_log_marginal(v, W, b, c) - log_z, atol=2e-3)


def test_sample_exact_matches_enumeration(fw):
    """Exact draws (hidden state by its marginal, visibles given it) have the model's
    visible means: 2000 draws, 5 standard errors."""
    from ebm_ppl._problem import compile_problem
    from ebm_ppl.evaluation.exact import sample_exact

    W, b, c = peaked_rbm(nv=6, nh=3, scale=1.5)
    problem, ex = compile_problem(rbm_model(fw, W, b, c), rbm_params(fw, W, b, c), fw.array(np.zeros((1, 6))),
                                  None, (), None)
    like = problem.info.data_to_values(ex)["v"]
    draws = sample_exact(problem, problem.info.init_params, like, 2000, 0, summed="v")
    v = np.asarray(fw.to_numpy(draws["v"]), float)
    V = np.array(list(itertools.product([0, 1], repeat=6)), float)
    p = np.exp(rbm_log_marginal(V, W, b, c) - rbm_exact_log_z(W, b, c))
    mean = p @ V
    se = np.sqrt(mean * (1 - mean) / len(v))
    assert np.all(np.abs(v.mean(0) - mean) < 5 * se + 1e-3)


@pytest.mark.slow  # an accuracy / integration test: CI's slow pass runs it
@pytest.mark.parametrize("init", ["base", "data"])
def test_bidirectional_brackets_exact(fw, init):
    W, b, c = peaked_rbm(seed=4, scale=2.0)
    exact = brute_log_z(W, b, c)
    x = fw.array(np.random.default_rng(5).integers(0, 2, (200, 12)))
    log_z, caught = run(ebm_ppl.log_partition, rbm_model(fw, W, b, c), rbm_params(fw, W, b, c), x,
                        method="bidirectional", num_chains=100, num_temperatures=200,
                        init="base" if init == "base" else x)
    assert log_z.upper_is_exact_start
    assert log_z.forward - 4 * log_z.lower_stderr - 0.02 < exact < log_z.reverse + 4 * log_z.upper_stderr + 0.02 \
        or caught, (log_z, exact)
    assert abs(log_z.estimate - exact) < 0.1
    assert log_z.data_bound <= exact + 1e-6


@pytest.mark.slow  # an accuracy / integration test: CI's slow pass runs it
def test_forward_ais_below_data_bound_warns(fw):
    """One annealing step from the uniform base on a sharply peaked RBM: the estimate
    falls below log Σ_data p̃(x), and the warning says so and what to do."""
    W, b, c = peaked_rbm(seed=6, scale=6.0)
    V = np.array(list(itertools.product([0, 1], repeat=12)), float)
    exact = brute_log_z(W, b, c)
    top = V[np.argsort(-rbm_log_marginal(V, W, b, c))[:20]]  # the model's modes as "data"
    log_z, caught = run(ebm_ppl.log_partition, rbm_model(fw, W, b, c), rbm_params(fw, W, b, c), fw.array(top),
                        method="ais", num_chains=20, num_temperatures=1, rng_seed=1)
    assert log_z.data_bound <= exact + 1e-6
    assert log_z.upper == float("inf")
    if log_z.estimate + 3 * log_z.stderr < log_z.data_bound:
        assert caught and "not to be trusted" in str(caught[0].message) and "init=" in str(caught[0].message)
    else:  # the estimate is consistent with the bound
        assert not caught


@pytest.mark.slow  # an accuracy / integration test: CI's slow pass runs it
def test_bidirectional_disagreement_warns(fw):
    """Plain importance sampling both ways (schedule [0, 1]) on a sharply peaked RBM: the
    forward side misses the modes, the reverse side overshoots, and the warning names the
    gap (it fires exactly when the sides are 3 combined standard errors apart)."""
    W, b, c = peaked_rbm(seed=7, nv=16, nh=4, scale=8.0)
    log_z, caught = run(ebm_ppl.log_partition, rbm_model(fw, W, b, c), rbm_params(fw, W, b, c),
                        fw.array(np.zeros((1, 16))), method="bidirectional", num_chains=20, schedule=[0.0, 1.0])
    gap = log_z.reverse - log_z.forward
    assert (abs(gap) > 3 * np.hypot(log_z.lower_stderr, log_z.upper_stderr)) == any(
        "disagree" in str(w.message) for w in caught)
    assert caught, log_z


def test_log_likelihood_above_zero_warns(fw):
    W, b, c = random_rbm(6, 3, 8)
    model, params, x = rbm_model(fw, W, b, c), rbm_params(fw, W, b, c), fw.array(np.zeros((4, 6)))
    _, caught = run(ebm_ppl.log_likelihood, model, params, x, log_z=-50.0)
    assert caught and "above 0" in str(caught[0].message)
    _, caught = run(ebm_ppl.log_likelihood, model, params, x, log_z=rbm_exact_log_z(W, b, c))
    assert not caught


def test_bad_init(fw):
    W, b, c = random_rbm(6, 3, 8)
    with pytest.raises(ValueError, match="init"):
        ebm_ppl.log_partition(rbm_model(fw, W, b, c), rbm_params(fw, W, b, c), fw.array(np.zeros((1, 6))),
                              method="ais", init="uniform")


def test_base_rate_start_refuses_a_base_that_depends_on_other_sites(fw):
    """v's base Bernoulli(logits = h U) depends on the latent h: a factorized base-rate
    start for v would leave p₀(v, h) unnormalized (AIS gave -5.7 against log Z 0.62, caught
    here only by the data bound), so it is refused; the start from the base draws (v, h)
    jointly and lands on log Z (5 reported standard errors plus 0.01)."""
    rng = np.random.default_rng(0)
    U = rng.normal(0, 2, (3, 6)).astype(np.float32)
    W = rng.normal(0, 0.5, (6, 3)).astype(np.float32)

    def model(data):
        w = fw.param("W", fw.array(W))
        with fw.plate("data", data.shape[0]):
            h = fw.sample("h", fw.dist.Bernoulli(0.5 * fw.array(np.ones(3))).to_event(1))
            v = fw.sample("v", fw.dist.Bernoulli(logits=h @ fw.array(U)).to_event(1), obs=data)
            ebm_ppl.factor("f", ((v @ w) * h).sum(-1))

    states = lambda n: np.array(list(itertools.product([0.0, 1.0], repeat=n)))  # noqa: E731
    v, h = states(6), states(3)
    lg = h @ U  # (8, 6)
    log_base = 3 * np.log(0.5) + (v[:, None, :] * lg - np.logaddexp(0, lg)).sum(-1)  # (64, 8)
    log_z = np.logaddexp.reduce((log_base + np.einsum("vi,ij,hj->vh", v, W, h)).ravel())
    x = fw.array(rng.integers(0, 2, (50, 6)))
    with pytest.raises(NotImplementedError, match="depends on the values of other sites"):
        ebm_ppl.log_partition(model, {"W": fw.array(W)}, x[:1], method="ais", init=x, num_temperatures=10)
    out = ebm_ppl.log_partition(model, {"W": fw.array(W)}, x[:1], method="ais", num_temperatures=10,
                                num_chains=1000)
    assert abs(out.estimate - log_z) < 5 * out.stderr + 0.01


def test_latent_whose_base_depends_on_observed_is_sampled_not_summed(fw):
    """h's base Bernoulli(logits = v U) depends on the observed v: one set of base logits
    for h cannot serve every row, so AIS does not sum h out (it raised, naming init=<data>,
    with init='base') but samples it with the kernel, and lands on log Z (5 reported
    standard errors plus 0.01)."""
    rng = np.random.default_rng(0)
    U = rng.normal(0, 2, (6, 3)).astype(np.float32)
    W = rng.normal(0, 0.5, (6, 3)).astype(np.float32)

    def model(data):
        w = fw.param("W", fw.array(W))
        with fw.plate("data", data.shape[0]):
            v = fw.sample("v", fw.dist.Bernoulli(0.5 * fw.array(np.ones(6))).to_event(1), obs=data)
            h = fw.sample("h", fw.dist.Bernoulli(logits=v @ fw.array(U)).to_event(1))
            ebm_ppl.factor("f", ((v @ w) * h).sum(-1))

    states = lambda n: np.array(list(itertools.product([0.0, 1.0], repeat=n)))  # noqa: E731
    v, h = states(6), states(3)
    lg = v @ U  # (64, 3)
    log_base = 6 * np.log(0.5) + (h[None] * lg[:, None] - np.logaddexp(0, lg)[:, None]).sum(-1)  # (64, 8)
    log_z = np.logaddexp.reduce((log_base + np.einsum("vi,ij,hj->vh", v, W, h)).ravel())
    x = fw.array(rng.integers(0, 2, (50, 6)))
    out = ebm_ppl.log_partition(model, {"W": fw.array(W)}, x[:1], method="ais", num_temperatures=10,
                                num_chains=1000)
    assert abs(out.estimate - log_z) < 5 * out.stderr + 0.01


# ---- MNIST-5k, 784 x 20 (slow) -------------------------------------------------------------


def plain_pcd_rbm(num_hidden=20, num_epochs=10, lr=0.05, seed=0):
    """A 784 x 20 RBM trained on MNIST-5k by a plain hand-written numpy PCD-1 loop (SGD,
    100 persistent chains, batches of 100), as a user might write it."""
    from ebm_ppl.datasets import load_mnist5k

    x, _ = load_mnist5k()
    rng = np.random.default_rng(seed)
    W = 0.01 * rng.standard_normal((784, num_hidden))
    p = (x.sum(0) + 1) / (len(x) + 2)
    b, c = np.log(p) - np.log1p(-p), np.zeros(num_hidden)
    chains = (rng.random((100, 784)) < p).astype(float)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    for _ in range(num_epochs):
        for i in range(0, len(x), 100):
            v = x[i:i + 100]
            ph = sig(v @ W + c)
            h = (rng.random(ph.shape) < sig(chains @ W + c)).astype(float)
            chains = (rng.random(chains.shape) < sig(h @ W.T + b)).astype(float)
            pn = sig(chains @ W + c)
            W += lr * (v.T @ ph / len(v) - chains.T @ pn / len(chains))
            b += lr * (v.mean(0) - chains.mean(0))
            c += lr * (ph.mean(0) - pn.mean(0))
    return x, W, b, c


def with_spurious_mode(W, b, c, log_z, strength=4.0, excess=20.0, seed=1):
    """Hidden unit 0 rewired to a random pattern u far from the digits (half the pixels
    on), with its bias set so that the mode at (v = u, h_0 = 1) holds about e**excess
    times the mass of the rest (``log_z``: the original model's, base measures included).
    (Measured: base-rate AIS with 500 temperatures finds this mode, its field being
    strong at every temperature; the bracket then holds the exact value.)"""
    u = (np.random.default_rng(seed).random(784) < 0.5).astype(float)
    W, c = W.copy(), c.copy()
    W[:, 0] = strength * (2 * u - 1)
    c[0] = -(W[:, 0] @ u + b @ u) + log_z + 804 * np.log(2) + excess
    return W, b, c


@pytest.mark.slow
def test_mnist_784x20_exact_and_bracket(fw):
    x, W, b, c = plain_pcd_rbm()
    xs = fw.array(x)
    for name in ["trained", "spurious"]:
        W_, b_, c_ = (W, b, c) if name == "trained" else with_spurious_mode(W, b, c, exact)
        model, params = rbm_model(fw, W_, b_, c_), rbm_params(fw, W_, b_, c_)
        # 2**20 hidden states enumerated, the visibles summed (its time is reported by
        # benchmarks/mnist_rbm.py, contender exact20, not asserted here: issue 26)
        exact = ebm_ppl.log_partition(model, params, xs[:1]).estimate
        lz, caught = run(ebm_ppl.log_partition, model, params, xs, method="bidirectional", init=xs,
                         num_chains=100, num_temperatures=500)
        assert lz.upper_is_exact_start and lz.data_bound <= exact + 1e-3
        inside = (lz.forward - 4 * lz.lower_stderr - 0.02 < exact < lz.reverse + 4 * lz.upper_stderr + 0.02)
        assert inside or any("disagree" in str(w.message) for w in caught), (name, lz, exact)
        if name == "trained":  # no spurious mode: base-rate AIS within 1 nat (issue 12)
            assert abs(lz.forward - exact) < 1.0, (lz, exact)


@pytest.mark.slow  # an accuracy / integration test: CI's slow pass runs it
def test_bidirectional_from_data_keeps_the_larger_forward_side(fw):
    """With a base-rate start the forward side also runs from the sites' base measures (the
    same random stream) and keeps the larger of the two stochastic lower bounds: a reverse
    side started near the data that lies below a forward run from the base is exposed."""
    W, b, c = peaked_rbm(seed=4, scale=2.0)
    x = fw.array(np.random.default_rng(5).integers(0, 2, (200, 12)))
    model, params = rbm_model(fw, W, b, c), rbm_params(fw, W, b, c)
    kw = dict(num_chains=30, num_temperatures=20, rng_seed=3)
    both, _ = run(ebm_ppl.log_partition, model, params, x, method="bidirectional", init=x, **kw)
    from_data, _ = run(ebm_ppl.log_partition, model, params, x, method="ais", init=x, **kw)
    from_base, _ = run(ebm_ppl.log_partition, model, params, x, method="ais", init="base", **kw)
    assert both.forward >= from_data.estimate  # the data-start run is the same run in both calls
    if fw.name == "numpyro":  # the base-start run too (Pyro's one stateful stream has moved on)
        assert both.forward == max(from_data.estimate, from_base.estimate)
        assert both.lower_stderr == (from_data if from_data.estimate >= from_base.estimate else from_base).stderr
