"""A Pyro model turned into pure functions of tensors (``ModelInfo``), once per fit.

Chains are the batch axis: the log density of C chains is one run of the model with a
batch of C examples (the model's own data plate vectorizes it), reduced to one value per
example along the data plate's dimension.
"""

import collections
import math
import os

import torch
import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.distributions import constraints
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to, transform_to
from torch.fx.experimental.proxy_tensor import make_fx
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from ebm_ppl._rows import head_rows
from ebm_ppl._sites import (Same, Transform, base_constraint, check_covariates, check_data_leaves, check_factor_shape,
                            check_leaf_shape, check_no_obs_mask, check_no_subsample, check_param_names, differs,
                            explain_failure, latent_outside_plate, leaf_converters, match_leaves, site_table,
                            split_covariates)
from ebm_ppl.backend import ModelInfo, SiteInfo

from .capture_policy import capture_after
from .plates import plates
from .rows import has_nonfinite, in_support, support_repr, supports_by_row

__all__ = ["compile_model", "as_data", "restore_params", "store_params", "snapshot_params", "restore_snapshot"]


def as_data(data):
    """Torch tensors for every leaf (numpy arrays are copied, tensors are left alone);
    float16 / bfloat16 leaves become float32 copies: a fit, its chains and its results are
    computed in float32 (a half-precision chain takes a few hundred distinct values)."""
    if isinstance(data, dict):
        return {k: as_data(v) for k, v in data.items()}
    if not isinstance(data, torch.Tensor):
        data = torch.as_tensor(__import__("numpy").array(data))
    return data.float() if data.dtype in (torch.float16, torch.bfloat16) else data


def _discrete_values(name, support, dtype):
    base = base_constraint(support)
    if base is constraints.boolean:
        return (0, 1)
    if isinstance(base, constraints.integer_interval):
        lo, hi = torch.as_tensor(base.lower_bound), torch.as_tensor(base.upper_bound)
        if lo.numel() > 1 and (lo != lo.flatten()[0]).any() or hi.numel() > 1 and (hi != hi.flatten()[0]).any():
            return None
        return tuple(range(int(lo.flatten()[0]), int(hi.flatten()[0]) + 1))
    return None


def _is_factor(site):
    return isinstance(site["fn"], dist.Unit) or site["infer"].get("is_auxiliary", False)


def _site_info(name, site, value, is_observed, num_data=None):
    """The site's SiteInfo; ``num_data``: the data's rows, where ``value`` has the rows of
    a trace on the first of them (the support is described as on all of them)."""
    fn = site["fn"]
    support = fn.support
    shape = tuple(value.shape[1:])
    text = support_repr(support, value.ndim, value.shape[0] if value.ndim else None, num_data)
    if support.is_discrete:
        values = _discrete_values(name, support, value.dtype)
        one_hot = base_constraint(support) is constraints.one_hot  # OneHotCategorical: K states a group
        return SiteInfo(name, shape, True, is_observed, values, None, text, value.dtype, one_hot)
    is_identity = base_constraint(support) is constraints.real
    transform = Transform(biject_to(support), is_identity)
    return SiteInfo(name, shape, False, is_observed, None, transform, text, value.dtype)


def _check_leaf(key, leaf, site, num_rows=None):
    """``leaf`` (all rows) against its site, traced on its first ``num_rows`` rows (None:
    all of them); the values are checked over chunks of rows (see ebm_ppl._rows)."""
    fn = site["fn"]
    if has_nonfinite(leaf):
        raise ValueError(f"data leaf {key!r} (site {site['name']!r}) contains NaN or inf")
    if not leaf.is_floating_point() and (not fn.support.is_discrete
                                         or base_constraint(fn.support) is constraints.boolean):
        what = "continuous" if not fn.support.is_discrete else "a Bernoulli/boolean site, whose values Pyro keeps as floats"
        raise TypeError(f"data leaf {key!r} has dtype {leaf.dtype}, but site {site['name']!r} is {what} "
                        f"(support {fn.support}): pass floating-point data, e.g. x.float()")
    check_leaf_shape(key, leaf.shape, site["name"], tuple(fn.batch_shape) + tuple(fn.event_shape), fn.event_shape,
                     num_rows)
    if not in_support(leaf, fn.support, num_rows):
        raise ValueError(f"data leaf {key!r} has values outside the support {fn.support} of site {site['name']!r}")


def _match_leaves(trace, data, covariates=()):
    """data leaf -> site name; covariates map to themselves (they are inputs, not sites)."""
    observed = [s for s in trace.nodes.values()
                if s["type"] == "sample" and s["is_observed"] and not _is_factor(s)]
    sample_names = {n for n, s in trace.nodes.items() if s["type"] == "sample"}
    modelled, inputs = split_covariates(data, covariates, sample_names, observed)
    mapping = match_leaves(observed, modelled)
    mapping.update({k: k for k in inputs})
    return mapping


def _run(fn, args, kwargs):
    with pyro.validation_enabled(False):
        return poutine.trace(fn).get_trace(*args, **kwargs)


def compile_model(model, data, model_args=(), model_kwargs=None, params=None, covariates=(), trace_rows=None):
    """Trace ``model`` on ``data`` once and return its :class:`~ebm_ppl.backend.ModelInfo`.

    ``covariates`` names data leaves that are inputs (not the obs of any site): they pass
    through ``data_to_values`` / ``values_to_data`` under their own names, one row per chain.
    ``trace_rows``: trace the model on the first ``trace_rows`` rows only (a fit's batch
    size; see :mod:`ebm_ppl._rows`); None: on all rows.
    """
    covariates = check_covariates(covariates, data)
    model_kwargs = model_kwargs or {}
    traced = model if params is None else poutine.substitute(model, data=dict(params))
    head = head_rows(data, trace_rows)
    snapshot = snapshot_params() if head is not data else None
    trace = _first_trace(traced, head, model_args, model_kwargs, data)
    if head is not data and supports_by_row(_sample_sites(trace), _rows(head)):
        # a support with a bound per example, which the other rows may not share: all rows
        restore_snapshot(snapshot)  # traced again on every row, from the param store as it was
        head = data
        trace = _first_trace(traced, head, model_args, model_kwargs, data)
    check_no_subsample(plates(trace.nodes.values()))
    mapping = _match_leaves(trace, head, covariates)
    leaves = data if isinstance(data, dict) else {"data": data}
    check_data_leaves(trace.nodes, leaves, mapping, covariates,
                      lambda k, leaf, site: _check_leaf(k, leaf, site, _rows(head)), has_nonfinite)
    param_names = [n for n, s in trace.nodes.items() if s["type"] == "param"]
    check_param_names(param_names, params, "pyro.param, pyro.module or PyroModule")
    return _Functions(model, traced, model_args, model_kwargs, head, trace, mapping, covariates, param_names,
                      params, {k: leaves[k] for k in covariates}, _rows(data)).model_info()


def _rows(data):
    return int(next(iter(data.values())).shape[0] if isinstance(data, dict) else data.shape[0])


def _sample_sites(trace):
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s) and not _is_factor(s)]


def _first_trace(traced, data, model_args, model_kwargs, full=None):
    """The model's trace on ``data`` (the first rows of ``full``, or all of it); a failure
    is re-raised naming what does not fit."""
    try:
        return _run(traced, (data,) + tuple(model_args), model_kwargs)
    except Exception as e:  # often a data shape the model's own code cannot handle
        if "jax" in str(e) or "ArrayImpl" in str(e):
            raise TypeError("data: the data are torch tensors (the Pyro backend), but running the model "
                            f"mixed them with jax arrays (a NumPyro model?): {type(e).__name__}: {e}. Pass jax "
                            "arrays to fit a NumPyro model, or write the model with pyro") from e
        _explain_failure(traced, data, model_args, model_kwargs, e, full)


class _Functions:
    """The functions of one traced model: the members of its ``ModelInfo``.

    ``by_row`` says whether the model is run one example at a time (sites outside the data
    plate that depend on the example) and ``global_names`` names the parameter-only
    factors outside the data plate (a log prior on θ, left out of the log density); both
    are settled by :meth:`_find_global_factors`, which runs the model on probe rows.
    """

    def __init__(self, model, traced, model_args, model_kwargs, data, trace, mapping, covariates, param_names,
                 params, covariate_leaves=None, data_rows=None):
        self.model, self.traced, self.model_args, self.model_kwargs = model, traced, model_args, model_kwargs
        self.data, self.trace, self.covariates, self.param_names = data, trace, covariates, param_names
        self.store = store = pyro.get_param_store()
        self.leaves = data if isinstance(data, dict) else {"data": data}
        # all rows of the covariates (``data`` may be the first rows only: see compile_model)
        self.covariate_leaves = ({k: self.leaves[k] for k in covariates} if covariate_leaves is None
                                 else covariate_leaves)
        # transform_to, as the param store itself uses (biject_to has no positive_definite)
        self.transforms = {n: transform_to(self._constraint(n)) for n in param_names}
        self.latent_names = [n for n, s in trace.nodes.items()
                             if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)]
        self.observed_names, self.sites = site_table(trace.nodes, self.leaves, mapping, covariates,
                                                     self.latent_names, lambda *a: _site_info(*a, num_data=data_rows))
        num_data = next(iter(self.leaves.values())).shape[0]
        plate = _data_plate(trace, self.observed_names[0], num_data)
        self.plate_name = plate[0] if plate is not None else None
        outside = _check_sites(trace, plate, num_data, data_rows)
        self.data_to_values, self.values_to_data = leaf_converters(data, mapping, self.observed_names)
        self.store_u = {n: store.get_param(n).unconstrained() for n in param_names} if params is None else None
        self.init_params = self.store_u if params is None else self.unconstrain(params)
        # captured graphs are kept (a bounded LRU, see _GRAPHS) for later fits of the same model
        self.scope = (Same(model), tuple(Same(a) for a in model_args),
                      tuple((k, Same(v)) for k, v in sorted(model_kwargs.items())), tuple(param_names),
                      tuple(self.sites), params is None)
        self.global_names = ()  # parameter-only factors outside the data plate: a log prior on θ
        self.by_row = self.plate_name is None
        self.probe_values = None
        if outside:
            self._find_global_factors(outside)
        self.det_names = tuple(n for n, s in trace.nodes.items()
                               if s["type"] == "sample" and (s.get("infer") or {}).get("_deterministic"))

    def model_info(self):
        """The ``ModelInfo``: log density and gradients as captured graphs (:class:`_Captured`)."""
        names, sites, scope = self.param_names, self.sites, self.scope
        log_density = _Captured(self.eager_log_density, names, sites, scope + ("log_density",))
        log_density_grad = _CapturedGrad(self.eager_grad, names, sites, scope + ("grad",))
        captured_weighted = _CapturedWeighted(self.eager_weighted, names, sites, scope + ("weighted",))

        def weighted_param_grad(params_u, values, weights):
            out = captured_weighted(params_u, {**values, "__w__": weights})
            return out[0], dict(zip(names, out[1:]))

        improper = tuple(n for n in sites if _is_improper(self.trace.nodes[n]["fn"]))
        param_constraints = {n: repr(self._constraint(n)) for n in names}
        return ModelInfo(sites, log_density, self.init_params, self.constrain, self.unconstrain,
                         self.data_to_values, self.values_to_data, self.sample_base, self.log_density_parts,
                         improper, log_density_grad, weighted_param_grad, param_constraints,
                         covariates=self.covariate_leaves,
                         log_prior=self.log_prior if self.global_names else None, deterministic=self.deterministic)

    def _constraint(self, name):
        if name in self.store._constraints:
            return self.store._constraints[name]
        return self.trace.nodes[name]["kwargs"].get("constraint", constraints.real)

    def constrain(self, params_u):
        return {n: self.transforms[n](u) for n, u in params_u.items()}

    def unconstrain(self, params_c):
        return {n: self.transforms[n].inv(torch.as_tensor(params_c[n])).detach() for n in self.param_names}

    def eager_log_density(self, params_u, values):
        return self.log_density_parts(params_u, values)[0]

    def eager_grad(self, params_u, values, names, value=True):
        with torch.enable_grad():
            moved = {n: (values[n] if values[n].is_floating_point() else values[n].to(torch.get_default_dtype()))
                     .detach().requires_grad_(True) for n in names}
            ld = self.eager_log_density(params_u, {**values, **moved})
            grads = torch.autograd.grad(ld.sum(), [moved[n] for n in names], allow_unused=True)
        return ld.detach(), {n: torch.zeros_like(moved[n]) if g is None else g for n, g in zip(names, grads)}

    def eager_weighted(self, params_u, values):
        """(log p̃ per row, ∇θ Σ_rows w_row log p̃) with the weights in values["__w__"]."""
        values = dict(values)
        w = values.pop("__w__")
        names = self.param_names
        with torch.enable_grad():
            leaves = {n: u.detach().requires_grad_(True) for n, u in params_u.items()}
            ld = self.eager_log_density(leaves, values)
            grads = torch.autograd.grad((ld * w).sum(), [leaves[n] for n in names], allow_unused=True)
        grads = tuple(torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(names, grads))
        return (ld.detach(),) + grads

    def run(self, params_u, values, skip=(), record=None):
        """(log p̃, log base) per row from one run of the model on ``values`` (sites in
        ``skip`` left out of the total; ``record``: site name -> log-prob, filled in)."""
        substituted = None
        if self.store_u is None or any(params_u[n] is not self.store_u[n] for n in self.param_names):
            substituted = self.constrain(params_u)
        num_chains = next(iter(values.values())).shape[0]
        handler = _LogDensityMessenger({n: values[n] for n in self.latent_names}, substituted, self.plate_name,
                                       num_chains, skip, record)
        with pyro.validation_enabled(False), handler:
            self.model(self.values_to_data(values), *self.model_args, **self.model_kwargs)
        total, base = (torch.as_tensor(t).expand(num_chains) if torch.as_tensor(t).dim() == 0 else t
                       for t in (handler.total, handler.base))
        return total, base

    def log_density_parts(self, params_u, values):
        if not self.by_row:
            return self.run(params_u, values, self.global_names)
        # sites outside the data plate: the model is run one example at a time
        num_chains = next(iter(values.values())).shape[0]
        rows = [self.run(params_u, {k: v[i:i + 1] for k, v in values.items()}, self.global_names)
                for i in range(num_chains)]
        return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])

    def log_prior(self, params_u):
        """The parameter-only factors (once, not per example)."""
        record = {}
        self.run(params_u, {k: v[:1] for k, v in self.probe_values.items()}, record=record)
        return sum(record[n].sum() for n in self.global_names)

    def sample_base(self, rng_key, num_chains):
        first = {k: v[:1].expand((num_chains,) + tuple(v.shape[1:])) for k, v in self.leaves.items()}
        seed = int(torch.randint(0, 2**62, (), generator=rng_key, device=rng_key.device))
        out = {}
        with torch.random.fork_rng(devices=[] if rng_key.device.type == "cpu" else [rng_key.device]):
            torch.manual_seed(seed)
            batch = first if isinstance(self.data, dict) else first["data"]
            tr = _run(self.traced, (batch,) + tuple(self.model_args), self.model_kwargs)
            for name, site in self.sites.items():
                node = tr.nodes[name]
                try:
                    x = node["fn"].sample()
                    if x.numel() != num_chains * math.prod(site.shape):  # no data plate: one draw a chain
                        x = node["fn"].sample((num_chains,))
                    out[name] = x.reshape((num_chains,) + site.shape)
                except NotImplementedError:
                    x = torch.rand((num_chains,) + site.shape, device=rng_key.device) * 4 - 2
                    out[name] = site.transform(x.to(site.dtype)).detach()
        return {k: v.to(self.sites[k].dtype).detach() for k, v in out.items()}

    def _find_global_factors(self, outside):
        """Tell the factors outside the data plate that depend on no site (the same at every
        probe row, with noisy parameters) from the rest; with only such factors outside,
        the model still runs on all rows at once."""
        self.probe_values = probe_values = _probe_rows(self.sample_base, self.sites,
                                                       rng_like=next(iter(self.leaves.values())))
        with torch.no_grad():
            g = torch.Generator(device=probe_values[next(iter(probe_values))].device).manual_seed(20_021)
            noisy = {n: u + torch.randn(u.shape, generator=g, dtype=u.dtype, device=u.device) if u.is_floating_point()
                     else u for n, u in self.init_params.items()}  # parameters at zero would hide a dependence
            record = {}
            for i in range(next(iter(probe_values.values())).shape[0]):
                row = {}
                self.run(noisy, {k: v[i:i + 1] for k, v in probe_values.items()}, record=row)
                for n in outside:
                    record.setdefault(n, []).append(row[n].detach().reshape(-1).cpu().numpy())
        self.global_names = tuple(n for n in outside if _is_factor(self.trace.nodes[n]) and not differs(record[n]))
        self.by_row = len(self.global_names) < len(outside) or self.plate_name is None

    def deterministic(self, params_u, values):
        """{deterministic site: value per row} of the model run on ``values`` (every site)."""
        if self.det_names and self.by_row:
            raise NotImplementedError(f"deterministic site(s) {list(self.det_names)} of a model read one example "
                                      "at a time (sites outside the data plate)")
        if not self.det_names:
            return {}
        with poutine.trace() as recorded:
            self.run(params_u, values)
        return {n: recorded.trace.nodes[n]["value"].detach() for n in self.det_names}


_GRAPHS = collections.OrderedDict()
_GRAPHS_SIZE = 16


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
        outputs = _output_nodes(g)
        for n in list(g.nodes):
            if n.op == "call_function" and _op_name(n.target) == "detach" and not (
                    n in outputs and n.args[0].op == "placeholder"):  # outputs never alias inputs
                n.replace_all_uses_with(n.args[0])
                g.erase_node(n)
    for n in list(g.nodes):
        if _same_shape_reshape(n):
            n.replace_all_uses_with(n.args[0])
            g.erase_node(n)
    g.eliminate_dead_code()
    graph.recompile()
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
    g.eliminate_dead_code()
    if not any(_mutates(n) for n in g.nodes):  # the rewrites below change which tensors alias which
        _drop_identities(graph)
        _drop_reshape_chains(g)
        _merge_repeats(g)
        g.eliminate_dead_code()
    graph.recompile()
    return graph


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


class _Captured:
    """The model's per-example log density as a Pyro-free graph of ATen operations,
    captured once per input shape with ``torch.fx``'s ``make_fx`` (including the backward
    pass where the function takes gradients), so that the hot loop of a fit runs the
    model's tensor operations without Pyro's handler stack.

    Capture runs on fake tensors (``tracing_mode="fake"``): Python control flow on tensor
    values cannot be recorded there and raises, and the model then runs eagerly. A graph
    is only used after it reproduces the eager function at the captured inputs and at two
    perturbed ones (parameters + noise, discrete values redrawn from their supports,
    continuous ones moved), which refuses graphs of models that draw fresh randomness.
    Graphs are kept for later fits of the same model and arguments in ``_GRAPHS``, a
    least-recently-used cache of ``_GRAPHS_SIZE`` models (an evicted graph is freed).
    ``EBM_PPL_NO_CAPTURE=1`` turns capture off (everything runs eagerly).
    """

    def __init__(self, eager, param_names, sites, scope):
        self.eager = eager
        self.param_names = list(param_names)
        self.sites = sites
        self.cache = _GRAPHS.setdefault(scope, {})  # shape key -> graph (None: runs eagerly)
        _GRAPHS.move_to_end(scope)
        while len(_GRAPHS) > _GRAPHS_SIZE:
            _GRAPHS.popitem(last=False)
        self.calls = {}  # shape key -> calls so far
        self.enabled = not os.environ.get("EBM_PPL_NO_CAPTURE")

    grad_free = False  # the outputs never carry autograd history (explicit gradients): see _CapturedGrad

    def __call__(self, params_u, values, *extra):
        if not self.enabled:
            return self.eager(params_u, values, *extra)
        names = sorted(values)
        args = [params_u[n] for n in self.param_names] + [values[n] for n in names]
        key = (tuple(names), *[(a.shape, a.dtype, a.device) for a in args], *extra)
        if key not in self.cache:  # capture a shape at its third call, so that one-off
            calls = self.calls.get(key, 0)  # shapes (structure probes) never are
            if calls < capture_after():
                self.calls[key] = calls + 1
                return self.eager(params_u, values, *extra)
            self.cache[key] = self._capture(params_u, values, names, extra)
        graph = self.cache[key]
        if graph is None:
            return self.eager(params_u, values, *extra)
        if self.grad_free:  # the graph's detaches are dropped (see _simplify): no autograd to record
            with torch.no_grad():
                return self._unflatten(graph.forward(*args), extra)
        return self._unflatten(graph.forward(*args), extra)

    def _unflatten(self, out, extra):
        return out

    def _flat(self, names, extra):
        num_params = len(self.param_names)

        def flat(*args):
            p = dict(zip(self.param_names, args[:num_params]))
            return self.eager(p, dict(zip(names, args[num_params:])), *extra)

        return flat

    def _capture(self, params_u, values, names, extra):
        flat = self._flat(names, extra)
        inputs = tuple(params_u[n].detach().clone() for n in self.param_names)
        inputs += tuple(values[n].detach().clone() for n in names)
        try:
            with torch.no_grad():
                graph = make_fx(flat, tracing_mode="fake")(*inputs)
        except Exception:  # data-dependent control flow, an op fake tensors lack, ...: run eagerly
            return None
        try:
            with torch.no_grad():
                graph = _simplify(graph, inputs, drop_detach=self.grad_free)
                if self._agrees(graph, flat, inputs, names):
                    return graph
        except Exception:
            pass
        return None

    def _perturbed(self, inputs, names, g):
        """Other valid inputs: parameters + N(0, 0.1²) noise; discrete values redrawn
        uniformly from their supports; continuous values moved in unconstrained space."""
        num_params = len(self.param_names)
        out = [a + 0.1 * torch.randn(a.shape, generator=g, dtype=a.dtype, device=a.device)
               if a.is_floating_point() else a for a in inputs[:num_params]]
        for name, v in zip(names, inputs[num_params:]):
            site = self.sites.get(name)
            if site is None:  # not a site (e.g. the weights of weighted_param_grad): kept
                out.append(v)
                continue
            if site.is_discrete and site.values is not None:
                choices = torch.as_tensor(site.values, dtype=v.dtype, device=v.device)
                v = choices[torch.randint(len(site.values), v.shape, generator=g, device=v.device)]
            elif v.is_floating_point():
                noise = 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype, device=v.device)
                v = site.transform(site.transform.inv(v) + noise) if site.transform is not None else v + noise
            out.append(v)
        return tuple(out)

    def _agrees(self, graph, flat, inputs, names):
        g = torch.Generator(device=inputs[0].device).manual_seed(0)
        for args in (inputs, self._perturbed(inputs, names, g), self._perturbed(inputs, names, g)):
            want, got = flat(*args), graph(*args)
            want = want if isinstance(want, (tuple, list)) else (want,)
            got = got if isinstance(got, (tuple, list)) else (got,)
            if len(want) != len(got):
                return False
            for w, o in zip(want, got):
                if not isinstance(o, torch.Tensor) or o.shape != torch.as_tensor(w).shape:
                    return False
                if not torch.allclose(o, w, rtol=1e-5, atol=1e-5, equal_nan=True):
                    return False
        return True


class _CapturedWeighted(_Captured):
    """``weighted_param_grad``'s graph: (log p̃ per row, ∇θ Σ w log p̃), outputs without
    autograd history (run under ``torch.no_grad``, its detaches dropped)."""

    grad_free = True


class _CapturedGrad(_Captured):
    """``log_density_grad(params, values, names, value=True) -> (log p̃ per row, {name:
    gradient})``, the gradient of Σ log p̃ with respect to ``values[name]``, captured with
    its backward pass as one graph run without autograd (the gradient path of
    :class:`~ebm_ppl.samplers.BlockGibbs` and MALA/HMC/GWG call it at every step). With
    ``value=False`` the log density may be None (a captured graph then holds the backward
    pass alone: BlockGibbs's gradient path needs no value, and the forward pass is dead code)."""

    grad_free = True

    def __call__(self, params_u, values, names, value=True):
        return super().__call__(params_u, values, tuple(names), bool(value))

    def _flat(self, names, extra):
        eager = _Captured._flat(self, names, extra[:1])
        names_, value = extra

        def flat(*args):
            ld, grads = eager(*args)
            return ((ld,) if value else ()) + tuple(grads[n] for n in names_)

        return flat

    def _unflatten(self, out, extra):
        names, value = extra
        return (out[0], dict(zip(names, out[1:]))) if value else (None, dict(zip(names, out)))


def _is_improper(fn):
    while True:
        if isinstance(fn, dist.ImproperUniform):
            return True
        if not hasattr(fn, "base_dist"):
            return False
        fn = fn.base_dist


class _LogDensityMessenger(Messenger):
    """One light handler instead of trace + condition + substitute: conditions the latent
    sites, substitutes parameters, and sums each sample site's log-probability per example
    as the model runs (no Trace object is built): ``total`` is log p̃, ``base`` the part
    from the sites' distributions (factors excluded)."""

    def __init__(self, latents, params, plate_name, num_chains, skip=(), record=None):
        super().__init__()
        self.latents, self.params = latents, params
        self.plate_name, self.num_chains = plate_name, num_chains
        self.skip, self.record = skip, record  # sites left out of the total; name -> log-prob
        self.total = self.base = 0.0
        self.swap, self.swap_entered = _SwapTensors(), False

    def __exit__(self, *exc):
        out = super().__exit__(*exc)
        if self.swap_entered:
            self.swap.__exit__(*exc)
            self.swap_entered = False
        return out

    def _pyro_param(self, msg):
        if self.params is None or msg["name"] not in self.params:
            return
        value = self.params[msg["name"]]
        init = msg["args"][1] if len(msg["args"]) > 1 else None
        if isinstance(init, torch.nn.Parameter):
            # a module's own parameter (pyro.module, an nn.Parameter of a PyroModule): the
            # module computes with that tensor, not with what pyro.param returns, so every
            # use of it is replaced while the model runs (and pyro.module's
            # update_module_params, seeing its own tensor back, leaves the module alone)
            if not self.swap.swap:  # entered at the first module parameter only
                self.swap.__enter__()
                self.swap_entered = True
            self.swap.swap[id(init)] = (init, value)
            stored = pyro.get_param_store()._params.get(msg["name"])
            if stored is not None:
                self.swap.swap[id(stored)] = (stored, value)
            return
        msg["value"] = value

    def _pyro_sample(self, msg):
        value = self.latents.get(msg["name"])
        if value is not None:
            msg["value"] = value
            msg["is_observed"] = True

    def _pyro_post_sample(self, msg):
        if site_is_subsample(msg):
            return
        lp = msg["fn"].log_prob(msg["value"])
        mask = msg["mask"]
        if mask is not None and mask is not True:
            lp = lp * mask if mask is not False else lp * 0
        if msg["scale"] != 1.0:
            lp = msg["scale"] * lp
        lp = _per_example(lp, msg, self.plate_name, self.num_chains)
        if self.record is not None:
            self.record[msg["name"]] = lp
        if msg["name"] in self.skip:
            return
        self.total = self.total + lp
        if not _is_factor(msg):
            self.base = self.base + lp


class _SwapTensors(TorchFunctionMode):
    """Replaces given tensors (by identity) in every torch operation: a module's parameters
    by the values a call substitutes for them."""

    def __init__(self):
        super().__init__()
        self.swap = {}  # id -> (tensor, replacement); the tensor is kept so its id stays unique

    def _replace(self, a):
        hit = self.swap.get(id(a)) if isinstance(a, torch.Tensor) else None
        return a if hit is None or hit[0] is not a else hit[1]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.swap:
            args, kwargs = tree_map(self._replace, (tuple(args), kwargs or {}))
        return func(*args, **(kwargs or {}))


class _Recorder(Messenger):
    """Records sample sites as they happen, so a model that fails part-way can be explained."""

    def __init__(self):
        super().__init__()
        self.sites = []

    def _pyro_post_sample(self, msg):
        self.sites.append(msg)


def _explain_failure(fn, data, model_args, model_kwargs, error, full=None):
    """Re-raise a failed first run as a ValueError naming the site whose data does not fit
    (``data``: the first rows of ``full``, or all of it)."""
    recorder = _Recorder()
    try:
        with pyro.validation_enabled(False), recorder:
            fn(data, *model_args, **model_kwargs)
    except Exception:
        pass
    check_no_subsample(plates(recorder.sites))
    explain_failure(recorder.sites, data, lambda k, leaf, site: _check_leaf(k, leaf, site, _rows(data)), error, full)


def _data_plate(trace, site_name, num_data):
    """The data plate ``(name, dim)``: the observed site's plate of the data's size."""
    frames = [f for f in trace.nodes[site_name]["cond_indep_stack"] if f.size == num_data]
    if not frames:
        return None
    frame = min(frames, key=lambda f: f.dim)
    return frame.name, frame.dim


def _check_sites(trace, plate, num_data, data_rows=None):
    """Check the shapes of the factors inside the data plate and return the sample sites
    outside it (raises for a latent site outside it: one value per example is needed)."""
    check_no_obs_mask({name: bool(site["is_observed"]) for name, site in trace.nodes.items()
                       if site["type"] == "sample"})
    outside = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        frames = [(f.name, f.dim, f.size) for f in site["cond_indep_stack"]]
        if plate is not None and any(f[0] == plate[0] for f in frames):
            if _is_factor(site):
                check_factor_shape(name, tuple(site["value"].shape[:-1]), frames, plate, num_data, data_rows)
            continue
        if not site["is_observed"]:
            raise latent_outside_plate(name, plate)
        outside.append(name)
    return outside


def _probe_rows(sample_base, sites, rng_like, num_rows=8):
    """Rows of every site for telling factors of the parameters alone from factors of the
    sites: draws from the bases, and for discrete sites rows at the ends of the support."""
    key = torch.Generator(device=rng_like.device).manual_seed(20_021)
    values = sample_base(key, num_rows)
    for name, site in sites.items():
        if site.is_discrete and site.values is not None:
            v = values[name].clone()
            v[0], v[1] = min(site.values), max(site.values)
            values[name] = v
    return values


def _per_example(lp, site, plate_name, num_chains):
    lp = torch.as_tensor(lp)
    if lp.dim() == 0:
        return lp
    frame = next((f for f in site["cond_indep_stack"] if f.name == plate_name), None)
    if frame is not None and frame.dim is not None and lp.dim() >= -frame.dim:
        lp = lp.movedim(frame.dim, 0)
    elif lp.shape[0] != num_chains:
        return lp.sum()
    return lp.reshape((lp.shape[0], -1)).sum(-1)


def restore_params(info, saved_u):
    """Copy saved unconstrained values into the param store's tensors (in place)."""
    out = {}
    with torch.no_grad():
        for name, u in info.init_params.items():
            u.copy_(saved_u[name])
            out[name] = u
    return out


def store_params(info, params_u):
    """Pyro's parameters already live in the param store; nothing to do."""
    return None


def snapshot_params():
    """The param store's names, constraints and (copies of the) unconstrained values."""
    store = pyro.get_param_store()
    return {name: (store._params[name], store._params[name].detach().clone(), store._constraints.get(name))
            for name in list(store._params)}


def restore_snapshot(snapshot):
    """Put the param store back as :func:`snapshot_params` found it: parameters a rejected
    call added are removed, values and constraints of the others restored (in place)."""
    store = pyro.get_param_store()
    for name in [n for n in store._params if n not in snapshot]:
        del store[name]
    with torch.no_grad():
        for name, (tensor, value, constraint) in snapshot.items():
            if store._params.get(name) is not tensor:
                old = store._params.get(name)
                if old is not None:
                    store._param_to_name.pop(old, None)
                store._params[name] = tensor
                store._param_to_name[tensor] = name
            if tensor.shape == value.shape:
                tensor.copy_(value)
            if constraint is not None:
                store._constraints[name] = constraint
