"""The loop around the chunks of updates: minibatches, chunk sizes, results, stops."""

import time
from typing import Any, NamedTuple

import numpy as np

from .._result import FitResult, FitState
from ..checkpoint import save
from .ranks import checkpoint_result, on_ranks
from .step import HISTORY_NAMES as _HISTORY, _negative_chains, lean_carry


class _Minibatches:
    """The stream of minibatch indices: epochs of random permutations of the examples,
    each cut into ``num_data // batch_size`` batches (the rest of an epoch is dropped).

    Its state, ``(data key, current permutation, offset into it)``, goes into
    :class:`FitState`, so a resumed fit continues the epoch where the last call stopped
    and any split of N updates into calls sees the same batches as one call of N.
    Permutations are drawn on the host (``ops.epoch_permutations``), one per epoch.
    """

    def __init__(self, ops, key, num_data, batch_size, perm=None, offset=0):
        self.ops, self.key, self.num_data, self.batch_size = ops, key, num_data, batch_size
        self.perm, self.offset = perm, int(offset)
        if perm is not None and len(perm) != num_data:  # other data: start a new epoch
            self.perm, self.offset = None, 0

    def take(self, num):
        """``(num, batch_size)`` numpy indices of the next ``num`` updates."""
        rows = []
        for _ in range(num):
            if self.perm is None or self.offset + self.batch_size > self.num_data:
                self.key, perms = self.ops.epoch_permutations(self.key, self.num_data, 1)
                self.perm, self.offset = np.asarray(perms[0]), 0
            rows.append(self.perm[self.offset:self.offset + self.batch_size])
            self.offset += self.batch_size
        return np.stack(rows) if rows else np.zeros((0, self.batch_size), np.int64)

    def state(self):
        """A snapshot (the key as ``ops.key_state``) that :meth:`restore` returns to."""
        return self.ops.key_state(self.key), self.perm, self.offset

    def restore(self, state, like):
        key, self.perm, self.offset = state
        self.key = self.ops.key_from_state(key, like)


class _ChunkSizer:
    """Updates per call of the chunk runner, sized by measured time (about ``target_s``
    per call, at most ``max_len``), so that an interrupt is honoured within a fraction of
    a second on any model, while calls stay long enough for their Python overhead not to
    count. Which updates a call runs does not change their results: the random streams
    live in the carry, and every call runs the same compiled update."""

    def __init__(self, max_len, target_s=0.2):
        self.max_len, self.target_s, self.n = max_len, target_s, 1

    def next(self, limit):
        return max(1, min(self.n, limit))

    def observe(self, n, seconds):
        per_update = max(seconds, 1e-6) / max(n, 1)
        self.n = int(max(1, min(self.max_len, 4 * n, self.target_s / per_update)))


class _Fit(NamedTuple):
    """What a fit's loop and its results need (one per call)."""

    ops: Any
    be: Any
    info: Any
    problem: Any
    opt: Any
    estimator: Any
    name: str
    done: int  # updates before this call
    signature: dict
    watch: Any = None  # the monitor bound to this call (monitor.MonitorRun), or None
    placement: Any = None  # devices (JAX) or ranks (torch.distributed) the fit is split over
    given_estimator: Any = None  # the caller's estimator (``estimator`` is this rank's share)


def _make_state(fit, carry, num_applied, batches_state):
    """The FitState after the first ``num_applied`` updates of this call (copies; on Pyro
    the parameters are also put in the param store)."""
    ops, params = fit.ops, carry.params
    data_key, perm, offset = batches_state
    state = FitState(
        params=ops.copy_tree(params),
        optimizer_state=fit.opt.get_state(carry.opt_state),
        estimator_state=ops.copy_tree(carry.est_state),
        rng_key=ops.key_state(carry.key),
        data_key=data_key,
        num_updates=fit.done + num_applied,
        estimator=fit.estimator if fit.given_estimator is None else fit.given_estimator,
        epoch_perm=None if perm is None else np.array(perm),
        epoch_offset=int(offset),
        signature=fit.signature,
    )
    fit.be.store_params(fit.info, params)
    return state


def _make_result(fit, carry, stats, num_applied, batches_state):
    """The FitResult of the first ``num_applied`` updates of this call."""
    ops, info = fit.ops, fit.info
    history = {
        name_: np.concatenate([s[i] for s in stats]).astype(float) if stats else np.zeros(0)
        for i, name_ in enumerate(_HISTORY + tuple(fit.estimator.history_names))
    }
    if fit.watch is not None:
        history.update(fit.watch.history(num_applied))
    state = _make_state(fit, carry, num_applied, batches_state)
    return FitResult(
        params=ops.copy_tree(info.constrain(carry.params)),
        history=history,
        chains=ops.copy_tree({k: v for k, v in fit.problem.from_internal(_negative_chains(fit.estimator, carry.est_state))
                              .items() if k in fit.info.sites}),  # covariates (inputs) left out
        state=state,
        backend=fit.name,
    )


class _Progress(NamedTuple):
    """The last consistent point of a fit's loop (replaced as a whole after each chunk)."""

    carry: Any
    stats: list
    num_applied: int
    batches: Any  # _Minibatches.state()


class _Dispatched(NamedTuple):
    """A chunk handed to the runner and not yet read back (JAX dispatches asynchronously)."""

    start: Any  # the runner's input carry (lean_carry)
    full: Any  # its output carry -> the full carry
    xs: Any  # (indices, active) on the device
    carry: Any  # the fast runner's output carry (lean)
    out: Any  # its statistics
    n: int
    batches_before: Any  # the minibatch stream before and after this chunk's batches
    batches_after: Any


def _dispatch(fit, run_chunk, carry, data_values, batches, n, chunk_len, like):
    """Hand ``n`` updates from ``carry`` to the fast runner (see :func:`_finish`)."""
    ops = fit.ops
    before = batches.state()
    idx = batches.take(n)
    if fit.placement is not None:
        idx = fit.placement.local_indices(idx)
    if n < chunk_len:
        idx = np.concatenate([idx, np.zeros((chunk_len - n, idx.shape[1]), idx.dtype)])
    xs = (ops.from_numpy(idx, ops.int_dtype, like), ops.asarray(np.arange(chunk_len) < n, None, bool_=True))
    start, full = lean_carry(fit.opt, ops, carry)
    out_carry, out = run_chunk.fast(start, data_values, xs)
    return _Dispatched(start, full, xs, out_carry, out, n, before, batches.state())


def _finish(fit, run_chunk, good, d, data_values, batches, like):
    """Read back the dispatched chunk ``d`` that follows ``good``: (the new _Progress,
    failed?). After a failure the chunk runs again with guarded updates, and the stream
    stands after the updates applied."""
    ops = fit.ops
    carry = d.full(d.carry)
    fail_at = int(ops.to_numpy(carry.failed))
    out = d.out
    if run_chunk.traced and (fail_at >= 0 or not run_chunk.params_ok(carry.params)):
        # unguarded updates (step.make_update): the chunk again, every update guarded
        carry, out = run_chunk.guarded(d.start, data_values, d.xs)
        carry = d.full(carry)
        fail_at = int(ops.to_numpy(carry.failed))
    k = d.n if fail_at < 0 else fail_at - good.num_applied
    after = d.batches_after
    if k < d.n:  # the stream must stand after the updates that were applied
        batches.restore(d.batches_before, like)
        batches.take(k)
        after = batches.state()
    stats = [ops.to_numpy(o)[:k] for o in out]
    return _Progress(carry, good.stats + [stats], good.num_applied + k, after), fail_at >= 0


def _save_checkpoint(fit, good, path, like):
    """Save the fit so far to ``path``; under torch.distributed, every rank's chains and
    streams, written by rank 0 (:mod:`ebm_ppl.fit.ranks`), and a failed write stops every
    rank (one all-reduce of a flag), not only rank 0."""
    result = checkpoint_result(fit.placement, _make_result(fit, good.carry, good.stats, good.num_applied,
                                                           good.batches))
    if not on_ranks(fit.placement):
        save(result, path)
        return
    error = None
    try:
        if result is not None:
            save(result, path)
    except Exception as e:
        error = e
    ok = fit.placement.mean((fit.ops.asarray(float(error is None), like),))[0]
    if error is not None:
        raise error
    if float(fit.ops.to_numpy(ok)) < 1:
        raise OSError(f"rank 0 could not write the checkpoint {path!r} (its error is on rank 0)")


def _fit_loop(fit, run_chunk, good, data_values, batches, total, chunk_len, like, bar, checkpoint, guard):
    """Run ``total`` updates in chunks; returns (last _Progress, failed?, what stopped it).

    Stops early at a non-finite update (``failed``) or with ``stop`` (see
    :func:`ebm_ppl._stops.stop_error`): a signal that ``guard`` (a ``DeferredStop``)
    deferred to the chunk boundary, a KeyboardInterrupt or SystemExit raised in between
    (the state is then the last consistent one), or an error of the work between chunks
    (a checkpoint that cannot be written, a monitor that fails: every chunk run is kept).
    ``checkpoint = (every, path)`` saves the result every ``every`` updates (counted over
    resumed calls too). A monitor (``fit.watch``) is evaluated after every
    ``fit.watch.every`` updates of the call (chunks end there) and may stop the fit early."""

    sizer = _ChunkSizer(chunk_len)
    failed, stop = False, None
    # a plain fit on a traced backend hands the next chunk to the runner before reading the
    # last one back, so the device does not wait for the loop's Python between chunks (a
    # chunk handed over past a stop or failure is dropped, its batches put back)
    ahead = run_chunk.traced and checkpoint is None and fit.watch is None
    pending, last = None, time.perf_counter()
    try:
        while good.num_applied < total and guard.pending is None:
            limit = total - good.num_applied
            if checkpoint is not None:
                limit = min(limit, checkpoint[0] - (fit.done + good.num_applied) % checkpoint[0])
            if fit.watch is not None:
                limit = min(limit, fit.watch.every - good.num_applied % fit.watch.every)
            if pending is None:
                last = time.perf_counter()
                pending = _dispatch(fit, run_chunk, good.carry, data_values, batches, sizer.next(limit),
                                    chunk_len, like)
            following = None
            if ahead and limit > pending.n:
                following = _dispatch(fit, run_chunk, pending.full(pending.carry), data_values, batches,
                                      sizer.next(limit - pending.n), chunk_len, like)
            new, failed = _finish(fit, run_chunk, good, pending, data_values, batches, like)
            now = time.perf_counter()
            sizer.observe(pending.n, now - last)
            good, pending, last = new, following, now
            bar.chunk(good.stats[-1])
            if failed:
                pending = None  # _finish put the stream after the applied updates
                break
            try:  # a failure here keeps the fit (err.result): the state after the chunk is consistent
                if checkpoint is not None and (fit.done + good.num_applied) % checkpoint[0] == 0:
                    _save_checkpoint(fit, good, checkpoint[1], like)
                if fit.watch is not None and fit.watch.after_chunk(
                        good.num_applied, good.carry.params, _negative_chains(fit.estimator, good.carry.est_state), bar):
                    break  # early stop
            except Exception as e:
                stop = e
                break
        stop = guard.pending if stop is None else stop
    except (KeyboardInterrupt, SystemExit) as e:
        stop = e
        pending = None
        batches.restore(good.batches, like)
    if pending is not None:  # handed over, not taken: its batches go back to the stream
        batches.restore(good.batches, like)
    return good, failed, stop
