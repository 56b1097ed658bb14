"""A traced Pyro model's functions of tensors: the members of its ``ModelInfo``.

Chains are the batch axis: the log density of C chains is one run of the model with a
batch of C examples (the model's own data plate vectorizes it), reduced to one value per
example along the data plate's dimension.
"""

import math

import torch
import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.distributions import constraints
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to, transform_to

from ebm_ppl._sites import (Same, Transform, base_constraint, check_factor_shape, check_no_obs_mask, differs,
                            latent_outside_plate, leaf_converters, site_table)
from ebm_ppl.backend import ModelInfo, SiteInfo

from .capture import _Captured, _CapturedGrad, _CapturedWeighted
from .handlers import _AncestralDraws, _LogDensityMessenger, _is_factor
from .param_store import store_state
from .rows import support_repr


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


def _run(fn, args, kwargs):
    with pyro.validation_enabled(False):
        return poutine.trace(fn).get_trace(*args, **kwargs)


def _is_improper(fn):
    while True:
        if isinstance(fn, dist.ImproperUniform):
            return True
        if not hasattr(fn, "base_dist"):
            return False
        fn = fn.base_dist


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
        store = pyro.get_param_store()
        self.store_constraints = store_state()["constraints"]
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
        if name in self.store_constraints:
            return self.store_constraints[name]
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
        """``num_chains`` joint draws from the base measure: the model run on the first data
        row, one row per chain, every site drawn from its distribution given the sites drawn
        before it (:class:`_AncestralDraws`), so that a site whose base depends on another's
        value is drawn from that conditional, as ``log_density_parts``' log base has it. A
        model whose sites do not all lie in the data plate is run once per chain."""
        seed = int(torch.randint(0, 2**62, (), generator=rng_key, device=rng_key.device))
        with torch.random.fork_rng(devices=[] if rng_key.device.type == "cpu" else [rng_key.device]):
            torch.manual_seed(seed)
            out = None if self.by_row else self._ancestral(num_chains, rng_key.device)
            if out is None:  # one chain at a time
                rows = [self._ancestral(1, rng_key.device) for _ in range(num_chains)]
                out = {n: torch.cat([r[n] for r in rows]) for n in self.sites}
        return {n: v.to(self.sites[n].dtype) for n, v in out.items()}

    def _ancestral(self, rows, device):
        """One run of the model on ``rows`` copies of the first data row under
        :class:`_AncestralDraws`: {site: (rows, *shape)}, or None where a site's draw does
        not have ``rows`` rows (a site outside the data plate)."""
        first = {k: v[:1].expand((rows,) + tuple(v.shape[1:])) for k, v in self.leaves.items()}
        batch = first if isinstance(self.data, dict) else first["data"]
        draws = _AncestralDraws({n: s.transform for n, s in self.sites.items()}, device)
        tr = _run(draws(self.traced), (batch,) + tuple(self.model_args), self.model_kwargs)
        out = {}
        for name, site in self.sites.items():
            value = tr.nodes[name]["value"]
            if value.numel() != rows * math.prod(site.shape):
                return None
            out[name] = value.reshape((rows,) + tuple(site.shape))
        return out

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
