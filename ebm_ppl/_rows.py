"""Set-up in memory O(batch), shared by both backends' ``compile_model``.

A fit's set-up traces the model on the first rows of the data (a batch's worth: what one
update runs it on) rather than on the whole data set, and checks the data's values (NaN,
supports) over chunks of rows, so that its peak memory does not grow as rows x model
width. What the trace gives does not depend on the number of rows traced: the sites, their
shapes, dtypes and supports, the data plate (the plate whose size is the number of rows
traced, checked against the factors' shapes), the parameters and their initial values
(unless the model computes one from its batch). The data set's own size, which scales the
log prior (once per data set), comes from the data, not from the trace. The exception is a
site whose support holds one bound per example (computed from the batch): the model is then
traced on every row, as the check of the data against such a support needs
(:func:`support_rows`).
"""

import math

__all__ = ["head_rows", "num_rows", "all_rows", "support_rows", "MIN_TRACE_ROWS", "CHUNK_BYTES"]

# Rows of a trace at least: on one row, a factor of shape (1,) inside the data plate (one
# value for every example, a missing per-example axis) would pass the shape check.
MIN_TRACE_ROWS = 2
# Bytes of data per chunk when the values are checked (NaN, supports): each check makes a
# temporary the size of a chunk, not of the data set.
CHUNK_BYTES = 1 << 22


def num_rows(data):
    """The examples on axis 0 (``data``: an array or a dict of arrays)."""
    leaf = next(iter(data.values())) if isinstance(data, dict) else data
    return int(leaf.shape[0])


def head_rows(data, trace_rows):
    """The first ``max(trace_rows, MIN_TRACE_ROWS)`` rows of every leaf of ``data``, or
    ``data`` itself when ``trace_rows`` is None or the data has no more rows than that."""
    if trace_rows is None or max(int(trace_rows), MIN_TRACE_ROWS) >= num_rows(data):
        return data
    n = max(int(trace_rows), MIN_TRACE_ROWS)
    if isinstance(data, dict):
        return {k: v[:n] for k, v in data.items()}
    return data[:n]


def all_rows(leaf, test):
    """Whether ``test(chunk)`` (an array of booleans) is all true on every chunk of rows of
    ``leaf`` (chunks of about :data:`CHUNK_BYTES`): ``test(leaf).all()`` without a
    temporary the size of ``leaf``."""
    n = int(leaf.shape[0])
    row_bytes = max(1, int(leaf.dtype.itemsize) * math.prod(int(d) for d in leaf.shape[1:]))
    step = max(1, CHUNK_BYTES // row_bytes)
    for i in range(0, n, step):
        ok = test(leaf[i:i + step])
        if not bool(ok.all() if hasattr(ok, "all") else ok):
            return False
    return True


def support_rows(support, value_ndim, rows, is_array, is_broadcast, is_constraint):
    """How ``support`` (a constraint of a site whose values, traced on ``rows`` rows, have
    ``value_ndim`` dimensions) depends on the example: ``"per_row"`` where it holds an
    array with an entry per example (an array of the constraint, or of a constraint it
    wraps, whose axis aligned with the examples has ``rows`` > 1 entries that are not a
    broadcast of one: ``is_broadcast(array, axis)``, which PyTorch's expanded views show
    by a stride of 0 and JAX cannot tell), ``"broadcast"`` where such arrays are all
    broadcasts of one entry, None where it holds none (the same for any number of rows)."""
    kind = None
    if rows <= 1:
        return kind
    for a in _arrays(support, is_array, is_constraint):
        axis = a.ndim - value_ndim
        if axis >= 0 and a.shape[axis] == rows:
            if not is_broadcast(a, axis):
                return "per_row"
            kind = "broadcast"
    return kind


def _arrays(c, is_array, is_constraint, depth=0):
    """The arrays held by constraint ``c`` and the constraints it wraps (independent,
    cat, stack, ...)."""
    if is_array(c):
        yield c
    elif depth < 8 and isinstance(c, (list, tuple)):
        for x in c:
            yield from _arrays(x, is_array, is_constraint, depth + 1)
    elif depth < 8 and is_constraint(c):
        for x in vars(c).values():
            yield from _arrays(x, is_array, is_constraint, depth + 1)
