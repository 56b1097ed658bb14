"""The data's rows at a fit's set-up (see :mod:`ebm_ppl._rows`): how a traced site's
support depends on the example, and the data's values checked in chunks of rows."""

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints

from ebm_ppl._rows import all_rows, head_rows as _head_rows, support_rows as _support_rows

from .ops import quick_jit

__all__ = ["support_rows", "supports_by_row", "in_support", "has_nonfinite", "head_rows"]


def support_rows(support, value_ndim, rows):
    """``"per_row"`` or None: see :func:`ebm_ppl._rows.support_rows` (a JAX array does not
    say whether it is a broadcast: a bound per traced row is taken as one per example)."""
    if rows is None:
        return None
    return _support_rows(support, value_ndim, rows, lambda a: isinstance(a, (jax.Array, np.ndarray)),
                         lambda a, axis: False, lambda c: isinstance(c, constraints.Constraint))


def supports_by_row(sites, rows):
    """Whether one of the sample ``sites`` of a trace on ``rows`` rows has a support with a
    bound per example, which the data's other rows may not share."""
    return any(support_rows(s["fn"].support, jnp.ndim(s["value"]), rows) == "per_row" for s in sites)


def in_support(leaf, support, num_rows):
    """Whether every row of ``leaf`` is in ``support`` (of a site traced on its first
    ``num_rows`` rows; None: on all of them), checked on chunks of rows."""
    if support_rows(support, leaf.ndim, num_rows) == "per_row":  # the model was traced on every row
        return bool(jnp.all(support(leaf)))
    on_host = _numpy_support(leaf, support)
    if on_host is not None:
        return all_rows(*on_host)
    # one compiled test per chunk shape, not one small compilation per operation of the constraint
    test = quick_jit(lambda rows: jnp.all(support(rows)))
    return all_rows(leaf, lambda rows: np.asarray(test(rows)))


def _numpy_support(leaf, support):
    """``(numpy view of leaf, test)`` where the data are in host memory and the support's
    base constraint (under ``independent``) computes with numpy (``boolean``, ``real``, ...;
    an ``independent`` constraint only adds an ``all`` over event dimensions), else None."""
    host = _host_view(leaf)
    base = support
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    if host is None or not host.shape[0]:
        return None
    try:
        if not isinstance(base(host[:1]), (np.ndarray, np.generic, bool)):
            return None
    except Exception:
        return None
    return host, lambda rows: np.all(base(rows))


def has_nonfinite(leaf):
    """Whether a floating-point ``leaf`` holds NaN or inf (checked on chunks of rows: with
    numpy where the data are in host memory, else one compiled test)."""
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
        return False
    return not all_rows(*_host_or_compiled(leaf))


@quick_jit
def _all_finite(rows):
    return jnp.all(jnp.isfinite(rows))


def _host_or_compiled(leaf):
    """``(leaf, test)``: the numpy view of ``leaf`` (see :func:`_host_view`) with
    ``np.isfinite``, else the array itself with a compiled test."""
    host = _host_view(leaf)
    if host is not None and host.dtype.kind == "f":
        return host, np.isfinite
    return leaf, lambda rows: np.asarray(_all_finite(rows))


def _host_view(leaf):
    """A jax array on one CPU device as its numpy view (no copy; None: on other devices,
    or a dtype numpy does not know, such as bfloat16)."""
    if isinstance(leaf, jax.Array) and len(leaf.devices()) == 1 and next(iter(leaf.devices())).platform == "cpu":
        host = np.asarray(leaf)
        if host.dtype.kind in "biuf":
            return host
    return None


def head_rows(data, trace_rows):
    """:func:`ebm_ppl._rows.head_rows`, the rows of data in host memory taken by numpy (a
    slice of a jax array is a compilation of its own)."""
    views = {k: _host_view(v) for k, v in (data.items() if isinstance(data, dict) else {"": data}.items())}
    if any(v is None for v in views.values()):
        return _head_rows(data, trace_rows)
    head = _head_rows(views if isinstance(data, dict) else views[""], trace_rows)
    if head is views or head is views.get(""):
        return data
    return {k: jnp.asarray(v) for k, v in head.items()} if isinstance(head, dict) else jnp.asarray(head)
