"""The backend contract (``ebm_ppl.backend.Ops`` / ``Backend`` / ``ModelInfo``), member by
member, on both backends: every member the core calls exists with the documented
signature and does what its docstring says on small inputs."""

import inspect

import numpy as np
import pytest

import ebm_ppl
from ebm_ppl.backend import Backend, ModelInfo, Ops, get_backend

from models import ising_model, ising_sample


def _protocol_members(proto):
    return {n for n in dir(proto) if not n.startswith("_")} | set(getattr(proto, "__annotations__", {}))


@pytest.fixture
def be(backend):
    return get_backend(backend)


def test_every_member_is_implemented_with_the_documented_signature(be):
    ops = be.ops
    assert isinstance(ops, Ops) and isinstance(be, Backend)
    for name in _protocol_members(Ops):
        assert hasattr(ops, name), name
        want = getattr(Ops, name, None)
        if inspect.isfunction(want):
            got = inspect.signature(getattr(ops, name))
            assert list(got.parameters) == list(inspect.signature(want).parameters)[1:], name
    public = {n for n in dir(type(ops)) if not n.startswith("_")}
    assert public <= _protocol_members(Ops), f"undocumented ops members: {sorted(public - _protocol_members(Ops))}"
    for name in _protocol_members(Backend) - {"ops"}:
        got = inspect.signature(getattr(be, name))
        assert list(got.parameters) == list(inspect.signature(getattr(Backend, name)).parameters)[1:], name


def test_traced_and_the_optimizer_s_copy_of_the_parameters(be):
    """``Ops.traced``: NumPyro's update is one jitted program, Pyro's runs eagerly; where the
    optimizer state holds a copy of the parameters (NumPyro), ``params_of`` returns it."""
    ops = be.ops
    assert ops.traced is (ops.name == "numpyro")
    like = ops.asarray(0.0, None)
    params = {"w": ops.from_numpy(np.arange(3.0), like.dtype, like)}
    opt = be.make_optimizer(None)
    if ops.name == "numpyro":
        np.testing.assert_array_equal(ops.to_numpy(opt.params_of(opt.init(params))["w"]), np.arange(3.0))
    else:
        assert opt.params_of is None


def test_random_keys(be):
    ops = be.ops
    like = ops.asarray(0.0, None)
    key = ops.seed(3, like)
    state = ops.key_state(key)
    u = ops.to_numpy(ops.uniform(ops.split(key, 2)[0], (1000,), like))
    assert u.shape == (1000,) and 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.05
    again = ops.to_numpy(ops.uniform(ops.split(ops.key_from_state(state, like), 2)[0], (1000,), like))
    np.testing.assert_array_equal(u, again)  # a restored key replays its stream
    z = ops.to_numpy(ops.normal(ops.fork(key), (2000,), like))
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1
    b = ops.to_numpy(ops.bernoulli_logits(key, ops.asarray(np.array([-50.0, 50.0] * 100), like)))
    assert b.dtype == bool and not b[::2].any() and b[1::2].all()
    _, perms = ops.epoch_permutations(key, 7, 3)
    assert perms.shape == (3, 7) and all(sorted(p) == list(range(7)) for p in perms)
    chosen = ops.select_key(ops.asarray(True, None, bool_=True), key, ops.seed(4, like))
    assert chosen is not None


def test_arrays(be):
    ops, xp = be.ops, be.ops.xp
    like = ops.asarray(0.0, None)
    x = ops.from_numpy(np.arange(6.0).reshape(2, 3), like.dtype, like)
    assert ops.is_floating(x) and not ops.is_floating(ops.asarray([1], like, int_=True))
    assert ops.to_numpy(ops.astype(x, ops.int_dtype)).dtype.kind == "i"
    np.testing.assert_array_equal(ops.to_numpy(ops.zeros((2, 2), like.dtype, like)), np.zeros((2, 2)))
    idx = ops.asarray([2, 0], like, int_=True)
    np.testing.assert_array_equal(ops.to_numpy(ops.pick(x, idx)), [2.0, 3.0])
    y = ops.set_column(x, 1, ops.asarray([9.0, 9.0], like))
    np.testing.assert_array_equal(ops.to_numpy(y)[:, 1], [9, 9])
    np.testing.assert_array_equal(ops.to_numpy(x)[:, 1], [1, 4])  # a copy: x unchanged
    z = ops.set_rows(x, ops.asarray([1], like, int_=True), ops.asarray([[7.0, 7.0, 7.0]], like))
    np.testing.assert_array_equal(ops.to_numpy(z)[1], [7, 7, 7])
    np.testing.assert_array_equal(ops.to_numpy(x)[1], [3, 4, 5])
    lse = ops.to_numpy(ops.logsumexp(ops.asarray(np.array([[0.0, -np.inf, 1.0]]), like), -1))
    np.testing.assert_allclose(lse, [np.log(1 + np.e)], rtol=1e-6)
    m = float(ops.nanmean_scalars([ops.asarray(1.0, like), ops.asarray(float("nan"), like), ops.asarray(3.0, like)]))
    assert m == 2.0
    assert bool(ops.all_finite({"a": x, "b": (x,)})) and not bool(ops.all_finite({"a": x / 0.0}))
    assert ops.first_leaf({"a": x}) is x
    doubled = ops.map_host(lambda a: 2 * a, {"a": x})
    np.testing.assert_array_equal(ops.to_numpy(doubled["a"]), 2 * ops.to_numpy(x))
    copied = ops.copy_tree({"a": x})
    np.testing.assert_array_equal(ops.to_numpy(copied["a"]), ops.to_numpy(x))
    assert ops.stop_gradient({"a": x})["a"].shape == x.shape
    assert xp is not None


def test_transformations_and_loops(be):
    ops = be.ops
    like = ops.asarray(0.0, None)
    x = {"w": ops.asarray(np.array([1.0, -2.0]), like)}
    value, grads = ops.value_and_grad(lambda p: (p["w"] ** 2).sum())(x)
    assert float(value) == 5.0
    np.testing.assert_allclose(ops.to_numpy(grads["w"]), [2.0, -4.0])
    (value, aux), grads = ops.value_and_grad(lambda p: ((p["w"] ** 3).sum(), p["w"] * 2), has_aux=True)(x)
    np.testing.assert_allclose(ops.to_numpy(aux), [2.0, -4.0])
    np.testing.assert_allclose(ops.to_numpy(grads["w"]), [3.0, 12.0])
    assert float(ops.jit(lambda a: a * 3)(ops.asarray(2.0, like))) == 6.0
    assert float(ops.quick_jit(lambda a: a * 3)(ops.asarray(2.0, like))) == 6.0
    assert float(ops.cond(ops.asarray(False, None, bool_=True), lambda a: a + 1, lambda a: a - 1,
                          ops.asarray(0.0, like))) == -1.0
    assert float(ops.fori_loop(0, 4, lambda i, c: c + i, ops.asarray(0.0, like))) == 6.0
    assert tuple(ops.eval_shape(lambda a: a[None], ops.asarray(np.zeros(3), like)).shape) == (1, 3)


def test_sample_base_draws_sites_jointly(be, fw):
    """``sample_base`` draws from the joint base measure: x | z ~ N(z, 1) after z ~ N(0, 1)
    has corr(z, x) = 1/√2. Bound: 4000 draws, standard error of the sample correlation
    (1 - ρ²)/√n = 0.008; 0.05 is over 6 of them."""

    def model(x):
        c = fw.param("c", fw.array(0.0))
        with fw.plate("data", x.shape[0]):
            z = fw.sample("z", fw.dist.Normal(0.0, 1.0))
            fw.sample("x", fw.dist.Normal(z, 1.0), obs=x)
            ebm_ppl.factor("f", c * z)

    x = fw.array(np.zeros(3))
    info = be.compile_model(model, be.as_data(x), (), {})
    draws = info.sample_base(be.ops.seed(3, be.ops.asarray(0.0, None)), 4000)
    z, v = (be.ops.to_numpy(draws[n]).ravel() for n in ("z", "x"))
    assert abs(np.corrcoef(z, v)[0, 1] - 2 ** -0.5) < 0.05
    assert abs(z.std() - 1) < 0.1 and abs(v.std() - 2 ** 0.5) < 0.1


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_compile_model_gives_every_model_info_member(be, fw):
    x = fw.array(ising_sample(np.full(12, 0.2), np.zeros(9), 20, seed=0))
    info = be.compile_model(ising_model(fw), be.as_data(x), (), {})
    assert isinstance(info, ModelInfo)
    missing = [f for f in ModelInfo._fields if getattr(info, f) is None and f != "log_prior"]  # None: no prior
    assert missing == []
    ops = be.ops
    values = info.data_to_values(x)
    params = info.init_params
    params = {k: v + 0.1 for k, v in params.items()}
    ld = info.log_density(params, values)
    assert tuple(ld.shape) == (20,)
    ld2, base = info.log_density_parts(params, values)
    np.testing.assert_allclose(ops.to_numpy(ld2), ops.to_numpy(ld), rtol=1e-6)
    ld3, grads = info.log_density_grad(params, values, ["x"])
    np.testing.assert_allclose(ops.to_numpy(ld3), ops.to_numpy(ld), rtol=1e-6)
    _, want = ops.value_and_grad(lambda v: info.log_density(params, {"x": v["x"]}).sum())({"x": values["x"]})
    np.testing.assert_allclose(ops.to_numpy(grads["x"]), ops.to_numpy(want["x"]), rtol=1e-5, atol=1e-6)
    w = ops.from_numpy(np.linspace(-1, 1, 20), ld.dtype, ld)
    ld4, pgrads = info.weighted_param_grad(params, values, w)
    np.testing.assert_allclose(ops.to_numpy(ld4), ops.to_numpy(ld), rtol=1e-6)
    _, want = ops.value_and_grad(lambda p: (info.log_density(p, values) * w).sum())(params)
    for k in params:
        np.testing.assert_allclose(ops.to_numpy(pgrads[k]), ops.to_numpy(want[k]), rtol=1e-5, atol=1e-5)
    draws = info.sample_base(ops.seed(0, ld), 5)
    assert tuple(draws["x"].shape) == (5, 9)
    constrained = info.constrain(params)
    assert set(constrained) == set(params)
    snapshot = be.snapshot_params()
    be.restore_snapshot(snapshot)
    opt = be.make_optimizer(None)
    start = info.init_params
    state = opt.init(start)
    new, state, finite = opt.update({k: ops.asarray(np.ones(tuple(v.shape)), v) for k, v in start.items()},
                                    state, start, ops.asarray(0.0, ld))
    assert bool(finite) and set(new) == set(params)
    assert all(float(ops.to_numpy(new[k]).max()) < 0 for k in new)  # a step down the gradient


def test_value_and_grad_differentiable_gives_second_derivatives(be, fw):
    """``value_and_grad(..., differentiable=True)``: its gradient differentiated again, with
    respect to what ``fn`` closes over and to the input (nested), and through a compiled
    model's ``log_density`` (called enough times for Pyro to capture its graph)."""
    ops = be.ops
    like = ops.asarray(0.0, None)
    x = {"x": ops.asarray(np.array([1.0, -2.0]), like)}

    def score(p, v):  # ∂/∂x of a Σ x³: 3 a x²
        _, g = ops.value_and_grad(lambda u: p["a"] * (u["x"] ** 3).sum(), differentiable=True)(v)
        return g["x"]

    p = {"a": ops.asarray(3.0, like)}
    _, gp = ops.value_and_grad(lambda q: score(q, x).sum())(p)  # 3 Σ x²
    np.testing.assert_allclose(float(gp["a"]), 15.0, rtol=1e-6)
    _, gx = ops.value_and_grad(lambda v: score(p, v).sum(), differentiable=True)(x)  # 6 a x
    np.testing.assert_allclose(ops.to_numpy(gx["x"]), [18.0, -36.0], rtol=1e-6)

    def mixed(q):  # ∂/∂a Σ 6 a x = 6 Σ x
        _, g = ops.value_and_grad(lambda v: score(q, v).sum(), differentiable=True)(x)
        return g["x"].sum()

    np.testing.assert_allclose(float(ops.value_and_grad(mixed)(p)[1]["a"]), -6.0, rtol=1e-6)
    from models import gaussian_model

    data = np.array([0.5, -1.0, 2.0])
    info = be.compile_model(gaussian_model(fw), be.as_data(fw.array(data)), (), {})
    values = info.data_to_values(fw.array(data))
    params = {"prec": info.init_params["prec"] + 0.4}  # prec = exp(u): log p̃ = -prec x² / 2
    prec = float(np.exp(0.4))

    def half_sq_score(q):  # Σ ½ (∂ log p̃ / ∂x)² = ½ prec² Σ x², whose u-derivative is prec² Σ x²
        _, g = ops.value_and_grad(lambda v: info.log_density(q, v).sum(), differentiable=True)(values)
        return 0.5 * (g["x"] ** 2).sum()

    for _ in range(4):  # past Pyro's capture of the log density's graph
        value, grads = ops.value_and_grad(half_sq_score)(params)
        np.testing.assert_allclose(float(value), 0.5 * prec**2 * np.sum(data**2), rtol=1e-5)
        np.testing.assert_allclose(float(grads["prec"]), prec**2 * np.sum(data**2), rtol=1e-5)


def test_loops_contexts_and_diagnostics(be, fw):
    """The members the fit, sample and monitors call that the tests above do not: the chunk
    and sample runners, no_grad, compile_now, chain diagnostics, distribution draws,
    shard_rows / with_placement on one device."""
    from ebm_ppl.fit.step import Carry

    ops = be.ops
    like = ops.asarray(0.0, None)

    def step(data_values, carry, x):
        idx, active = x
        t = carry.t + ops.xp.where(active, 1, 0)
        return carry._replace(t=t, params=carry.params + data_values["x"][idx].sum()), (carry.params * 1.0,)

    carry = Carry(ops.asarray(0.0, like), None, None, ops.seed(0, like), ops.asarray(0, None, int_=True),
                  ops.asarray(-1, None, int_=True))
    data = {"x": ops.asarray(np.arange(10.0), like)}
    idx = ops.from_numpy(np.arange(10).reshape(5, 2), ops.int_dtype, like)
    active = ops.asarray(np.arange(5) < 3, None, bool_=True)
    out, stats = ops.make_chunk_runner(step)(carry, data, (idx, active))
    assert int(out.t) == 3 and float(out.params) == 0 + 1 + 2 + 3 + 4 + 5  # rows 0-5 of 3 active updates
    np.testing.assert_array_equal(ops.to_numpy(stats[0])[:3], [0.0, 1.0, 6.0])

    with ops.no_grad():
        value, grads = ops.value_and_grad(lambda p: (p["w"] ** 2).sum())({"w": ops.asarray(np.ones(2), like)})
    np.testing.assert_allclose(ops.to_numpy(grads["w"]), [2.0, 2.0])  # value_and_grad works inside it
    if fw.name == "pyro":
        import torch
        from ebm_ppl_pyro.capture_policy import capture_after

        with ops.no_grad():
            assert not torch.is_grad_enabled()
        with ops.compile_now():
            assert capture_after() == 0
        assert capture_after() == 2
    else:
        with ops.compile_now():
            assert float(ops.jit(lambda a: a + 1)(like)) == 1.0

    rng = np.random.default_rng(0)
    rhat, ess = ops.chain_diagnostics(ops.asarray(rng.normal(size=(4, 500)), like))
    assert abs(rhat - 1) < 0.02 and ess > 1000  # independent draws: R-hat ~1, ESS ~2000
    draws = ops.to_numpy(ops.sample_distribution(fw.dist.Normal(0.0, 1.0), ops.seed(1, like), 4000))
    assert draws.shape == (4000,) and abs(draws.mean()) < 0.1 and abs(draws.std() - 1) < 0.1

    assert ops.with_placement(None) is ops and be.make_placement(None) is None
    tree = {"a": ops.asarray(np.arange(4.0), like)}
    np.testing.assert_array_equal(ops.to_numpy(ops.shard_rows(tree)["a"]), np.arange(4.0))


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_sample_runner_params_store_and_placement(be, fw):
    """make_sample_runner runs a kernel's transitions; store_params / restore_params
    round-trip the parameters; a one-shard placement implements the Placement Protocol."""
    import ebm_ppl
    from ebm_ppl._problem import PROBE_SEED, Problem, run_kernel
    from ebm_ppl.backend import Placement
    from ebm_ppl.samplers import build_kernel

    ops = be.ops
    x = fw.array(ising_sample(np.full(12, 0.2), np.zeros(9), 20, seed=0))
    info = be.compile_model(ising_model(fw), be.as_data(x), (), {})
    like = info.data_to_values(x)["x"]
    problem = Problem(ops, info)
    kernel = build_kernel("auto", ops, list(info.sites.values()), probe=problem.probe(ops.seed(PROBE_SEED, like)))
    position = problem.init_position(ops.seed(0, like), 8, "base")
    run = ops.make_sample_runner(kernel, problem.logdensity_fn(info.init_params), run_kernel)
    moved, aux = run(ops.seed(1, like), position, kernel.init(position), 5)
    assert tuple(moved["x"].shape) == (8, 9) and set(np.unique(ops.to_numpy(moved["x"]))) <= {0.0, 1.0}
    assert (ops.to_numpy(moved["x"]) != ops.to_numpy(position["x"])).any()

    params = {k: v + 0.25 for k, v in info.init_params.items()}
    be.store_params(info, params)
    back = be.restore_params(info, {k: ops.copy_tree(v) for k, v in params.items()})
    for k in params:
        np.testing.assert_allclose(ops.to_numpy(back[k]), ops.to_numpy(params[k]))

    if fw.name == "pyro":
        from ebm_ppl_pyro.parallel import TorchDistributedPlacement

        placement = TorchDistributedPlacement(0, 1)
    else:
        placement = be.make_placement(1)
    assert isinstance(placement, Placement) and placement.num_shards == 1
    est = ebm_ppl.PCD(20, 1)
    assert vars(placement.local_estimator(est)) == vars(est)
    idx = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(placement.local_indices(idx), idx)
    assert placement.sampling_seed(7) == 7
    placed = placement.place(params, None, {"x": like}, {"x": like})
    np.testing.assert_array_equal(ops.to_numpy(placed[3]["x"]), ops.to_numpy(like))
    if fw.name == "numpyro":  # torch's all-reduce needs an initialized process group (test_distributed.py)
        np.testing.assert_allclose(ops.to_numpy(placement.mean((ops.asarray(3.0, like),))[0]), 3.0)
