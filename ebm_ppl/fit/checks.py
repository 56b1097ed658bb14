"""Argument checks of a fit, made before anything changes."""

import os

import numpy as np

from .._stops import check_checkpoint_path
from ..backend import detect_backend
from ..checkpoint import _encode_estimator
from ..estimators.base import REGISTRY, Estimator
from .resume import check_state_fits


def _check_positive_int(name, value, allow_none=True):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_rng_seed(rng_seed):
    if isinstance(rng_seed, bool) or not isinstance(rng_seed, (int, np.integer)) or not 0 <= rng_seed < 2**32:
        raise ValueError(f"rng_seed must be an integer in [0, 2**32), got {rng_seed!r}")


def _check_fit_args(estimator, num_epochs, num_steps, batch_size, rng_seed=0, checkpoint_every=None,
                    checkpoint_path=None):
    if (num_epochs is None) == (num_steps is None):
        raise ValueError(
            "pass exactly one of num_epochs and num_steps, got "
            f"num_epochs={num_epochs!r}, num_steps={num_steps!r}"
        )
    _check_positive_int("num_epochs", num_epochs)
    _check_positive_int("num_steps", num_steps)
    _check_positive_int("batch_size", batch_size)
    _check_rng_seed(rng_seed)
    if not isinstance(estimator, Estimator):
        known = ", ".join(sorted(n for n in REGISTRY if n.isidentifier()))
        raise TypeError(f"estimator must be an ebm_ppl estimator ({known}, or a subclass of "
                        f"ebm_ppl.estimators.base.Estimator), got {estimator!r}")
    _check_positive_int("checkpoint_every", checkpoint_every)
    if (checkpoint_every is None) != (checkpoint_path is None):
        raise ValueError("pass checkpoint_every and checkpoint_path together, got "
                         f"checkpoint_every={checkpoint_every!r}, checkpoint_path={checkpoint_path!r}")
    if checkpoint_path is not None:  # a folder that cannot be written is refused before the first update
        check_checkpoint_path(checkpoint_path)
        try:  # an estimator whose settings cannot be saved is refused now, not at the first checkpoint
            _encode_estimator(estimator, [])
        except TypeError as err:
            raise TypeError(f"checkpoint_path={os.fspath(checkpoint_path)!r}: {err}") from None


def _check_data(data):
    """Every data leaf has its examples on axis 0, at least one, as many as every other leaf."""
    if isinstance(data, dict) and not data:
        raise ValueError("data is an empty dict: pass at least one array")
    leaves = data if isinstance(data, dict) else {"data": data}
    counts = {}
    for key, leaf in leaves.items():
        shape = tuple(getattr(leaf, "shape", np.shape(leaf)))
        if not shape:
            raise ValueError(f"data leaf {key!r} is 0-d (shape ()): examples go on axis 0 (one example: x[None])")
        if shape[0] == 0:
            raise ValueError(f"data leaf {key!r} has no examples (shape {shape}): pass at least one row")
        counts[key] = int(shape[0])
    if len(set(counts.values())) > 1:
        raise ValueError(f"data leaves have different numbers of examples on axis 0: {counts}")


def _check_placement(placement, estimator, data, batch_size):
    """Chains and minibatches split evenly over the devices / ranks, checked before
    anything changes."""
    if placement is None:
        return
    n, what = placement.num_shards, placement.kind
    for name_, value in estimator.shard_sizes().items():
        if value % n:
            raise ValueError(f"{type(estimator).__name__}: {name_}={value} is not a multiple of the {n} {what} the "
                             f"fit is split over: pass a multiple of {n}")
    leaf = next(iter(data.values())) if isinstance(data, dict) else data
    size = int(leaf.shape[0]) if batch_size is None else int(batch_size)
    if size % n:
        label = f"batch_size={size}" if batch_size is not None else f"the data set ({size} examples, batch_size=None)"
        raise ValueError(f"{label} is not a multiple of the {n} {what} each minibatch is split over")


def _batch_values(c, backend, batch, indices):
    """``(batch values, rows)`` of a :meth:`Trainer.update` batch, checked against the data
    set the trainer is bound to: the same leaves, shapes after axis 0 and dtypes, values
    in the sites' supports, and ``indices`` (None, or the batch's rows of that data set).
    Under torch.distributed, this rank's share of the batch."""
    name = detect_backend(batch, backend, "batch")
    if name != c.name:
        raise ValueError(f"Trainer.update: a {name!r} batch for a trainer bound to {c.name!r} data")
    _check_data(batch)
    values = c.info.data_to_values(c.be.as_data(batch))
    if sorted(values) != sorted(c.data_values):
        raise ValueError(f"Trainer.update: the batch's leaves {sorted(values)} are not those of the data set "
                         f"given to init {sorted(c.data_values)}")
    for k, v in values.items():
        want = c.data_values[k]
        if tuple(v.shape[1:]) != tuple(want.shape[1:]) or str(v.dtype) != str(want.dtype):
            raise ValueError(f"Trainer.update: batch leaf {k!r} has rows of shape {tuple(v.shape[1:])} and dtype "
                             f"{v.dtype}, the data set given to init {tuple(want.shape[1:])} and {want.dtype}")
        _check_batch_leaf(c, k, v)
    num = int(next(iter(values.values())).shape[0])
    if c.placement is not None and num % c.placement.num_shards:
        raise ValueError(f"Trainer.update: a batch of {num} examples does not split over the "
                         f"{c.placement.num_shards} {c.placement.kind} of the fit")
    rows = None if indices is None else _check_indices(indices, num, c)
    if c.placement is not None and c.placement.kind == "ranks":  # this rank's columns
        share = c.placement.local_indices(np.arange(num)[None])[0]
        values = {k: v[c.ops.from_numpy(share, c.ops.int_dtype, v)] for k, v in values.items()}
        rows = None if rows is None else rows[share]
    like = next(iter(values.values()))
    return values, None if rows is None else c.ops.from_numpy(rows, c.ops.int_dtype, like)


def _check_batch_leaf(c, key, value):
    """A batch leaf's values: finite, and in the finite support of a discrete site."""
    site = c.info.sites.get(key)
    x = np.asarray(c.ops.to_numpy(value))
    if x.dtype.kind in "fc" and not np.isfinite(x).all():
        raise ValueError(f"Trainer.update: batch leaf {key!r} contains NaN or inf")
    if site is not None and site.values is not None and not np.isin(x, np.asarray(site.values)).all():
        raise ValueError(f"Trainer.update: batch leaf {key!r} has values outside the support of site {key!r} "
                         f"({site.support})")


def _check_indices(indices, num, c):
    """``indices`` as a numpy int array: one distinct row of the bound data set per example."""
    rows = np.asarray(indices)
    num_data = int(next(iter(c.data_values.values())).shape[0])
    if rows.dtype.kind not in "iu" or rows.shape != (num,):
        raise ValueError(f"Trainer.update: indices must be {num} integers (the batch's rows of the data set "
                         f"given to init), got {rows.dtype} of shape {rows.shape}")
    if num and (rows.min() < 0 or rows.max() >= num_data or len(np.unique(rows)) != num):
        raise ValueError(f"Trainer.update: indices must be distinct rows in [0, {num_data}) of the data set "
                         "given to init")
    return rows


def _check_update_state(c, state, estimator, layout):
    """A state :meth:`Trainer.update` did not just make, checked as ``resume=`` checks one:
    this estimator, the model's parameters, chains of the bound layout, valid fields."""
    if type(state.estimator) is not type(estimator) or vars(state.estimator) != vars(estimator):
        raise ValueError(f"Trainer.update: the state is from {state.estimator!r}, not this trainer's {estimator!r}")
    check_state_fits(state, c.ops, c.info, c.opt, c.like, layout, "Trainer.update", "the state's",
                     "the data set given to init")
