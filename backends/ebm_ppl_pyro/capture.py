"""The model's log density and gradients captured once per input shape as Pyro-free
``torch.fx`` graphs, checked against the eager functions before use."""

import collections
import os

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from .capture_policy import capture_after
from .graph_passes import _simplify

_GRAPHS = collections.OrderedDict()
_GRAPHS_SIZE = 16


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
