"""Checks that a fit's state is one a fit could have produced, field by field.

A checkpoint's checksum says a file is whole, not that whoever wrote it was honest (see
:mod:`ebm_ppl.checkpoint`), so what a file supplies is checked where it is used:
:func:`check_loaded` when :func:`ebm_ppl.load` builds a result (what the file alone
can show), :func:`check_resume_state` when ``resume=`` meets the model and data (what
needs them). Each raises ``ValueError`` naming the field.
"""

import numbers

import numpy as np

from ._one_hot import is_one_hot
from ._tree import _array_kind, _to_numpy, describe

__all__ = ["check_loaded", "check_resume_state", "MAX_UPDATES"]

MAX_UPDATES = 2**53  # update counts stay exact in a float64 (history, progress, schedules)


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _numpy(x):
    kind = _array_kind(x)
    return None if kind is None or not hasattr(x, "shape") else np.asarray(_to_numpy(x, kind))


def _leaves(tree, path):
    """``(path, leaf)`` for every leaf of nested dicts, lists, tuples and NamedTuples."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{path}[{k!r}]")
    elif isinstance(tree, tuple) and hasattr(type(tree), "_fields"):
        for f, v in zip(type(tree)._fields, tree):
            yield from _leaves(v, f"{path}.{f}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, tree


def _check_finite(tree, where):
    """Every floating (or complex) array in ``tree`` holds finite values only."""
    for path, leaf in _leaves(tree, where):
        a = _numpy(leaf)
        if a is not None and a.dtype.kind in "fc" and not np.isfinite(a).all():
            raise ValueError(f"{path} holds non-finite values (NaN or inf): a fit never saves such a state")


def _check_counts(num_updates, perm, offset):
    if not _is_int(num_updates) or not 0 <= num_updates < MAX_UPDATES:
        raise ValueError(f"state.num_updates={num_updates!r} is not an integer in [0, 2**53)")
    if perm is None:
        if not _is_int(offset) or offset != 0:
            raise ValueError(f"state.epoch_offset={offset!r} without an epoch permutation (it must be 0)")
        return
    a = _numpy(perm)
    if a is None or a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError("state.epoch_perm is not a 1-D array of integers")
    n = a.size
    if n and (int(a.min()) < 0 or int(a.max()) >= n):
        raise ValueError(f"state.epoch_perm holds indices outside 0..{n - 1}: it is not a permutation of the "
                         "data set's indices")
    seen = np.zeros(n, dtype=bool)
    seen[a] = True
    if not seen.all():
        raise ValueError("state.epoch_perm repeats indices: it is not a permutation of the data set's indices")
    if not _is_int(offset) or not 0 <= offset <= n:
        raise ValueError(f"state.epoch_offset={offset!r} is not an integer in [0, {n}] (the epoch's length)")


def _check_signature(signature):
    if signature is None:
        return
    lengths = {"params": 2, "sites": 3}
    if not (isinstance(signature, dict) and set(signature) == {"params", "sites", "optimizer"}
            and (signature["optimizer"] is None or isinstance(signature["optimizer"], str))):
        raise ValueError("state.signature is not a model signature (params, sites, optimizer)")
    for kind, length in lengths.items():
        table = signature[kind]
        if not isinstance(table, dict) or not all(isinstance(v, list) and len(v) == length for v in table.values()):
            raise ValueError(f"state.signature[{kind!r}] is not a table of {kind}")


def _check_arrays(tree, where):
    if not isinstance(tree, dict):
        raise ValueError(f"{where} is not a dict (name -> array)")


def check_loaded(result):
    """What a checkpoint alone can show about ``result`` (a :class:`~ebm_ppl.FitResult`
    built from a file): counters in range, an epoch permutation that is one, finite
    parameters and chains, well-formed history and signature. Raises ``ValueError``
    naming the field."""
    st = result.state
    _check_counts(st.num_updates, st.epoch_perm, st.epoch_offset)
    for where, tree in (("params", result.params), ("chains", result.chains), ("state.params", st.params)):
        _check_arrays(tree, where)
    if not isinstance(result.history, dict):
        raise ValueError("history is not a dict")
    for name, values in result.history.items():
        a = _numpy(values)
        if not isinstance(name, str) or a is None or a.ndim != 1 or a.dtype.kind not in "biuf":
            raise ValueError(f"history[{name!r}] is not a 1-D array of numbers")
    _check_signature(st.signature)
    _check_finite(st.params, "state.params")
    _check_finite(st.estimator_state, "state.estimator_state")


def _dicts(tree, path):
    """``(path, dict)`` for every dict in a tree (chains are dicts site -> array)."""
    if isinstance(tree, dict):
        yield path, tree
        for k, v in tree.items():
            yield from _dicts(v, f"{path}[{k!r}]")
    elif isinstance(tree, (list, tuple)):
        fields = getattr(type(tree), "_fields", None)
        for i, v in enumerate(tree):
            yield from _dicts(v, f"{path}.{fields[i]}" if fields else f"{path}[{i}]")


def _check_supports(estimator_state, sites):
    """Chains of discrete sites hold values of their supports (one-hot sites: unit vectors)."""
    for path, node in _dicts(estimator_state, "state.estimator_state"):
        for name, value in node.items():
            site = sites.get(name) if isinstance(name, str) else None
            a = _numpy(value) if site is not None and site.is_discrete else None
            if a is None:
                continue
            if is_one_hot(site):
                ok = bool(np.isin(a, (0, 1)).all()) and (a.ndim == 0 or bool((a.sum(-1) == 1).all()))
            elif site.values is not None:
                ok = bool(np.isin(a, np.asarray(site.values, dtype=a.dtype)).all())
            else:
                continue
            if not ok:
                raise ValueError(f"resume: {path}[{name!r}] holds values outside the support of site {name!r} "
                                 f"({site.support})")


def _check_keys(st, ops, like):
    fresh = describe(ops.key_state(ops.seed(0, like)))
    for field in ("rng_key", "data_key"):
        saved = getattr(st, field)
        if describe(saved) != fresh:
            raise ValueError(f"resume: state.{field} is not a random state of the {ops.name} backend "
                             f"({describe(saved)[:3]}, expected {fresh[:3]})")
        try:
            ops.key_from_state(saved, like)
        except (RuntimeError, ValueError, TypeError) as e:
            raise ValueError(f"resume: state.{field} cannot be restored: {e}") from None


def check_resume_state(st, info, ops, like):
    """What ``resume=`` needs beyond the structure checks: counters in range, the epoch
    permutation a permutation of this data set's indices (when it has this data set's
    length: else a new epoch starts), finite parameters and chains, discrete chains
    inside their supports, random states of this backend. Raises ``ValueError`` naming
    the field, before anything changes."""
    try:
        # a permutation of 0..n-1; of this data set's indices when n is its size (another n:
        # the fit starts a new epoch, see api._Minibatches)
        _check_counts(st.num_updates, st.epoch_perm, st.epoch_offset)
        _check_finite(st.params, "state.params")
        _check_finite(st.estimator_state, "state.estimator_state")
    except ValueError as e:
        raise ValueError(str(e) if str(e).startswith("resume:") else f"resume: {e}") from None
    _check_supports(st.estimator_state, info.sites)
    _check_keys(st, ops, like)
