"""Rewrites of a captured ``torch.fx`` graph (see :mod:`ebm_ppl_pyro.capture`): direct
bindings, constant folding, no-op reshapes, identities, reshape chains, repeated
subexpressions. Each keeps every output's value."""

import torch


_DIRECT_METHODS = ("view", "expand", "new_empty", "new_zeros", "new_ones", "new_full")


def _direct(op):
    """torch's own Python binding of the ATen operator ``op`` (``torch.mm``, ``Tensor.view``)."""
    name = op._schema.name.split("::")[-1]
    if name.endswith("_"):  # in-place: left as recorded
        return None
    direct = getattr(torch._C._VariableFunctions, name, None)
    if direct is None and name in _DIRECT_METHODS:
        direct = getattr(torch.Tensor, name)
    return direct


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


_RANDOM = ("rand", "randn", "randint", "rand_like", "randn_like", "randint_like", "bernoulli", "uniform",
           "normal", "multinomial", "exponential", "geometric", "cauchy", "log_normal", "poisson", "randperm",
           "empty", "empty_like", "new_empty")
_RESHAPES = ("expand", "view", "reshape", "_unsafe_view", "alias", "permute")
_SHAPE_ONLY = ("ones_like", "zeros_like", "full_like", "scalar_tensor")  # values fixed by static shapes


class _Simplify(torch.fx.Interpreter):
    """Runs a captured graph once on real inputs and, node by node: calls each ATen
    operator through torch's direct binding of the same name where that gives the same
    result from the recorded arguments (it dispatches several times faster than the
    ``OpOverload``); drops reshapes to the shape they already have; and records the nodes
    that depend on no input (e.g. a Bernoulli(0.5) base measure's log-probabilities), whose
    values :func:`_simplify` folds into constants."""

    def __init__(self, graph):
        super().__init__(graph, garbage_collect_values=False)
        self.constant = {}

    def run_node(self, n):
        out = super().run_node(n)
        inputs = n.all_input_nodes
        if n.op == "get_attr":
            self.constant[n] = True
        elif n.op == "call_function":
            name = _op_name(n.target)
            self.constant[n] = name in _SHAPE_ONLY or self._half_bernoulli(n, name) or (
                all(self.constant.get(m, False) for m in inputs) and name is not None
                and not name.endswith("_") and name not in _RANDOM)
            if isinstance(n.target, torch._ops.OpOverload):
                self._direct(n, out)
        return out

    def _half_bernoulli(self, n, name):
        """A Bernoulli(0.5) base measure: ``binary_cross_entropy_with_logits`` of constant
        zero logits (unweighted, unreduced) is log 2 whatever the (finite) target, since
        (1 - y)·0 + log(1 + e⁰) = log 2 (the value computed here, so the same bits)."""
        if name != "binary_cross_entropy_with_logits" or len(n.args) < 2 or n.kwargs:
            return False
        logits, rest = n.args[0], list(n.args[2:])
        if not (isinstance(logits, torch.fx.Node) and self.constant.get(logits, False)):
            return False
        if rest[:2] != [None] * len(rest[:2]) or (len(rest) > 2 and rest[2] != 0):  # weight, pos_weight, reduction
            return False
        value = self.env.get(logits)
        return isinstance(value, torch.Tensor) and value.numel() > 0 and not bool(value.any())

    def _direct(self, n, out):
        direct = _direct(n.target)
        if direct is not None:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            try:
                same = _same(out, direct(*args, **kwargs))
            except Exception:
                same = False
            if same:
                n.target = direct


def _op_name(target):
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name.split("::")[-1]
    return getattr(target, "__name__", None)


def _same_shape_reshape(n):
    """A view/expand/reshape node whose output has its input's shape (a no-op)."""
    if n.op != "call_function" or _op_name(n.target) not in _RESHAPES or not n.args:
        return False
    src = n.args[0]
    out, inp = n.meta.get("val"), getattr(src, "meta", {}).get("val")
    if _op_name(n.target) == "permute" and list(n.args[1]) != list(range(len(n.args[1]))):
        return False
    return (isinstance(out, torch.Tensor) and isinstance(inp, torch.Tensor) and tuple(out.shape) == tuple(inp.shape)
            and out.dtype == inp.dtype)


def _simplify(graph, inputs, drop_detach=False):
    """``graph`` with no-op reshapes and unused nodes removed, input-independent values
    folded into constants, and torch's direct bindings called where they agree.
    ``drop_detach``: the graph runs under ``torch.no_grad`` (its outputs are explicit
    gradients), so its ``detach`` nodes are no-ops."""
    g = graph.graph
    if drop_detach and not any(_mutates(n) for n in g.nodes):
        _drop_detaches(g)
    _drop_noop_reshapes(g)
    g.eliminate_dead_code()
    graph.recompile()
    _fold_constants(graph, inputs)
    g.eliminate_dead_code()
    if not any(_mutates(n) for n in g.nodes):  # the rewrites below change which tensors alias which
        _drop_identities(graph)
        _drop_reshape_chains(g)
        _merge_repeats(g)
        g.eliminate_dead_code()
    graph.recompile()
    return graph


def _drop_detaches(g):
    """Replace each ``detach`` node by its input (for a graph run under ``torch.no_grad``),
    except an output that would then be a graph input (outputs never alias inputs)."""
    outputs = _output_nodes(g)
    for n in list(g.nodes):
        if n.op == "call_function" and _op_name(n.target) == "detach" and not (
                n in outputs and n.args[0].op == "placeholder"):
            n.replace_all_uses_with(n.args[0])
            g.erase_node(n)


def _drop_noop_reshapes(g):
    """Replace each reshape to the shape its input already has (see :func:`_same_shape_reshape`) by its input."""
    for n in list(g.nodes):
        if _same_shape_reshape(n):
            n.replace_all_uses_with(n.args[0])
            g.erase_node(n)


def _fold_constants(graph, inputs):
    """Run ``graph`` once on ``inputs`` through :class:`_Simplify` (which also switches
    operators to torch's direct bindings where they agree) and replace each value that
    depends on no input, and has a user that does, by a buffer ``_folded_<i>``."""
    g = graph.graph
    interp = _Simplify(graph)
    with torch.no_grad():
        interp.run(*inputs)
        values = dict(interp.env)
    for i, n in enumerate(list(g.nodes)):
        if n.op == "call_function" and interp.constant.get(n) and isinstance(values.get(n), torch.Tensor) and \
                any(not interp.constant.get(u, False) for u in n.users):
            name = f"_folded_{i}"
            graph.register_buffer(name, values[n].detach().clone())
            with g.inserting_before(n):
                const = g.get_attr(name)
            n.replace_all_uses_with(const)


def _mutates(n):
    """``n`` writes into a tensor (an in-place or ``out=`` operation)."""
    if n.op != "call_function":
        return False
    name = _op_name(n.target) or ""
    schema = getattr(n.target, "_schema", None)
    return name.endswith("_") or "out" in n.kwargs or bool(schema is not None and schema.is_mutable)


_ORDER_KEEPING = ("view", "reshape", "_unsafe_view", "unsqueeze", "squeeze", "alias")


def _keeps_order(n):
    """``n`` only reshapes its first argument (row-major order kept): a view/reshape/
    (un)squeeze, or a ``sum`` over dimensions of size one."""
    if n.op != "call_function" or not n.args or not isinstance(n.args[0], torch.fx.Node):
        return False
    name = _op_name(n.target)
    if name in _ORDER_KEEPING:
        return True
    if name != "sum" or len(n.args) < 2 or "dtype" in n.kwargs:
        return False
    val = n.args[0].meta.get("val")
    dims = n.args[1] if isinstance(n.args[1], (list, tuple)) else [n.args[1]]
    return (isinstance(val, torch.Tensor) and len(dims) > 0 and all(isinstance(d, int) for d in dims)
            and all(-val.dim() <= d < val.dim() and val.shape[d] == 1 for d in dims))


def _drop_reshape_chains(g):
    """Replace a chain of order-keeping reshapes (see :func:`_keeps_order`) that ends in
    the shape and dtype of a node it started from by that node (e.g. ``sum(view(x, (n,
    1)), -1)`` by ``x``): the values are the same (up to the sign of a zero)."""
    outputs = _output_nodes(g)
    for n in list(g.nodes):
        if not _keeps_order(n):
            continue
        out = n.meta.get("val")
        a = n.args[0]
        while isinstance(out, torch.Tensor):
            val = a.meta.get("val")
            if isinstance(val, torch.Tensor) and val.shape == out.shape and val.dtype == out.dtype:
                if not (a.op == "placeholder" and n in outputs):
                    n.replace_all_uses_with(a)
                    g.erase_node(n)
                break
            if not _keeps_order(a):
                break
            a = a.args[0]


def _merge_repeats(g):
    """Common subexpressions: a call of the same (deterministic, not in-place) function on
    the same arguments as an earlier node is replaced by that node."""
    seen = {}
    for n in list(g.nodes):
        name = _op_name(n.target) if n.op == "call_function" else None
        if name is None or name.endswith("_") or name in _RANDOM:
            continue
        try:
            key = (n.target, _hashable(n.args), _hashable(n.kwargs))
            hash(key)
        except TypeError:
            continue
        if key in seen:
            n.replace_all_uses_with(seen[key])
            g.erase_node(n)
        else:
            seen[key] = n


def _hashable(x):
    if isinstance(x, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__,) + tuple(_hashable(v) for v in x)
    if isinstance(x, (torch.fx.Node, int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout,
                      torch.memory_format)):
        return (type(x).__name__, x)
    raise TypeError(type(x))


def _identity_operand(n, consts):
    """The operand ``x`` of ``n`` when ``n`` is ``x * 1`` or ``x + 0`` with a folded constant
    (or Python number) of ones / zeros that changes neither ``x``'s shape nor its dtype
    (e.g. the ones of a backward pass's ``sum``, a base measure's zero gradient), else None."""
    if n.op != "call_function" or _op_name(n.target) not in ("mul", "add") or len(n.args) != 2 or n.kwargs:
        return None
    unit = 1 if _op_name(n.target) == "mul" else 0
    out = n.meta.get("val")
    for a, b in (n.args, n.args[::-1]):
        if not isinstance(b, torch.fx.Node) or b.op not in ("call_function", "placeholder"):
            continue
        c = consts.get(a) if isinstance(a, torch.fx.Node) else a
        if isinstance(c, torch.Tensor):
            is_unit = c.numel() > 0 and bool((c == unit).all())
        else:
            is_unit = isinstance(c, (int, float)) and not isinstance(c, bool) and c == unit
        val = b.meta.get("val")
        if (is_unit and isinstance(out, torch.Tensor) and isinstance(val, torch.Tensor)
                and tuple(val.shape) == tuple(out.shape) and val.dtype == out.dtype):
            return b
    return None


def _output_nodes(g):
    return {a for n in g.nodes if n.op == "output" for a in torch.utils._pytree.tree_leaves(n.args)}


def _drop_identities(graph):
    """Replace ``x * 1`` and ``x + 0`` by ``x`` (exact in floating point, up to the sign of
    a zero), where the constant leaves ``x``'s shape and dtype as they are; an output that
    would then be a graph input is left as computed (outputs never alias inputs)."""
    g = graph.graph
    consts = {n: getattr(graph, n.target) for n in g.nodes if n.op == "get_attr" and n.target.startswith("_folded_")}
    outputs = _output_nodes(g)
    for n in list(g.nodes):
        x = _identity_operand(n, consts)
        if x is not None and not (x.op == "placeholder" and n in outputs):
            n.replace_all_uses_with(x)
            g.erase_node(n)
        elif n.users and n not in outputs and all(_broadcasts_anyway(u, n) for u in n.users):
            x = _ones_times(n, consts)
            if x is not None:  # ones * x only broadcasts x, and every user broadcasts it too
                n.replace_all_uses_with(x)
                g.erase_node(n)


def _ones_times(n, consts):
    """``x`` when ``n`` is ``ones * x`` (a folded constant of ones) of ``x``'s dtype."""
    if n.op != "call_function" or _op_name(n.target) != "mul" or len(n.args) != 2 or n.kwargs:
        return None
    out = n.meta.get("val")
    for a, b in (n.args, n.args[::-1]):
        c = consts.get(a) if isinstance(a, torch.fx.Node) else None
        val = b.meta.get("val") if isinstance(b, torch.fx.Node) else None
        if (isinstance(c, torch.Tensor) and c.numel() > 0 and bool((c == 1).all()) and isinstance(val, torch.Tensor)
                and isinstance(out, torch.Tensor) and val.dtype == out.dtype):
            return b
    return None


def _broadcasts_anyway(u, n):
    """``u`` is ``a + b`` or ``a - b`` whose other operand has ``u``'s shape and dtype, so
    that ``n`` is broadcast to ``u``'s shape in any case."""
    if u.op != "call_function" or _op_name(u.target) not in ("add", "sub") or len(u.args) != 2 or u.kwargs:
        return False
    others = [a for a in u.args if a is not n]
    if len(others) != 1 or not isinstance(others[0], torch.fx.Node):
        return False
    out, val = u.meta.get("val"), others[0].meta.get("val")
    return (isinstance(out, torch.Tensor) and isinstance(val, torch.Tensor) and val.shape == out.shape
            and val.dtype == out.dtype)
