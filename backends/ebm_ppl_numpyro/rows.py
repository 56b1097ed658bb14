"""The data's rows at a fit's set-up (see :mod:`ebm_ppl._rows`): how a traced site's
support depends on the example, and the data's values checked in chunks of rows."""

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints

from ebm_ppl._rows import all_rows, support_rows as _support_rows

__all__ = ["support_rows", "supports_by_row", "in_support", "has_nonfinite"]


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
    return all_rows(leaf, lambda rows: jnp.asarray(support(rows)))


def has_nonfinite(leaf):
    """Whether a floating-point ``leaf`` holds NaN or inf (checked on chunks of rows)."""
    return jnp.issubdtype(leaf.dtype, jnp.floating) and not all_rows(leaf, jnp.isfinite)
