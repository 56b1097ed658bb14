"""A NumPyro model turned into pure, jittable functions of arrays (``ModelInfo``).

The per-chain log density is the model's log density on a batch of one example, vmapped
over chains, with parameters substituted (so they are function arguments, not the init
trace's values).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import compute_log_probs

from ebm_ppl._sites import (Transform, base_constraint, check_covariates, check_data_leaves, check_factor_shape,
                            check_leaf_shape, check_no_obs_mask, check_no_subsample, check_param_names, differs,
                            explain_failure, latent_outside_plate, leaf_converters, match_leaves, site_table,
                            split_covariates)
from ebm_ppl.backend import ModelInfo, SiteInfo
from ebm_ppl.samplers._numerics import differentiate

from .ops import ops
from .plates import plates
from .quick_draws import AncestralDraws, QuickDraws
from .rows import has_nonfinite, head_rows, in_support, supports_by_row

__all__ = ["compile_model", "as_data", "restore_params", "store_params", "snapshot_params", "restore_snapshot"]


def as_data(data):
    """JAX arrays for every leaf (numpy arrays are copied, jax arrays are left alone);
    float16 / bfloat16 leaves become float32 copies: a fit, its chains and its results are
    computed in float32 (a half-precision chain takes a few hundred distinct values)."""
    if isinstance(data, dict):
        return {k: as_data(v) for k, v in data.items()}
    if not isinstance(data, jax.Array):
        data = _host_to_jax(data)
    return data.astype(jnp.float32) if data.dtype in (jnp.float16, jnp.bfloat16) else data


def _host_to_jax(data):
    """One JAX copy of host data that never shares the caller's memory. (``jnp.asarray``
    copies a numpy array twice on the way, a peak of three times its size with the
    caller's; ``jax.device_put`` copies it once, but on CPU may instead share the memory
    of an aligned array, which a later change by the caller would change: that one is
    copied on the device.)"""
    host = data if type(data) is np.ndarray else np.array(data)
    out = jax.device_put(host)
    if host is data and _shares_memory(out, host):
        out = jnp.array(out, copy=True)
    return out.block_until_ready()


def _shares_memory(array, host):
    try:
        return host.size > 0 and array.unsafe_buffer_pointer() == host.__array_interface__["data"][0]
    except Exception:  # not one buffer on one device: a copy was made
        return False


def _discrete_values(support):
    base = base_constraint(support)
    if base is constraints.boolean:
        return (0, 1)
    if isinstance(base, constraints._IntegerInterval):
        lo, hi = np.asarray(base.lower_bound), np.asarray(base.upper_bound)
        if (lo != lo.flat[0]).any() or (hi != hi.flat[0]).any():
            return None
        return tuple(range(int(lo.flat[0]), int(hi.flat[0]) + 1))
    return None


def _unwrap(fn):
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def _is_factor(site):
    return isinstance(_unwrap(site["fn"]), dist.Unit)


def _site_info(name, site, value, is_observed):
    support = site["fn"].support
    shape = tuple(value.shape[1:])
    if support.is_discrete:
        return SiteInfo(name, shape, True, is_observed, _discrete_values(support), None,
                        repr(support), value.dtype)
    is_identity = base_constraint(support) is constraints.real
    transform = Transform(biject_to(support), is_identity)
    return SiteInfo(name, shape, False, is_observed, None, transform, repr(support), value.dtype)


def _check_leaf(key, leaf, site, num_rows=None):
    """``leaf`` (all rows) against its site, traced on its first ``num_rows`` rows (None:
    all of them); the values are checked over chunks of rows (see ebm_ppl._rows)."""
    fn = site["fn"]
    if has_nonfinite(leaf):
        raise ValueError(f"data leaf {key!r} (site {site['name']!r}) contains NaN or inf")
    if not fn.support.is_discrete and not jnp.issubdtype(leaf.dtype, jnp.floating):
        raise TypeError(f"data leaf {key!r} has dtype {leaf.dtype}, but site {site['name']!r} is continuous "
                        f"(support {fn.support}): pass floating-point data")
    check_leaf_shape(key, leaf.shape, site["name"], tuple(fn.batch_shape) + tuple(fn.event_shape), fn.event_shape,
                     num_rows)
    if not in_support(leaf, fn.support, num_rows):
        raise ValueError(f"data leaf {key!r} has values outside the support {fn.support} of site {site['name']!r}")


def _match_leaves(trace, data, covariates=()):
    """data leaf -> site name; covariates map to themselves (they are inputs, not sites)."""
    observed = [s for s in trace.values()
                if s["type"] == "sample" and s["is_observed"] and not _is_factor(s)]
    sample_names = {n for n, s in trace.items() if s["type"] == "sample"}
    modelled, inputs = split_covariates(data, covariates, sample_names, observed)
    mapping = match_leaves(observed, modelled)
    mapping.update({k: k for k in inputs})
    return mapping


class _Recorder(numpyro.primitives.Messenger):
    """Records sample sites as they happen, so a model that fails part-way can be explained."""

    def __init__(self, fn):
        super().__init__(fn)
        self.sites, self.plates = [], []

    def postprocess_message(self, msg):
        if msg["type"] == "sample":
            self.sites.append(msg)
        elif msg["type"] == "plate":
            self.plates.append(msg)


def _explain_failure(fn, data, model_args, model_kwargs, error, full=None):
    """Re-raise a failed first run as a ValueError naming the site whose data does not fit
    (``data``: the first rows of ``full``, or all of it)."""
    recorder = _Recorder(fn)
    try:
        recorder(data, *model_args, **model_kwargs)
    except Exception:
        pass
    check_no_subsample(plates(recorder.plates))
    explain_failure(recorder.sites, data, lambda k, leaf, site: _check_leaf(k, leaf, site, _rows(data)), error, full)


def compile_model(model, data, model_args=(), model_kwargs=None, params=None, covariates=(), trace_rows=None):
    """Trace ``model`` on ``data`` once and return its :class:`~ebm_ppl.backend.ModelInfo`.

    ``covariates`` names data leaves that are inputs (not the obs of any site): they pass
    through ``data_to_values`` / ``values_to_data`` under their own names, one row per chain.
    ``trace_rows``: trace the model on the first ``trace_rows`` rows only (a fit's batch
    size; see :mod:`ebm_ppl._rows`); None: on all rows.
    """
    covariates = check_covariates(covariates, data)
    model_kwargs = model_kwargs or {}
    model_args = tuple(model_args)
    traced = handlers.seed(model, rng_seed=0)
    if params is not None:
        traced = handlers.substitute(traced, data=dict(params))
    first = handlers.seed(QuickDraws(model), rng_seed=0)  # latent values: only their shapes are used
    if params is not None:
        first = handlers.substitute(first, data=dict(params))
    head = head_rows(data, trace_rows)
    trace = _first_trace(first, head, model_args, model_kwargs, data)
    if head is not data and supports_by_row(_sample_sites(trace), _rows(head)):
        # a support with a bound per example, which the other rows may not share: all rows
        head = data
        trace = _first_trace(first, head, model_args, model_kwargs, data)
    check_no_subsample(plates(trace.values()))
    mapping = _match_leaves(trace, head, covariates)
    leaves = data if isinstance(data, dict) else {"data": data}
    check_data_leaves(trace, leaves, mapping, covariates, lambda k, leaf, site: _check_leaf(k, leaf, site, _rows(head)),
                      has_nonfinite)
    param_sites = {n: s for n, s in trace.items() if s["type"] == "param"}
    check_param_names(param_sites, params, "numpyro.param or numpyro.contrib.module")
    return _Functions(model, traced, model_args, model_kwargs, head, trace, mapping, covariates, param_sites,
                      params, {k: leaves[k] for k in covariates}, _rows(data)).model_info()


def _rows(data):
    return int(next(iter(data.values())).shape[0] if isinstance(data, dict) else data.shape[0])


def _sample_sites(trace):
    return [s for s in trace.values() if s["type"] == "sample" and not _is_factor(s)]


def _first_trace(traced, data, model_args, model_kwargs, full=None):
    """The model's trace on ``data`` (the first rows of ``full``, or all of it); a failure
    is re-raised naming what does not fit."""
    try:
        return handlers.trace(traced).get_trace(data, *model_args, **model_kwargs)
    except Exception as e:  # often a data shape the model's own code cannot handle
        if "Tensor" in str(e) or "torch" in str(e):
            raise TypeError("data: the data are jax arrays (the NumPyro backend), but running the model "
                            f"mixed them with torch tensors (a Pyro model?): {type(e).__name__}: {e}. Pass torch "
                            "tensors to fit a Pyro model, or write the model with numpyro") from e
        _explain_failure(traced, data, model_args, model_kwargs, e, full)


class _Functions:
    """The pure functions of one traced model: the members of its ``ModelInfo``.

    ``plate`` is the data plate when one run of the model vectorizes over rows (None: the
    model is run one example at a time), ``global_names`` the parameter-only factors
    outside the data plate (a log prior on θ, left out of the log density); both are
    settled by :meth:`_find_global_factors`, which runs these functions on probe rows.
    """

    def __init__(self, model, traced, model_args, model_kwargs, data, trace, mapping, covariates, param_sites,
                 params, covariate_leaves=None, data_rows=None):
        self.model, self.traced, self.model_args, self.model_kwargs = model, traced, model_args, model_kwargs
        self.data, self.trace, self.covariates, self.param_sites = data, trace, covariates, param_sites
        self.params = params  # given parameters (None: the model's own numpyro.param values)
        self.leaves = data if isinstance(data, dict) else {"data": data}
        # all rows of the covariates (``data`` may be the first rows only: see compile_model)
        self.covariate_leaves = ({k: self.leaves[k] for k in covariates} if covariate_leaves is None
                                 else covariate_leaves)
        self.transforms = {
            n: biject_to(s["kwargs"].get("constraint", constraints.real)) for n, s in param_sites.items()
        }
        self.latent_names = [n for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]]
        self.observed_names, self.sites = site_table(trace, self.leaves, mapping, covariates, self.latent_names,
                                                     _site_info)
        self.data_to_values, self.values_to_data = leaf_converters(data, mapping, self.observed_names)
        self.init_params = self.unconstrain(
            {n: s["value"] for n, s in param_sites.items()} if params is None else params)
        num_data = next(iter(self.leaves.values())).shape[0]
        data_plate = _data_plate(trace, self.observed_names, num_data)
        outside = _check_sites(trace, data_plate, num_data, data_rows)
        self.global_names = ()  # parameter-only factors outside the data plate: a log prior on θ
        self.plate = data_plate if not outside else None
        self.probe_values = None
        if outside:
            self._find_global_factors(outside, data_plate)
        self.det_names = tuple(n for n, s in trace.items() if s["type"] == "deterministic")

    def model_info(self):
        trace = self.trace
        improper = tuple(n for n in self.sites if isinstance(_unwrap(trace[n]["fn"]), dist.ImproperUniform))
        param_constraints = {n: repr(s["kwargs"].get("constraint", constraints.real))
                             for n, s in self.param_sites.items()}
        return ModelInfo(self.sites, self.log_density, self.init_params, self.constrain, self.unconstrain,
                         self.data_to_values, self.values_to_data, self.sample_base, self.log_density_parts,
                         improper, self.log_density_grad, self.weighted_param_grad, param_constraints,
                         covariates=self.covariate_leaves,
                         log_prior=self.log_prior if self.global_names else None, deterministic=self.deterministic)

    def constrain(self, params_u):
        return {n: jax.tree_util.tree_map(self.transforms[n], u) for n, u in params_u.items()}

    def unconstrain(self, params_c):
        return {n: jax.tree_util.tree_map(self.transforms[n].inv, params_c[n]) for n in self.param_sites}

    def log_density(self, params_u, values):
        return self.log_density_parts(params_u, values)[0]

    def _one_row(self, params_c, example):
        """{site: log-prob} of the model run on one example (``example``: one row of each site)."""
        first = self.values_to_data({k: example[k][None] for k in self.observed_names
                                     + [c for c in self.covariates if c in example]})
        latents = {k: example[k][None] for k in self.latent_names}
        log_probs, tr = compute_log_probs(self.model, (first,) + self.model_args, self.model_kwargs,
                                          {**params_c, **latents}, sum_log_prob=False)
        return {n: jnp.sum(lp) for n, lp in log_probs.items()}, tr

    def log_density_parts(self, params_u, values):
        params_c = self.constrain(params_u)
        if self.plate is not None:  # one run of the model on all rows, its data plate vectorizing it
            return _batched_log_density(self.model, self.model_args, self.model_kwargs, params_c, values,
                                        self.observed_names, self.latent_names, self.values_to_data, self.plate,
                                        self.global_names)

        def one(example):  # sites outside the data plate: the model is run one example at a time
            log_probs, tr = self._one_row(params_c, example)
            total = sum((lp for n, lp in log_probs.items() if n not in self.global_names), jnp.zeros(()))
            base = sum((lp for n, lp in log_probs.items() if not _is_factor(tr[n])), jnp.zeros(()))
            return total, base

        return jax.vmap(one)(values)

    def log_prior(self, params_u):
        """The parameter-only factors (once, not per example)."""
        log_probs, _ = self._one_row(self.constrain(params_u), {k: v[0] for k, v in self.probe_values.items()})
        return sum(log_probs[n] for n in self.global_names)

    def sample_base(self, rng_key, num_chains):
        """``num_chains`` joint draws from the base measure: one run of the model per chain
        (vmapped) on the first data row, every site drawn from its distribution given the
        sites drawn before it (:class:`AncestralDraws`), so that a site whose base depends on
        another's value is drawn from that conditional, as ``log_density_parts``' log base
        has it."""
        row = {k: v[:1] for k, v in self.leaves.items()}
        data = row if isinstance(self.data, dict) else row["data"]
        size = len(self.trace)  # at least one key for each draw of the model
        keys = jax.random.split(rng_key, num_chains * size)
        keys = keys.reshape((num_chains, size) + tuple(keys.shape[1:]))
        transforms = {n: site.transform for n, site in self.sites.items()}

        def one(keys):
            fn = AncestralDraws(self.model, keys, transforms)
            if self.params is not None:
                fn = handlers.substitute(fn, data=dict(self.params))
            tr = handlers.trace(handlers.seed(fn, rng_seed=0)).get_trace(data, *self.model_args, **self.model_kwargs)
            return {n: jnp.reshape(tr[n]["value"], site.shape).astype(site.dtype) for n, site in self.sites.items()}

        return jax.vmap(one)(keys)

    def _find_global_factors(self, outside, data_plate):
        """Tell the factors outside the data plate that depend on no site (the same at every
        probe row, with noisy parameters) from the rest; with only such factors outside,
        the model still runs on all rows at once."""
        self.probe_values = _probe_rows(self.sample_base, self.sites)
        flat, treedef = jax.tree_util.tree_flatten(self.init_params)
        keys = jax.random.split(jax.random.PRNGKey(20_021), len(flat))
        noisy = jax.tree_util.tree_unflatten(treedef, [  # parameters at zero would hide a dependence
            u + jax.random.normal(k, jnp.shape(u), jnp.result_type(u))
            if jnp.issubdtype(jnp.result_type(u), jnp.floating) else u for k, u in zip(keys, flat)])
        rows = jax.vmap(lambda ex: self._one_row(self.constrain(noisy), ex)[0])(self.probe_values)
        self.global_names = tuple(n for n in outside
                                  if _is_factor(self.trace[n]) and not differs(np.asarray(rows[n])))
        if len(self.global_names) == len(outside) and data_plate is not None:
            self.plate = data_plate

    def log_density_grad(self, params_u, values, names, value=True):  # jit drops an unused value
        return differentiate(ops, lambda v: self.log_density(params_u, v), values, names)

    def weighted_param_grad(self, params_u, values, weights):
        def total(p):
            ld = self.log_density(p, values)
            return (ld * weights).sum(), ld

        (_, ld), grads = jax.value_and_grad(total, has_aux=True)(params_u)
        return ld, grads

    def deterministic(self, params_u, values):
        """{deterministic site: value per row} of the model run on ``values`` (every site)."""
        det_names = self.det_names
        if det_names and self.plate is None:
            raise NotImplementedError(f"deterministic site(s) {list(det_names)} of a model read one example at a "
                                      "time (sites outside the data plate)")
        latents = {k: values[k] for k in self.latent_names}
        data_ = self.values_to_data({k: values[k] for k in self.observed_names
                                     + [c for c in self.covariates if c in values]})
        tr = handlers.trace(handlers.substitute(handlers.seed(self.model, 0),
                                                data={**self.constrain(params_u), **latents})
                            ).get_trace(data_, *self.model_args, **self.model_kwargs) if det_names else {}
        return {n: tr[n]["value"] for n in det_names}


def _data_plate(trace, observed_names, num_data):
    """The data plate ``(name, dim)``: the first observed site's plate of the data's size."""
    first = trace[observed_names[0]]
    frames = [f for f in first["cond_indep_stack"] if f.size == num_data]
    if not frames:
        return None
    frame = min(frames, key=lambda f: f.dim)
    return frame.name, frame.dim


def _check_sites(trace, plate, num_data, data_rows=None):
    """Check the shapes of the factors inside the data plate and return the sample sites
    outside it (raises for a latent site outside it: one value per example is needed)."""
    check_no_obs_mask({name: bool(site["is_observed"]) for name, site in trace.items()
                       if site["type"] == "sample"})
    outside = []
    for name, site in trace.items():
        if site["type"] != "sample":
            continue
        frames = [(f.name, f.dim, f.size) for f in site["cond_indep_stack"]]
        if plate is not None and any(f[0] == plate[0] and f[1] == plate[1] for f in frames):
            if _is_factor(site):
                check_factor_shape(name, tuple(jnp.shape(site["value"])[:-1]), frames, plate, num_data, data_rows)
            continue
        if not site["is_observed"]:
            raise latent_outside_plate(name, plate)
        outside.append(name)
    return outside


def _probe_rows(sample_base, sites, num_rows=8):
    """Rows of every site for telling factors of the parameters alone from factors of the
    sites: draws from the bases, and for discrete sites rows at the ends of the support."""
    values = sample_base(jax.random.PRNGKey(20_021), num_rows)
    for name, site in sites.items():
        if site.is_discrete and site.values is not None:
            v = values[name].at[0].set(min(site.values)).at[1].set(max(site.values))
            values[name] = v
    return values


def _batched_log_density(model, model_args, model_kwargs, params_c, values, observed_names, latent_names,
                         values_to_data, plate, skip=()):
    """(log p̃, log base) per row from one run of the model on all rows: each site's
    log-probability with the data plate's dimension moved first and the rest summed."""
    _, dim = plate
    batch = values_to_data({k: values[k] for k in values if k not in latent_names})
    latents = {k: values[k] for k in latent_names}
    num_rows = next(iter(values.values())).shape[0]
    # without NumPyro's support checks, as the Pyro backend runs its traces: the data were
    # checked against the supports when they were matched to the sites, and the samplers stay
    # in them, but Rao-Blackwellized gradients evaluate a binary site at its conditional mean
    # (a Bernoulli's log-probability is affine in the value: NumPyro's formula is exact there)
    with numpyro.validation_enabled(False):
        log_probs, tr = compute_log_probs(model, (batch,) + tuple(model_args), model_kwargs,
                                          {**params_c, **latents}, sum_log_prob=False)
    total = base = jnp.zeros(num_rows)
    for name, lp in log_probs.items():
        if name in skip:
            continue
        lp = jnp.asarray(lp)
        if lp.ndim >= -dim:
            lp = jnp.moveaxis(lp, dim, 0)
        lp = jnp.broadcast_to(lp, (num_rows,) + lp.shape[1:]).reshape((num_rows, -1)).sum(-1)
        total = total + lp
        if not _is_factor(tr[name]):
            base = base + lp
    return total, base


def restore_params(info, saved_u):
    """NumPyro parameters are values: the saved ones are used as they are."""
    return saved_u


def store_params(info, params_u):
    """NumPyro keeps no parameter store; nothing to do."""
    return None


def snapshot_params():
    """NumPyro keeps no parameter store: nothing to snapshot."""
    return None


def restore_snapshot(snapshot):
    """NumPyro keeps no parameter store: nothing to restore."""
    return None
