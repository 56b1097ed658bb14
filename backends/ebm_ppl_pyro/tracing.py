"""A Pyro model traced once on the data: the checks of its sites and data leaves, and its
:class:`~ebm_ppl.backend.ModelInfo` (:func:`compile_model`)."""

import torch
import pyro
from pyro import poutine
from pyro.distributions import constraints
from pyro.poutine.util import site_is_subsample

from ebm_ppl._rows import head_rows
from ebm_ppl._sites import (base_constraint, check_covariates, check_data_leaves, check_leaf_shape,
                            check_no_subsample, check_param_names, explain_failure, match_leaves, split_covariates)

from .functions import _Functions, _run
from .handlers import _Recorder, _is_factor
from .param_store import restore_snapshot, snapshot_params
from .plates import plates
from .rows import has_nonfinite, in_support, supports_by_row


def as_data(data):
    """Torch tensors for every leaf (numpy arrays are copied, tensors are left alone);
    float16 / bfloat16 leaves become float32 copies: a fit, its chains and its results are
    computed in float32 (a half-precision chain takes a few hundred distinct values)."""
    if isinstance(data, dict):
        return {k: as_data(v) for k, v in data.items()}
    if not isinstance(data, torch.Tensor):
        data = torch.as_tensor(__import__("numpy").array(data))
    return data.float() if data.dtype in (torch.float16, torch.bfloat16) else data


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
