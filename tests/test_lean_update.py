"""The update computes what is read, once (issue 25, steady state): BlockGibbs' logged step
gives the same draws as its step and log p̃ of the new chains; the history's negative-phase
log density is the chains' own; a chunk with a failed update, run again up to it, ends
where an uninterrupted fit of the applied updates ends."""

import numpy as np
import pytest

import ebm_ppl
from ebm_ppl._problem import PROBE_SEED, Problem, run_kernel
from ebm_ppl.backend import get_backend
from ebm_ppl.samplers import BlockGibbs, build_kernel
from models import ising_model, rbm_model

EVEN = np.arange(9) % 2 == 0


def _problem(fw, model, data):
    be = get_backend(fw.name)
    data = be.as_data(data)
    info = be.compile_model(model, data, (), {})
    problem = Problem(be.ops, info)
    like = next(iter(info.data_to_values(data).values()))
    return be, info, problem, like, problem.probe(be.ops.seed(PROBE_SEED, like))


def _cubic_ising(fw):
    """Fields on s**3 for s = 2x − 1: right values on {0, 1}, not affine in x: the rows path."""
    def model(x):
        J = fw.param("J", fw.array(np.full(9, 0.3)))
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.Bernoulli(0.5).expand([9]).to_event(1), obs=x)
            s = (2 * x - 1) ** 3
            ebm_ppl.factor("f", (s * J).sum(-1))

    return model


CASES = {  # model, data width, blocks
    "rbm": (lambda fw: rbm_model(fw, 6, 4), 6, ["h", "v"]),
    "ising_checkerboard": (lambda fw: ising_model(fw, np.full(12, 0.4), np.full(9, -0.2)), 9,
                           [{"x": EVEN}, {"x": ~EVEN}]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("num_steps", [1, 3])
def test_logged_step_repeats_the_draws_and_gives_the_log_density(fw, case, num_steps):
    make, width, blocks = CASES[case]
    x = (np.random.default_rng(0).random((16, width)) < 0.5).astype(np.float32)
    be, info, problem, like, probe = _problem(fw, make(fw), fw.array(x))
    ops = be.ops
    kernel = build_kernel(BlockGibbs(blocks), ops, list(info.sites.values()), probe=probe)
    assert set(kernel.paths) == {"gradient"} and kernel.step_logged is not None
    rng = np.random.default_rng(1)
    params = {k: v + ops.from_numpy(rng.normal(0, 0.5, tuple(v.shape)), v.dtype, v)
              for k, v in info.init_params.items()}
    target = problem.logdensity_fn(params)
    start = problem.init_position(ops.seed(2, like), 16, "uniform")
    plain = run_kernel(ops, kernel, ops.seed(3, like), start, kernel.init(start), target, num_steps)
    logged = run_kernel(ops, kernel, ops.seed(3, like), start, kernel.init(start), target, num_steps, logged=True)
    for n in start:
        np.testing.assert_array_equal(ops.to_numpy(plain.position[n]), ops.to_numpy(logged.position[n]))
    want = ops.to_numpy(target(logged.position))
    np.testing.assert_allclose(ops.to_numpy(logged.log_density), want, rtol=1e-5, atol=1e-4)


def test_rows_path_has_no_logged_step(fw):
    x = (np.random.default_rng(0).random((16, 9)) < 0.5).astype(np.float32)
    be, info, problem, like, probe = _problem(fw, _cubic_ising(fw), fw.array(x))
    kernel = build_kernel(BlockGibbs([{"x": EVEN}, {"x": ~EVEN}]), be.ops, list(info.sites.values()), probe=probe)
    assert kernel.paths == ("rows", "rows") and kernel.step_logged is None
    start = problem.init_position(be.ops.seed(2, like), 16, "uniform")
    out = run_kernel(be.ops, kernel, be.ops.seed(3, like), start, (), problem.logdensity_fn(info.init_params), 1,
                     logged=True)
    assert out.log_density is None


@pytest.mark.parametrize("case", ["rbm", "cubic"])
def test_history_negative_log_density_is_that_of_the_chains(fw, case):
    """With a learning rate too small to move log p̃, the last update's negative-phase
    statistic is the mean log p̃ of the chains the fit returns (the sampler's own value on
    the gradient path, the model's on the rows path)."""
    if case == "rbm":
        model, x, blocks = rbm_model(fw, 6, 4), np.random.default_rng(0).random((40, 6)) < 0.5, ["h", "v"]
    else:
        model, x, blocks = _cubic_ising(fw), np.random.default_rng(0).random((40, 9)) < 0.5, [{"x": EVEN},
                                                                                               {"x": ~EVEN}]
    data = fw.array(x.astype(np.float32))
    result = ebm_ppl.fit_unnormalized(model, data, ebm_ppl.PCD(num_chains=30, num_steps=2), BlockGibbs(blocks),
                                      optimizer=fw.sgd(1e-9), num_steps=5, batch_size=20, progress_bar=False)
    be = get_backend(fw.name)
    info = be.compile_model(model, be.as_data(data), (), {})
    ld = be.ops.to_numpy(info.log_density(info.unconstrain(result.params), result.chains))
    assert result.history["negative_log_density"][-1] == pytest.approx(float(np.mean(ld)), rel=1e-5, abs=1e-4)


def test_a_chunk_with_a_failed_update_ends_as_a_fit_of_the_applied_updates(fw):
    """SGD with a huge learning rate overflows mu at the 4th update, inside the fit's second
    chunk (chunks grow from one update): the returned parameters and chains are those of an
    uninterrupted fit of the updates applied, bit for bit."""
    def model(x):
        mu = fw.param("mu", fw.array(0.0))
        with fw.plate("data", x.shape[0]):
            fw.sample("x", fw.dist.Normal(0.0, 1.0), obs=x)
            ebm_ppl.factor("tilt", mu * x)

    data = fw.array(np.full((20,), 5.0, np.float32))
    kw = dict(estimator=ebm_ppl.PCD(num_chains=20), optimizer=fw.sgd(1e13), progress_bar=False)
    with pytest.raises(FloatingPointError) as info:
        ebm_ppl.fit_unnormalized(model, data, num_steps=10, **kw)
    failed = info.value.result
    n = failed.state.num_updates
    assert 2 <= n < 10 and len(failed.history["loss"]) == n
    fw.clear()
    whole = ebm_ppl.fit_unnormalized(model, data, num_steps=n, **kw)
    assert float(fw.to_numpy(failed.params["mu"])) == float(fw.to_numpy(whole.params["mu"]))
    np.testing.assert_array_equal(fw.to_numpy(failed.chains["x"]), fw.to_numpy(whole.chains["x"]))
    np.testing.assert_array_equal(failed.history["loss"], whole.history["loss"])
