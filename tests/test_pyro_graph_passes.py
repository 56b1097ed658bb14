"""Unit tests of the rewrites of captured graphs (``ebm_ppl_pyro.graph_passes``), one pass
at a time: each removes what it is for, leaves the rest, and keeps every output's value.

Pyro-only by nature (the graphs are ``torch.fx`` graphs of the Pyro backend): skipped when
torch or pyro is not installed."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pyro")

from torch.fx.experimental.proxy_tensor import make_fx  # noqa: E402

from ebm_ppl_pyro import graph_passes as gp  # noqa: E402


def _graph(fn, *inputs):
    return make_fx(fn, tracing_mode="fake")(*(a.clone() for a in inputs))


def _ops(graph):
    """The operator names of the graph's call nodes, in order."""
    return [gp._op_name(n.target) for n in graph.graph.nodes if n.op == "call_function"]


def _check_same(graph, fn, *inputs):
    graph.recompile()
    want, got = fn(*(a.clone() for a in inputs)), graph(*(a.clone() for a in inputs))
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, (tuple, list)) else (got,)
    assert len(want) == len(got)
    for w, o in zip(want, got):
        torch.testing.assert_close(o, w, rtol=0, atol=0)


X, C = torch.rand(4, 3), torch.randn(3)


def test_drop_detaches_keeps_an_output_that_would_alias_an_input():
    def f(x):
        return x.detach() * 2, x.detach()

    graph = _graph(f, X)
    assert _ops(graph).count("detach") == 2
    gp._drop_detaches(graph.graph)
    assert _ops(graph).count("detach") == 1  # the output x.detach() stays: outputs never alias inputs
    _check_same(graph, f, X)


def test_drop_noop_reshapes_only_drops_reshapes_to_the_same_shape():
    def f(x):
        return x.view(4, 3) * 2, x.reshape(12), x.permute(1, 0), x.permute(0, 1) + 1

    graph = _graph(f, X)
    before = _ops(graph)
    gp._drop_noop_reshapes(graph.graph)
    after = _ops(graph)
    assert before.count("view") + before.count("reshape") - after.count("view") - after.count("reshape") >= 1
    assert after.count("permute") == 1  # a real transpose is kept, the identity permutation dropped
    _check_same(graph, f, X)


def test_fold_constants_folds_input_free_values_and_a_half_bernoulli_base():
    def f(x, c):
        base = -torch.nn.functional.binary_cross_entropy_with_logits(torch.zeros_like(x), x, reduction="none")
        return x * torch.ones(3).exp() + base, c * torch.randn(3).abs().clamp(min=2.0)

    graph = _graph(f, X, C)
    gp._fold_constants(graph, (X.clone(), C.clone()))
    graph.graph.eliminate_dead_code()
    folded = [n for n in graph.graph.nodes if n.op == "get_attr" and n.target.startswith("_folded_")]
    assert folded, "the value of ones(3).exp() depends on no input"
    assert "binary_cross_entropy_with_logits" not in _ops(graph)  # log 2 whatever the target
    assert "randn" in _ops(graph)  # random values are never folded
    torch.testing.assert_close(graph(X.clone(), C.clone())[0], f(X.clone(), C.clone())[0], rtol=0, atol=0)


def test_fold_constants_calls_torch_direct_bindings_where_they_agree():
    def f(x, c):
        return torch.mm(x, c.unsqueeze(-1)).exp()

    graph = _graph(f, X, C)
    assert all(isinstance(n.target, torch._ops.OpOverload) for n in graph.graph.nodes if n.op == "call_function")
    gp._fold_constants(graph, (X.clone(), C.clone()))
    targets = [n.target for n in graph.graph.nodes if n.op == "call_function"]
    assert torch._C._VariableFunctions.mm in targets and torch._C._VariableFunctions.exp in targets
    _check_same(graph, f, X, C)


def test_direct_binding_of_an_inplace_operator_is_none():
    assert gp._direct(torch.ops.aten.add_.Tensor) is None
    assert gp._direct(torch.ops.aten.mm.default) is torch._C._VariableFunctions.mm
    assert gp._direct(torch.ops.aten.view.default) is torch.Tensor.view


def test_drop_identities_drops_times_one_and_plus_zero():
    def f(x, c):
        return (x * torch.ones_like(x) + torch.zeros_like(x)) * c.exp(), x * 1.0

    graph = _graph(f, X, C)
    gp._fold_constants(graph, (X.clone(), C.clone()))
    graph.graph.eliminate_dead_code()
    before = _ops(graph)
    gp._drop_identities(graph)
    graph.graph.eliminate_dead_code()
    after = _ops(graph)
    assert after.count("mul") == 2 and after.count("add") == 0 and len(after) < len(before)
    assert after.count("mul") < before.count("mul")
    # x * 1.0 as an output is kept: it would otherwise alias the input x
    _check_same(graph, f, X, C)


def test_drop_reshape_chains_returns_to_the_start_node():
    def f(x):
        return x.exp().reshape(4, -1, 1).sum(-1) * 2, x.unsqueeze(0).squeeze(0)

    graph = _graph(f, X)
    gp._drop_reshape_chains(graph.graph)
    graph.graph.eliminate_dead_code()
    ops = _ops(graph)
    assert "sum" not in ops and "reshape" not in ops and "view" not in ops
    assert "squeeze" in ops or "unsqueeze" in ops  # the output that would be the input x is kept
    _check_same(graph, f, X)


def test_merge_repeats_merges_common_subexpressions_but_not_random_draws():
    def f(x):
        return x.exp() + x.exp(), torch.rand(3) + torch.rand(3)

    graph = _graph(f, X)
    gp._merge_repeats(graph.graph)
    graph.graph.eliminate_dead_code()
    assert _ops(graph).count("exp") == 1 and _ops(graph).count("rand") == 2
    graph.recompile()
    torch.testing.assert_close(graph(X.clone())[0], f(X.clone())[0], rtol=0, atol=0)


def test_simplify_leaves_a_mutating_graph_aliasing_as_it_was():
    def g(x, c):
        y = x * torch.ones_like(x)
        y.add_(c)
        return y * 1.0

    graph = _graph(g, X, C)
    assert any(gp._mutates(n) for n in graph.graph.nodes)
    gp._simplify(graph, (X.clone(), C.clone()), drop_detach=True)
    assert "add_" in _ops(graph) and "mul" in _ops(graph)
    _check_same(graph, g, X, C)


def test_predicates():
    graph = _graph(lambda x: (x.view(4, 3, 1).sum(-1), x.sum(0), x.sum(-1, keepdim=True)), X)
    calls = [n for n in graph.graph.nodes if n.op == "call_function"]
    assert [gp._op_name(n.target) for n in calls] == ["view", "sum", "sum", "sum"]
    # a view, and a sum over a dimension of size one, keep the row-major order; other sums do not
    assert [gp._keeps_order(n) for n in calls] == [True, True, False, False]
    assert gp._same(torch.ones(2), torch.ones(2)) and not gp._same(torch.ones(2), torch.ones(2, dtype=torch.int64))
    assert gp._same((1, [torch.zeros(1)]), (1, [torch.zeros(1)])) and not gp._same(1, 1.0)
    assert gp._hashable({"a": [1, 2]}) == (("a", ("list", ("int", 1), ("int", 2))),)
    with pytest.raises(TypeError):
        gp._hashable(torch.ones(1))
