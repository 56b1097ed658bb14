"""One parameter update as a pure function of the loop's carry."""

from typing import Any, NamedTuple

import numpy as np


from .._validate import _leaves as walk_leaves
from ..estimators.base import HISTORY
from .ranks import share_examples


# The most updates per call of the chunk runner (its fixed length: one compiled program).
# Each call costs some microseconds of Python (minibatch indices, statistics to the host,
# the progress bar); calls are sized by time (_ChunkSizer) up to this length, and on
# NumPyro the updates past the active ones are not run.
_CHUNK_UPDATES = 256

HISTORY_NAMES = _HISTORY = HISTORY
# statistics that must be finite for an update to be applied (the acceptance rate is NaN
# for samplers without one)
_CHECKED = ("positive_log_density", "negative_log_density")


class Carry(NamedTuple):
    """The loop state of a fit, threaded through every update (a pytree on NumPyro)."""

    params: Any  # unconstrained parameters
    opt_state: Any
    est_state: Any  # the estimator's chains and the sampler's adapted step sizes
    key: Any  # the sampling stream
    t: Any  # updates applied in this call (an integer array)
    failed: Any  # the index of the first non-finite update of this call, or -1


def _negative_chains(estimator, est_state):
    """The estimator's chains (sampler space), as it declares them."""
    return estimator.negative_chains(est_state)


def _tree_sub(a, b):
    """``a - b`` leaf by leaf over nested dicts, lists and tuples (module parameters)."""
    if isinstance(a, dict):
        return {k: _tree_sub(v, b[k]) for k, v in a.items()}
    if isinstance(a, (list, tuple)):
        return type(a)(_tree_sub(x, y) for x, y in zip(a, b))
    return a - b


def make_update(problem, estimator, optimizer, num_data, placement=None, guarded=True):
    """One parameter update as a pure function ``update(carry, batch, index, active) ->
    (carry, stats)`` of the loop's :class:`Carry`, a minibatch's values and their rows in
    the data set (``index``: where per-example chains are kept).

    The estimator owns the objective (:meth:`~ebm_ppl.estimators.base.Estimator.step`:
    its loss, gradient, statistics and new state); the update adds the model's
    parameter-only factors (``info.log_prior``), which count once per data set: the loss
    is a mean over examples, so they enter it divided by ``num_data``, the size of the
    data set (not of the batch: the objective is Σᵢ log p(xᵢ | θ) + log prior(θ), as
    Pyro's plate scaling counts a global site).

    Over several devices or ranks (``placement``), the minibatch and the chains are split
    along their first axis (``ops.shard_rows``: a sharding constraint on JAX, each rank's
    own share on PyTorch) and ``placement.mean`` averages the gradient and the update's
    statistics over the ranks (PyTorch's all-reduce; on JAX the means are already global).

    An update whose loss, statistics (log p̃ of either phase) or new parameters are not all
    finite is not applied: the carry keeps the parameters, optimizer and chains from before
    it and records the update's index in ``failed`` (every later update of the call is
    skipped). Non-finite gradients are caught through the new parameters they make (any
    optimizer that does not deliberately repair them, as ``optax.zero_nans`` does, gives
    non-finite parameters from them); not reading the gradients twice saves a pass over
    them at every update.

    ``guarded=False`` (traced backends' fast chunk runner, see :class:`ChunkRunners`): the
    update is applied whatever it gives, ``failed`` records the first whose loss or
    statistics are not finite, and the new parameters are not checked; the caller checks
    the parameters at the end of the chunk and, on any failure, runs the chunk again from
    its start with the guarded update (:func:`ebm_ppl.fit.loop._finish`), which gives
    the result of guarded updates throughout without selecting between old and new
    parameters, optimizer state and chains, or reading every parameter, at every update
    (on the 784x500 RBM about a tenth of the update)."""
    ops, info, xp = problem.ops, problem.info, problem.ops.xp
    stat_names = _HISTORY[1:] + tuple(estimator.history_names)

    def objective(carry, batch, idx):
        """The estimator's step plus the parameter-only factors (and the mean over ranks)."""
        key, key_neg = ops.split(carry.key, 2)
        out = estimator.step(key_neg, problem, carry.est_state, carry.params, ops.shard_rows(batch),
                             batch_index=idx)
        loss, grads = out.loss, out.grads
        new_state = share_examples(placement, out.state, idx)  # ranks: every rank's new per-example rows
        nan = ops.stop_gradient(loss) * float("nan")  # a statistic the estimator does not report
        stats = tuple(out.stats.get(n, nan) for n in stat_names)
        if info.log_prior is not None:  # a penalty / log prior on θ, once per data set
            prior, prior_grads = ops.value_and_grad(lambda p: info.log_prior(p) / num_data)(carry.params)
            loss = loss - prior
            grads = _tree_sub(grads, prior_grads)
        if placement is not None:  # every rank then sees the same gradient and statistics
            loss, stats, grads = placement.mean((loss, stats, grads))
        checked = tuple(s for n, s in zip(stat_names, stats) if n in _CHECKED and n in out.stats)
        return key, ops.shard_rows(new_state), loss, grads, stats, checked

    def unguarded(carry, batch, idx, active):
        params, opt_state, est_state, old_key, t, failed = carry
        key, new_est, loss, grads, stats, checked = objective(carry, batch, idx)
        new_params, new_opt, _ = optimizer.update(grads, opt_state, params, loss)
        ok = ops.all_finite((loss, checked))  # the parameters: once, at the end of the chunk
        failed = xp.where(active & ~ok & (failed < 0), t, failed)
        carry = Carry(new_params, new_opt, estimator.after_gradient(new_est, grads), ops.select_key(active, key, old_key),
                      t + xp.where(active, 1, 0), failed)
        return carry, (loss,) + stats

    def update(carry, batch, idx, active):
        params, opt_state, est_state, old_key, t, failed = carry
        key, new_est, loss, grads, stats, checked = objective(carry, batch, idx)
        ok = ops.all_finite((loss, checked))
        go = active & ok & (failed < 0)

        def apply(_):  # the optimizer says whether its new parameters are all finite
            new_params, new_opt, finite = optimizer.update(grads, opt_state, params, loss)
            return new_params, new_opt, estimator.after_gradient(new_est, grads), finite

        def skip(_):
            return params, opt_state, est_state, ops.asarray(True, None, bool_=True)

        params2, opt2, est2, finite = ops.cond(go, apply, skip, None)
        params2, opt2, est2 = ops.cond(finite, lambda _: (params2, opt2, est2),
                                       lambda _: (params, opt_state, est_state), None)
        ok = ok & finite
        key = ops.select_key(active, key, old_key)
        failed = xp.where(active & ~ok & (failed < 0), t, failed)
        t = t + xp.where(active, 1, 0)
        return Carry(params2, opt2, est2, key, t, failed), (loss,) + stats

    return update if guarded else unguarded


def _make_step(problem, estimator, optimizer, num_data, placement=None, guarded=True):
    """:func:`make_update` over rows of the data set: ``step(data_values, carry, (indices,
    active)) -> (carry, stats)``, the function the chunk runners loop over."""
    params_of = optimizer.params_of if problem.ops.traced else None
    update = make_update(problem, estimator, optimizer, num_data, placement, guarded=guarded)

    def step(data_values, carry, x):
        idx, active = x
        if params_of is not None:  # the loop carries the optimizer state's copy alone (see lean_carry)
            carry = carry._replace(params=params_of(carry.opt_state))
        carry, stats = update(carry, {k: v[idx] for k, v in data_values.items()}, idx, active)
        return (carry._replace(params=None) if params_of is not None else carry), stats

    return step


class ChunkRunners:
    """The chunk runners of a fit: ``fast(carry, data_values, (indices, active))``, and
    on a traced backend the guarded runner, compiled at the first failure (a fit that
    never fails never compiles it), and ``params_ok(params)``, whether the parameters at
    the end of a fast chunk are all finite (see :func:`make_update`'s ``guarded``)."""

    def __init__(self, problem, estimator, optimizer, num_data, placement=None):
        ops = problem.ops
        self.traced = ops.traced
        self.fast = ops.make_chunk_runner(_make_step(problem, estimator, optimizer, num_data, placement,
                                                     guarded=not ops.traced))
        self.ops, self._guarded, self._finite = ops, None, None
        self._args = (problem, estimator, optimizer, num_data, placement)

    def params_ok(self, params):
        """Whether every parameter is finite: on the host where the parameters are nested
        dicts, lists and tuples of numeric arrays (no compilation: this runs once a chunk,
        and a first fit's set-up is counted in compilations), else with ``ops.all_finite``
        compiled once (module parameters in containers of their own)."""
        ops = self.ops
        leaves = [leaf for _, leaf in walk_leaves(params, "params")]
        if all(hasattr(x, "dtype") and hasattr(x, "shape") for x in leaves):
            arrays = [ops.to_numpy(x) for x in leaves]
            if all(isinstance(a, np.ndarray) and a.dtype.kind in "biufc" for a in arrays):
                return all(bool(np.isfinite(a).all()) for a in arrays if a.dtype.kind in "fc")
        if self._finite is None:
            self._finite = ops.quick_jit(ops.all_finite)
        return bool(ops.to_numpy(self._finite(params)))

    @property
    def guarded(self):
        if self._guarded is None:
            self._guarded = self.ops.make_chunk_runner(_make_step(*self._args, guarded=True))
        return self._guarded


def lean_carry(optimizer, ops, carry):
    """``(carry for the chunk runner, carry from its output -> the full carry)``: where the
    optimizer state holds a copy of the parameters (NumPyro), the runner's loop carries
    that copy alone (:func:`_make_step` reads it from the state), the parameters then read
    back from the state."""
    if not ops.traced or optimizer.params_of is None:
        return carry, lambda out: out
    return carry._replace(params=None), lambda out: out._replace(params=optimizer.params_of(out.opt_state))


# Compiled updates (NumPyro) kept across calls, so that resuming a fit, or fitting the same
# model again, does not trace and compile again. The key holds the model and its arguments by
