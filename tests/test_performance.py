"""Issue 6: the fast paths are exact where they are taken, and nothing is re-traced or
re-compiled in the hot loop.

* BlockGibbs draws a block of binary coordinates from one gradient of log p̃ only after
  checking, at the structure probes, that the gradient reproduces every single-coordinate
  change; otherwise it evaluates the changes (the "rows" path). Both must sample exactly.
* A fit runs the model's Python code a fixed number of times (tracing, probes, and on
  NumPyro compilation), however many updates it makes; on NumPyro a second call of the
  same fit reuses the compiled update.
* On Pyro the log density runs as a traced graph only where the trace agrees with the
  eager model; a model whose Python control flow depends on values runs eagerly; traces
  are kept for later fits of the same model, so repeated fits do not grow the memory.
"""

import numpy as np
import pytest

import ebm_ppl
import ebm_ppl.fit
from ebm_ppl._problem import PROBE_SEED, Problem
from ebm_ppl.backend import get_backend
from ebm_ppl.samplers import BlockGibbs
from ebm_ppl.samplers import build_kernel
from models import I, K, STATES, ising_log_unnorm, ising_model, ising_sample
from models import rbm_model

EVEN = (np.add.outer(np.arange(3), np.arange(3)) % 2 == 0).reshape(9)


def _kernel(fw, model, data, sampler, names=None):
    be = get_backend(fw.name)
    data = be.as_data(data)
    info = be.compile_model(model, data, (), {})
    problem = Problem(be.ops, info)
    like = next(iter(info.data_to_values(data).values()))
    probe = problem.probe(be.ops.seed(PROBE_SEED, like))
    sites = [s for n, s in info.sites.items() if names is None or n in names]
    return build_kernel(sampler, be.ops, sites, probe=probe)


def cubic_ising_model(fw):
    """The 3x3 Ising model written with s**3 for s = 2x - 1 in {-1, 1}: the same log p̃ on
    the support, but not affine in x off it, so the gradient does not give conditionals."""

    def ising(x):
        J = fw.param("J", fw.zeros(12))
        h = fw.param("h", fw.zeros(9))
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.Bernoulli(0.5).expand([9]).to_event(1), obs=x)
            s = (2 * x - 1) ** 3
            ebm_ppl.factor("pairs", (s[..., I] * s[..., K] * J).sum(-1) + (s * h).sum(-1))

    return ising


def exact_mean(J, h):
    lp = ising_log_unnorm(STATES, J, h)
    return np.exp(lp - np.logaddexp.reduce(lp)) @ STATES


def test_rbm_layers_take_the_gradient_path(fw):
    x = (np.random.default_rng(0).random((20, 6)) < 0.5).astype(np.float32)
    kernel = _kernel(fw, rbm_model(fw, 6, 3), fw.array(x), BlockGibbs(["h", "v"]))
    assert kernel.paths == ("gradient", "gradient")
    assert not kernel.redraws_all  # two blocks: the second sees the first's new values
    positive = _kernel(fw, rbm_model(fw, 6, 3), fw.array(x), BlockGibbs(["h", "v"]).restrict({"h"}), {"h"})
    assert positive.redraws_all


@pytest.mark.slow  # an accuracy / integration test: CI's slow pass runs it
def test_non_affine_model_takes_the_rows_path_and_stays_exact(fw):
    """s**3 has the right values but the wrong gradient: the check must refuse the gradient
    path, and the rows path must still sample the exact distribution."""
    J, h = np.full(12, 0.3), np.full(9, 0.1)
    data = fw.array(ising_sample(J, h, 10, seed=0))
    blocks = [{"x": EVEN}, {"x": ~EVEN}]
    kernel = _kernel(fw, cubic_ising_model(fw), data, BlockGibbs(blocks))
    assert kernel.paths == ("rows", "rows")
    assert _kernel(fw, ising_model(fw), data, BlockGibbs(blocks)).paths == ("gradient", "gradient")
    params = {"J": fw.array(J), "h": fw.array(h)}
    draws = ebm_ppl.sample(cubic_ising_model(fw), params, data[:1], num_samples=4000, num_chains=200,
                           num_warmup=100, thinning=5, sampler=BlockGibbs(blocks))
    x = fw.to_numpy(draws["x"]).reshape(20, 200, 9)  # 20 rounds x 200 independent chains
    mean = exact_mean(J, h)
    chain_means = x.mean(0)  # (200, 9): independent chains
    se = chain_means.std(0, ddof=1) / np.sqrt(200)
    assert np.all(4 * se < 0.04), se
    np.testing.assert_allclose(chain_means.mean(0), mean, atol=0.04)


def _counting(model):
    calls = [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        return model(*args, **kwargs)

    return counted, calls


@pytest.mark.slow  # an accuracy / integration test: CI's slow pass runs it
def test_hot_loop_runs_no_python_model_code(fw):
    """Fits of 32 and of 160 updates run the model's Python code equally often: the update
    is traced (and on NumPyro compiled) once, in the first chunk, never again."""
    x = (np.random.default_rng(0).random((200, 6)) < 0.5).astype(np.float32)
    counts = []
    for num_steps in (32, 160):
        fw.clear()
        model, calls = _counting(rbm_model(fw, 6, 3))  # a new model: traced and compiled afresh
        ebm_ppl.fit_unnormalized(model, fw.array(x), ebm_ppl.PCD(20, 1), BlockGibbs(["h", "v"]),
                                 optimizer=fw.adam(0.01), num_steps=num_steps, batch_size=50, progress_bar=False)
        counts.append(calls[0])
    assert counts[0] == counts[1], counts


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_numpyro_reuses_the_compiled_update(fw):
    if fw.name != "numpyro":
        pytest.skip("compiled updates are kept across calls on NumPyro (Pyro runs eagerly)")
    x = (np.random.default_rng(0).random((200, 6)) < 0.5).astype(np.float32)
    model, calls = _counting(rbm_model(fw, 6, 3))
    opt = fw.adam(0.01)
    kwargs = dict(estimator=ebm_ppl.PCD(20, 1), sampler=BlockGibbs(["h", "v"]), optimizer=opt,
                  batch_size=50, progress_bar=False)
    first = ebm_ppl.fit_unnormalized(model, fw.array(x), num_steps=40, **kwargs)
    after_first = calls[0]
    resumed = ebm_ppl.fit_unnormalized(model, fw.array(x), num_steps=40, resume=first, **kwargs)
    assert calls[0] - after_first == 1  # only the validating trace of the data
    # the reused update is the same update: 40 + 40 resumed equals 80 in one call
    whole = ebm_ppl.fit_unnormalized(model, fw.array(x), num_steps=80, **kwargs)
    np.testing.assert_allclose(np.asarray(resumed.params["W"]), np.asarray(whole.params["W"]), atol=1e-5)
    # data of another shape is another compiled update
    before = calls[0]
    ebm_ppl.fit_unnormalized(model, fw.array(x[:100]), num_steps=4, **kwargs)
    assert calls[0] - before > 1


@pytest.mark.slow  # over 15 s in the default run under load: CI's slow pass runs it (issue 21)
def test_a_new_but_identical_optimizer_does_not_compile_again(fw):
    """Compiled updates are keyed by the optimizer's configuration, not its identity: a
    second fit with ``optax.adam(0.01)`` written again traces the model once (to validate the
    data) and compiles nothing; another learning rate is another update."""
    if fw.name != "numpyro":
        pytest.skip("compiled updates are kept across calls on NumPyro (Pyro runs eagerly)")
    import optax

    x = fw.array((np.random.default_rng(1).random((120, 6)) < 0.5).astype(np.float32))
    model, calls = _counting(rbm_model(fw, 6, 3))
    kwargs = dict(estimator=ebm_ppl.PCD(20, 1), sampler=BlockGibbs(["h", "v"]), batch_size=40,
                  num_steps=6, progress_bar=False)
    first = ebm_ppl.fit_unnormalized(model, x, optimizer=optax.adam(0.01), **kwargs)
    before = calls[0]
    again = ebm_ppl.fit_unnormalized(model, x, optimizer=optax.adam(0.01), **kwargs)
    assert calls[0] - before == 1  # the validating trace only: no new trace of the update
    np.testing.assert_array_equal(np.asarray(first.params["W"]), np.asarray(again.params["W"]))
    before = calls[0]
    other = ebm_ppl.fit_unnormalized(model, x, optimizer=optax.adam(0.02), **kwargs)
    assert calls[0] - before > 1  # another learning rate: traced and compiled again
    assert not np.array_equal(np.asarray(first.params["W"]), np.asarray(other.params["W"]))


def test_pyro_capture_is_used_only_where_it_agrees(fw):
    if fw.name != "pyro":
        pytest.skip("the captured log density is the Pyro backend's")
    import torch

    def branching(x):
        J = fw.param("J", torch.tensor(0.5))
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.Bernoulli(0.5).expand([3]).to_event(1), obs=x)
            # Python control flow on values: capture on fake tensors raises, a trace would keep one branch
            if bool(x.sum() > x.numel() / 2):
                ebm_ppl.factor("f", J * x.sum(-1))
            else:
                ebm_ppl.factor("f", -J * x.sum(-1))

    be = get_backend("pyro")
    x = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    info = be.compile_model(branching, x, (), {})
    values = info.data_to_values(x)
    for _ in range(3):  # a shape is captured at its third call
        ld = info.log_density(info.init_params, values)
    captured = info.log_density
    assert list(captured.cache.values()) == [None]  # refused: runs eagerly
    torch.testing.assert_close(ld, captured.eager(info.init_params, values))
    zeros = {"x": torch.zeros(2, 3)}
    torch.testing.assert_close(captured(info.init_params, zeros), captured.eager(info.init_params, zeros))

    rbm = rbm_model(fw, 6, 3)
    v = (torch.rand(5, 6) < 0.5).float()
    info = be.compile_model(rbm, v, (), {})
    values = {"v": v, "h": (torch.rand(5, 3) < 0.5).float()}
    for _ in range(3):
        got = info.log_density(info.init_params, values)
    assert len(info.log_density.cache) == 1
    graph, = info.log_density.cache.values()
    assert isinstance(graph, torch.fx.GraphModule)  # captured: a Pyro-free graph of ATen operations
    assert "pyro" not in graph.code
    torch.testing.assert_close(got, info.log_density.eager(info.init_params, values))
    # a later fit of the same model reuses the graphs; the cache is bounded (LRU), and an
    # evicted graph is freed
    again = be.compile_model(rbm, v, (), {})
    assert again.log_density.cache is info.log_density.cache
    import gc
    import weakref

    from ebm_ppl_pyro import model as pyro_model

    ref = weakref.ref(graph)
    del info, again, graph
    for _ in range(pyro_model._GRAPHS_SIZE):
        be.compile_model(rbm_model(fw, 6, 3), v, (), {})  # new models push the old one out
    gc.collect()
    assert ref() is None
    assert len(pyro_model._GRAPHS) <= pyro_model._GRAPHS_SIZE


def _pyro_params(names_shapes, seed):
    import pyro
    import torch

    g = torch.Generator().manual_seed(seed)
    return {n: pyro.param(n, torch.randn(shape, generator=g)).unconstrained() for n, shape in names_shapes}


def test_pyro_merged_optimizer_step_is_pyros_own_step(fw):
    """The Pyro optimizer's fast path (one torch step over all parameters, sharing Pyro's
    per-parameter optimizer states) gives, bit for bit, the parameters and optimizer state
    of Pyro's own per-parameter stepping; a step that makes a parameter non-finite is
    undone (parameters and state as before it) and reported."""
    if fw.name != "pyro":
        pytest.skip("the Pyro optimizer's fast path")
    import pyro
    import torch

    from ebm_ppl_pyro.optim import _Merged, make_optimizer

    for make in (lambda: pyro.optim.Adam({"lr": 0.05, "betas": (0.8, 0.9)}),
                 lambda: pyro.optim.SGD({"lr": 0.1, "momentum": 0.5}),
                 lambda: pyro.optim.RMSprop({"lr": 0.01})):
        pyro.clear_param_store()
        params = _pyro_params((("W", (3, 4)), ("b", (4,))), seed=0)
        opt = make_optimizer(make())
        state = opt.init(params)
        ref_params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        ref = make()
        g = torch.Generator().manual_seed(1)
        for step in range(5):
            grads = {n: torch.randn(p.shape, generator=g) for n, p in params.items()}
            _, state, finite = opt.update(grads, state, params)
            assert finite
            for n, p in ref_params.items():
                p.grad = grads[n].clone()
            ref(list(ref_params.values()))
            for n in params:
                assert torch.equal(params[n], ref_params[n]), (make, step, n)
                mine = state.optim_objs[params[n]].state_dict()["state"][0]
                theirs = ref.optim_objs[ref_params[n]].state_dict()["state"][0]
                assert mine.keys() == theirs.keys()
                for k in mine:
                    assert torch.equal(torch.as_tensor(mine[k]), torch.as_tensor(theirs[k])), (make, step, n, k)
        assert any(isinstance(c, _Merged) for c in _closure_cells(opt.update))  # the fast path was taken

        before = {n: p.detach().clone() for n, p in params.items()}
        states = {n: {k: torch.as_tensor(v).clone() for k, v in state.optim_objs[params[n]].state[params[n]].items()}
                  for n in params}
        huge = {n: torch.full(p.shape, float("inf")) for n, p in params.items()}
        _, state, finite = opt.update(huge, state, params)
        assert not finite
        for n, p in params.items():
            assert torch.equal(p, before[n])
            for k, v in state.optim_objs[p].state[p].items():
                assert torch.equal(torch.as_tensor(v), states[n][k])


def _closure_cells(fn):
    out = []
    for cell in fn.__closure__ or ():
        v = cell.cell_contents
        out.extend(v if isinstance(v, list) else [v])
    return out


def test_pyro_gradient_only_graph_skips_the_forward_pass(fw):
    """``log_density_grad(..., value=False)``: the same gradients, from a captured graph
    without the forward pass (BlockGibbs's gradient path); the captured graphs of explicit
    gradients return tensors without autograd history even for parameters that require grad."""
    if fw.name != "pyro":
        pytest.skip("the captured graphs are the Pyro backend's")
    import torch

    be = get_backend("pyro")
    v = (torch.rand(5, 6, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    info = be.compile_model(rbm_model(fw, 6, 3), v, (), {})
    values = {"v": v, "h": (torch.rand(5, 3) < 0.5).float()}
    for _ in range(3):  # captured at the third call of a shape
        ld, full = info.log_density_grad(info.init_params, values, ["h"])
        none, only = info.log_density_grad(info.init_params, values, ["h"], value=False)
    assert none is None and ld.shape == (5,)
    torch.testing.assert_close(only["h"], full["h"], rtol=0, atol=0)
    graphs = {k[-1]: g for k, g in info.log_density_grad.cache.items()}
    assert set(graphs) == {True, False} and all(isinstance(g, torch.fx.GraphModule) for g in graphs.values())
    assert len(graphs[False].graph.nodes) < len(graphs[True].graph.nodes)
    assert any(p.requires_grad for p in info.init_params.values())
    w = torch.linspace(-1, 1, 5)
    for _ in range(3):
        ld, grads = info.weighted_param_grad(info.init_params, values, w)
    assert not ld.requires_grad and not any(g.requires_grad for g in grads.values())
    with torch.enable_grad():  # the reference: autograd of Σ w log p̃
        leaves = {n: p.detach().requires_grad_(True) for n, p in info.init_params.items()}
        want = torch.autograd.grad((info.log_density(leaves, values) * w).sum(), list(leaves.values()))
    for (n, g), ref in zip(grads.items(), want):
        torch.testing.assert_close(g, ref)


def test_pyro_graph_simplification_keeps_values(fw):
    """The rewrites of captured graphs (x·1 and x + 0 dropped, reshape chains that return to
    a node's shape, repeated subexpressions, Bernoulli(0.5) base measures folded) keep every
    output's value; a graph that writes in place keeps its nodes."""
    if fw.name != "pyro":
        pytest.skip("the captured graphs are the Pyro backend's")
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    from ebm_ppl_pyro.model import _simplify

    def f(x, c):
        ones = torch.ones_like(x)
        y = (x * ones + torch.zeros_like(x)).reshape(x.shape[0], -1, 1).sum(-1)
        base = -torch.nn.functional.binary_cross_entropy_with_logits(torch.zeros_like(x), x, reduction="none")
        return (y * c.exp() + x * c.exp()).sum(-1) + base.sum(-1), ones * c

    def g(x, c):
        y = x * torch.ones_like(x)
        y.add_(c)
        return y * 1.0

    x, c = torch.rand(4, 3), torch.randn(3)
    for fn in (f, g):
        want = fn(x.clone(), c.clone())
        graph = _simplify(make_fx(fn, tracing_mode="fake")(x.clone(), c.clone()), (x.clone(), c.clone()))
        got = graph(x.clone(), c.clone())
        for w, o in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
            torch.testing.assert_close(o, w, rtol=0, atol=0)
        names = [str(n.target) for n in graph.graph.nodes if n.op == "call_function"]
        if fn is f:
            assert sum("exp" in n for n in names) == 1 and not any("binary_cross" in n for n in names), names
        else:
            assert any("add_" in n for n in names), names


def test_finite_checks_are_exact(fw):
    """``ops.all_finite`` (the update's check of its loss, gradients and new parameters)
    finds one NaN or ±inf among many numbers, and is not fooled by finite numbers whose
    sum overflows; compiled and eager alike."""
    ops = get_backend(fw.name).ops
    like = ops.asarray(0.0, None)
    big = np.full((300, 7), 3e38, np.float32)
    tree = {"a": ops.from_numpy(big, like.dtype, like), "n": ops.asarray([1, 2], like, int_=True),
            "b": (ops.asarray(np.arange(5.0), like),)}
    compiled = ops.jit(lambda t: ops.all_finite(t))
    for check in (ops.all_finite, compiled):
        assert bool(check(tree))
        for bad in (np.nan, np.inf, -np.inf):
            wrong = big.copy()
            wrong[123 // 7, 123 % 7] = bad
            assert not bool(check({**tree, "a": ops.from_numpy(wrong, like.dtype, like)})), bad


def test_numpyro_draws_are_the_generators_numbers(fw):
    """NumPyro computes large draws once (in the branch of a conditional, so that XLA does
    not repeat the generator in each consumer): the numbers are Philox's, compiled or not."""
    if fw.name != "numpyro":
        pytest.skip("the draws of JAX's ops")
    import jax
    import jax.numpy as jnp

    ops = get_backend("numpyro").ops
    key = jax.random.split(jax.random.PRNGKey(5))[1]
    philox = jax.random.wrap_key_data(key, impl="philox4x32")
    logits = jnp.linspace(-3.0, 3.0, 64 * 50).reshape(64, 50)
    want_u = jax.random.uniform(philox, (64, 50))
    want = {"u": want_u, "z": jax.random.normal(philox, (64, 50)), "b": want_u * (1 + jnp.exp(-logits)) < 1}

    def draws(k, lg):
        b = ops.bernoulli_logits(k, lg)
        return {"u": ops.uniform(k, (64, 50), lg), "z": ops.normal(k, (64, 50), lg), "b": b,
                "twice": jnp.sum(b) + jnp.sum(b.astype(jnp.int32) * 2)}  # more than one consumer

    for got in (draws(key, logits), jax.jit(draws)(key, logits)):
        for name in ("u", "z", "b"):
            np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]), err_msg=name)
        assert int(got["twice"]) == 3 * int(np.sum(np.asarray(want["b"])))


def test_an_optimizer_closure_over_a_module_keys_the_compiled_update():
    """The compiled-update cache keys an optimizer by its closure's contents: a closure
    that captures a module (``jax.numpy``: a ``size`` that is a function) is keyed by the
    module's name, not refused with a TypeError; equal closures give equal keys."""
    import math

    from ebm_ppl.fit.cache import _config_key

    def make(lr):
        def schedule(step):
            return lr * math.cos(step)

        return schedule

    assert _config_key(make(0.1)) == _config_key(make(0.1)) != _config_key(make(0.2))
    np_like = type("Namespace", (), {"shape": (), "dtype": "f", "size": staticmethod(lambda x: 0)})()
    _config_key(np_like)  # a size that is not a number: compared by identity, no TypeError
