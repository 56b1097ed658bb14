"""The data's rows at a fit's set-up (see :mod:`ebm_ppl._rows`): how a traced site's
support depends on the example, and the data's values checked in chunks of rows."""

import copy

import torch
from pyro.distributions import constraints

from ebm_ppl._rows import all_rows, support_rows as _support_rows

__all__ = ["support_rows", "supports_by_row", "in_support", "has_nonfinite", "support_repr"]


def support_rows(support, value_ndim, rows):
    """``"per_row"``, ``"broadcast"`` or None: see :func:`ebm_ppl._rows.support_rows` (an
    expanded tensor, as Pyro's plates make of a distribution's parameters, has stride 0
    along the examples: one bound for every row)."""
    if rows is None:
        return None
    return _support_rows(support, value_ndim, rows, lambda a: isinstance(a, torch.Tensor),
                         lambda a, axis: a.stride(axis) == 0, lambda c: isinstance(c, constraints.Constraint))


def supports_by_row(sites, rows):
    """Whether one of the sample ``sites`` of a trace on ``rows`` rows has a support with a
    bound per example, which the data's other rows may not share."""
    return any(support_rows(s["fn"].support, torch.as_tensor(s["value"]).ndim, rows) == "per_row" for s in sites)


def in_support(leaf, support, num_rows):
    """Whether every row of ``leaf`` is in ``support`` (of a site traced on its first
    ``num_rows`` rows; None: on all of them), checked on chunks of rows."""
    kind = support_rows(support, leaf.ndim, num_rows)
    if kind == "per_row":  # a bound per example: the model was traced on every row
        return bool(torch.as_tensor(support.check(leaf)).all())
    if kind == "broadcast":  # one bound for every row, expanded over the traced rows: kept to one row
        support = _with_rows(support, leaf.ndim, num_rows, 1)
    return all_rows(leaf, lambda rows: torch.as_tensor(support.check(rows)))


def has_nonfinite(leaf):
    """Whether a floating-point ``leaf`` holds NaN or inf (checked on chunks of rows)."""
    return leaf.is_floating_point() and not all_rows(leaf, torch.isfinite)


def support_repr(support, value_ndim, rows, num_data):
    """``repr(support)`` of a site traced on ``rows`` of the data's ``num_data`` rows, as a
    trace on every row gives it: a bound broadcast over the traced rows is shown with
    ``num_data`` rows (the repr goes into a fit's signature, which ``resume=`` compares)."""
    if rows is None or rows == num_data or support_rows(support, value_ndim, rows) != "broadcast":
        return repr(support)
    return repr(_with_rows(support, value_ndim, rows, num_data))


def _with_rows(c, value_ndim, rows, new_rows, depth=0):
    """A copy of constraint ``c`` whose bounds broadcast over the ``rows`` traced rows
    (stride 0 along them) have ``new_rows`` rows instead (the same bound in every row)."""
    if isinstance(c, torch.Tensor):
        axis = c.ndim - value_ndim
        if axis >= 0 and c.shape[axis] == rows and c.stride(axis) == 0:
            return c.narrow(axis, 0, 1).expand(c.shape[:axis] + (new_rows,) + c.shape[axis + 1:])
        return c
    if depth < 8 and isinstance(c, (list, tuple)):
        return type(c)(_with_rows(x, value_ndim, rows, new_rows, depth + 1) for x in c)
    if depth < 8 and isinstance(c, constraints.Constraint):
        out = copy.copy(c)
        out.__dict__.update({k: _with_rows(v, value_ndim, rows, new_rows, depth + 1) for k, v in vars(c).items()})
        return out
    return c

