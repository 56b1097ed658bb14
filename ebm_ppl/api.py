"""The user-facing functions: ``fit_unnormalized`` and ``sample`` (and, re-exported from
``ebm_ppl.evaluation``, ``log_partition``, ``log_likelihood`` and ``LogZ``).

The fit is written once over the backend contract (``ebm_ppl.backend``): one parameter
update is a pure function ``step(carry, (batch_indices, active)) -> (carry, stats)`` that
NumPyro's backend jits and loops over a chunk of updates, and Pyro's backend runs in a
plain loop. The loop around the chunks (``_fit_loop``) sizes them by time, defers Ctrl-C
to the next chunk boundary, writes checkpoints and keeps the last consistent state
(``_Progress``) that ``err.result`` and checkpoints are made from (``_make_result``).
"""

import collections
import os
import time
import types
from typing import Any, NamedTuple

import numpy as np

from ._progress import FitBar
from ._problem import PROBE_SEED, Problem, compile_problem, place_problem, run_kernel
from ._exclusive import exclusive
from ._doc import doc
from ._rao_blackwell import conditional_means, rao_blackwell_site
from ._result import FitResult, FitState
from ._sites import Same as _Same
from ._stops import DeferredStop, check_checkpoint_path, is_interrupt, save_on_stop, stop_error
from .checkpoint import _encode_estimator, save
from ._tree import describe
from ._validate import check_resume_state
from .backend import detect_backend, get_backend
from .estimators import PCD
from .estimators.base import HISTORY, REGISTRY, Estimator
from .monitor import MonitorRun, as_monitors
from .evaluation import LogZ, log_likelihood, log_partition
from .samplers.auto import build_kernel
from .samplers.base import is_adaptive, restrict_sampler

__all__ = ["fit_unnormalized", "sample", "log_partition", "log_likelihood", "FitResult", "FitState", "LogZ"]

# The most updates per call of the chunk runner (its fixed length: one compiled program).
# Each call costs some microseconds of Python (minibatch indices, statistics to the host,
# the progress bar); calls are sized by time (_ChunkSizer) up to this length, and on
# NumPyro the updates past the active ones are not run.
_CHUNK_UPDATES = 256

_HISTORY = HISTORY
# statistics that must be finite for an update to be applied (the acceptance rate is NaN
# for samplers without one)
_CHECKED = ("positive_log_density", "negative_log_density")


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
        raise TypeError("estimator must be an ebm_ppl estimator (CD, PCD, PT, FPCD, ReplayBuffer, ...: an "
                        f"instance of ebm_ppl.estimators.base.Estimator), got {estimator!r}")
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


def _check_placement(placement, estimator, data, batch_size, checkpoint_every):
    """Chains and minibatches split evenly over the devices / ranks, and the settings a
    split fit does not support, checked before anything changes."""
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
    if what == "ranks":
        if checkpoint_every is not None:
            raise NotImplementedError("checkpoint_every with torch.distributed: each rank holds other chains; save "
                                      "each rank's result yourself (ebm_ppl.save(result, f'ckpt-{rank}.npz'))")
        if estimator.positive == "persistent":
            raise NotImplementedError(f"{estimator!r} with positive='persistent' under torch.distributed: the "
                                      "per-example latent chains would be split over ranks")


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


def _make_step(problem, estimator, optimizer, num_data, placement=None):
    """One parameter update as a pure function of (carry, (indices, active)).

    The estimator owns the objective (:meth:`~ebm_ppl.estimators.base.Estimator.step`:
    its loss, gradient, statistics and new state); the update adds the model's
    parameter-only factors (``info.log_prior``), which count once per data set: the loss
    is a mean over examples, so they enter it divided by ``num_data`` (the objective is
    Σᵢ log p(xᵢ | θ) + log prior(θ), as Pyro's plate scaling counts a global site).

    Over several devices or ranks (``placement``), the minibatch and the chains are split
    along their first axis (``ops.shard_rows``: a sharding constraint on JAX, each rank's
    own share on PyTorch) and ``placement.mean`` averages the gradient and the update's
    statistics over the ranks (PyTorch's all-reduce; on JAX the means are already global).

    An update whose loss, gradients or new parameters are not all finite is not applied:
    the carry keeps the parameters, optimizer and chains from before it and records the
    update's index in ``failed`` (every later update of the call is skipped)."""
    ops, info, xp = problem.ops, problem.info, problem.ops.xp
    stat_names = _HISTORY[1:] + tuple(getattr(estimator, "history_names", ()))

    def step(data_values, carry, x):
        params, opt_state, est_state, key, t, failed = carry
        idx, active = x
        old_key = key
        key, key_neg = ops.split(key, 2)
        batch = ops.shard_rows({k: v[idx] for k, v in data_values.items()})
        out = estimator.step(key_neg, problem, est_state, params, batch, batch_index=idx)
        new_est = ops.shard_rows(out.state)  # keep the carry's chains where they are
        loss, grads = out.loss, out.grads
        nan = ops.stop_gradient(loss) * float("nan")  # a statistic the estimator does not report
        stats = tuple(out.stats.get(n, nan) for n in stat_names)
        checked = tuple(s for n, s in zip(stat_names, stats) if n in _CHECKED and n in out.stats)
        if info.log_prior is not None:  # a penalty / log prior on θ, once per data set
            prior, prior_grads = ops.value_and_grad(lambda p: info.log_prior(p) / num_data)(params)
            loss = loss - prior
            grads = _tree_sub(grads, prior_grads)
        if placement is not None:  # every rank then sees the same gradient and statistics
            loss, stats, grads = placement.mean((loss, stats, grads))
            checked = tuple(s for n, s in zip(stat_names, stats) if n in _CHECKED and n in out.stats)
        ok = ops.all_finite((loss, checked, grads))
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

    return step


# Compiled updates (NumPyro) kept across calls, so that resuming a fit, or fitting the same
# model again, does not trace and compile again. The key holds the model and its arguments by
# identity, the estimator, sampler and optimizer by configuration (a new but identical
# optimizer object reuses the compiled update), and the data by shapes and dtypes.
_COMPILED = collections.OrderedDict()
_COMPILED_SIZE = 32


_CONFIG_MODULES = ("ebm_ppl.", "optax", "numpyro.optim", "jax.example_libraries.optimizers")


def _config_key(obj, depth=0):
    """A hashable key of a configuration value (samplers, estimators, optimizers, masks,
    numbers): equal keys mean equal behaviour. Functions compare by their code, defaults
    and closure contents (so ``optax.adam(1e-2)`` made twice gives one key: optax and
    numpyro.optim optimizers are closures over their hyperparameters); anything else that
    cannot be compared by value compares by identity."""
    if depth > 12:
        return _Same(obj)
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return (type(obj).__name__, obj)
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__,) + tuple(_config_key(v, depth + 1) for v in obj)
    if isinstance(obj, dict):
        items = sorted(obj.items(), key=lambda kv: str(kv[0]))
        return ("dict",) + tuple((k, _config_key(v, depth + 1)) for k, v in items)
    if isinstance(obj, np.ndarray):
        return ("ndarray", obj.dtype.str, obj.shape, obj.tobytes())
    if isinstance(obj, types.FunctionType):
        cells = tuple(_config_key(c.cell_contents, depth + 1) if _cell_full(c) else ("empty",)
                      for c in obj.__closure__ or ())
        return ("function", obj.__code__, _config_key(obj.__defaults__, depth + 1),
                _config_key(obj.__kwdefaults__, depth + 1), cells)
    if hasattr(obj, "__dict__") and type(obj).__module__.startswith(_CONFIG_MODULES):
        return (type(obj),) + _config_key(vars(obj), depth + 1)
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and getattr(obj, "size", 1 << 20) <= 1 << 16:
        try:  # a small array (e.g. a block mask): by value
            return ("array", str(obj.dtype), tuple(obj.shape), np.asarray(obj).tobytes())
        except Exception:
            pass
    return _Same(obj)


def _cell_full(cell):
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _compiled_key(name, model, model_args, model_kwargs, data, estimator, sampler, optimizer, batch_size,
                  chunk_len, covariates=None, placement=None):
    leaves = data if isinstance(data, dict) else {"": data}
    shapes = tuple((k, tuple(v.shape), str(v.dtype)) for k, v in sorted(leaves.items()))
    kwargs = tuple((k, _Same(v)) for k, v in sorted((model_kwargs or {}).items()))
    return (name, _Same(model), tuple(_Same(a) for a in model_args), kwargs, shapes, _config_key(estimator),
            _config_key(sampler), _config_key(optimizer), batch_size, chunk_len, _config_key(covariates),
            None if placement is None else placement.key)


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


def _signature(info, opt):
    """What ``resume=`` checks: parameters (structure, shapes, constraints), sites
    (shapes, supports, dtypes) and the optimizer's kind; JSON-able, saved with the state."""
    constraints = info.param_constraints or {}
    params = {n: [[list(d) for d in describe(u)], constraints.get(n)] for n, u in info.init_params.items()}
    sites = {n: [list(s.shape), s.support, str(s.dtype).replace("torch.", "")] for n, s in info.sites.items()}
    return {"params": params, "sites": sites, "optimizer": opt.kind}


def _first_difference(saved, wanted):
    """The first leaf where two :func:`~ebm_ppl._tree.describe` lists differ, as text."""
    saved, wanted = describe(saved), describe(wanted)
    for (path_a, a), (path_b, b) in zip(saved, wanted):
        if (path_a, a) != (path_b, b):
            return f"at {path_a or 'the top'} the result has {a}, but at {path_b or 'the top'} this fit needs {b}"
    if len(saved) != len(wanted):
        return f"the result's state has {len(saved)} leaves, this fit's {len(wanted)}"
    return None


def _check_signature(saved, current):
    if saved is None:
        return
    for kind in ("params", "sites"):
        a, b = saved[kind], current[kind]
        what = "parameters" if kind == "params" else "sites"
        if sorted(a) != sorted(b):
            raise ValueError(f"resume: the result's {what} {sorted(a)} are not the model's {sorted(b)}")
        for n in sorted(a):
            if a[n] != b[n]:
                label = "parameter" if kind == "params" else "site"
                if kind == "params" and a[n][0] != b[n][0]:
                    raise ValueError(f"resume: {label} {n!r} has shape/structure {a[n][0]} in the result but "
                                     f"{b[n][0]} in the model")
                if kind == "params":
                    raise ValueError(f"resume: {label} {n!r} has constraint {a[n][1]} in the result but "
                                     f"{b[n][1]} in the model")
                raise ValueError(f"resume: {label} {n!r} is (shape, support, dtype) {tuple(a[n])} in the result "
                                 f"but {tuple(b[n])} in the model")
    if saved.get("optimizer") and current.get("optimizer") and saved["optimizer"] != current["optimizer"]:
        raise ValueError(f"resume: the result's optimizer state is from {saved['optimizer']}, but the optimizer "
                         f"given is {current['optimizer']}: pass an optimizer of the same kind")


def _check_resume(resume, ops, info, opt, estimator, init_chains, data_values, like, signature):
    """Everything ``resume=`` must agree with, checked before anything changes."""
    st = resume.state
    if type(st.estimator) is not type(estimator) or vars(st.estimator) != vars(estimator):
        raise ValueError(f"resume: the result was fitted with {st.estimator!r}, not {estimator!r}")
    _check_signature(st.signature, signature)
    if not isinstance(st.params, dict) or sorted(st.params) != sorted(info.init_params):
        got = sorted(st.params) if isinstance(st.params, dict) else type(st.params).__name__
        raise ValueError(f"resume: the result's parameters {got} are not the model's {sorted(info.init_params)}")
    diff = _first_difference(st.params, info.init_params)
    if diff:
        raise ValueError(f"resume: the parameters do not fit the model: {diff}")
    template = ops.eval_shape(init_chains, ops.seed(0, like), data_values)
    diff = _first_difference(st.estimator_state, template)
    if diff:
        raise ValueError(f"resume: the chains do not fit this model and {estimator!r} (another batch_size, "
                         f"sampler or model?): {diff}")
    check_resume_state(st, info, ops, like)
    opt.check_state(st.optimizer_state, info.init_params, num_updates=st.num_updates)


def _start_state(ops, be, info, opt, init_chains, data_values, like, rng_seed, resume, placement=None):
    """(params, optimizer state, estimator state, key, data key, updates done, epoch
    permutation, offset) to start from: fresh, or the validated ``resume`` state.

    The minibatch stream comes from ``rng_seed`` alone (every rank of torch.distributed
    draws the same minibatches); the sampling stream from ``placement.sampling_seed``
    (rank 0 and JAX devices: ``rng_seed`` itself)."""
    if resume is not None:
        st = resume.state
        params = be.restore_params(info, st.params)
        opt_state = opt.init(params, state=st.optimizer_state)
        est_state = ops.copy_tree(st.estimator_state)
        key, data_key = ops.key_from_state(st.rng_key, like), ops.key_from_state(st.data_key, like)
        perm = None if st.epoch_perm is None else np.array(st.epoch_perm)
        return params, opt_state, est_state, key, data_key, st.num_updates, perm, st.epoch_offset
    params = info.init_params
    opt_state = opt.init(params)
    key = ops.seed(rng_seed, like)
    data_key = ops.fork(key)  # an independent stream for minibatch shuffling
    if placement is not None and placement.sampling_seed(rng_seed) != rng_seed:
        key = ops.seed(placement.sampling_seed(rng_seed), like)  # this rank's own stream
    key, key_init = ops.split(key, 2)
    est_state = init_chains(key_init, data_values)
    return params, opt_state, est_state, key, data_key, 0, None, 0


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


def _make_result(fit, carry, stats, num_applied, batches_state):
    """The FitResult of the first ``num_applied`` updates of this call."""
    ops, info = fit.ops, fit.info
    params, opt_state, est_state, key = carry.params, carry.opt_state, carry.est_state, carry.key
    history = {
        name_: np.concatenate([s[i] for s in stats]).astype(float) if stats else np.zeros(0)
        for i, name_ in enumerate(_HISTORY + tuple(getattr(fit.estimator, "history_names", ())))
    }
    if fit.watch is not None:
        history.update(fit.watch.history(num_applied))
    data_key, perm, offset = batches_state
    state = FitState(
        params=ops.copy_tree(params),
        optimizer_state=fit.opt.get_state(opt_state),
        estimator_state=ops.copy_tree(est_state),
        rng_key=ops.key_state(key),
        data_key=data_key,
        num_updates=fit.done + num_applied,
        estimator=fit.estimator if fit.given_estimator is None else fit.given_estimator,
        epoch_perm=None if perm is None else np.array(perm),
        epoch_offset=int(offset),
        signature=fit.signature,
    )
    fit.be.store_params(info, params)
    return FitResult(
        params=ops.copy_tree(info.constrain(params)),
        history=history,
        chains=ops.copy_tree({k: v for k, v in fit.problem.from_internal(_negative_chains(fit.estimator, est_state))
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


def _run_chunk(fit, run_chunk, good, data_values, batches, n, chunk_len, like):
    """Run ``n`` updates from ``good``; returns (the new _Progress, failed?)."""
    ops = fit.ops
    idx = batches.take(n)
    if fit.placement is not None:
        idx = fit.placement.local_indices(idx)
    if n < chunk_len:
        idx = np.concatenate([idx, np.zeros((chunk_len - n, idx.shape[1]), idx.dtype)])
    active = ops.asarray(np.arange(chunk_len) < n, None, bool_=True)
    carry, out = run_chunk(good.carry, data_values, (ops.from_numpy(idx, ops.int_dtype, like), active))
    fail_at = int(ops.to_numpy(carry.failed))
    k = n if fail_at < 0 else fail_at - good.num_applied
    if k < n:  # the stream must stand after the updates that were applied
        batches.restore(good.batches, like)
        batches.take(k)
    stats = [ops.to_numpy(o)[:k] for o in out]
    return _Progress(carry, good.stats + [stats], good.num_applied + k, batches.state()), fail_at >= 0


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
    try:
        while good.num_applied < total and guard.pending is None:
            limit = total - good.num_applied
            if checkpoint is not None:
                limit = min(limit, checkpoint[0] - (fit.done + good.num_applied) % checkpoint[0])
            if fit.watch is not None:
                limit = min(limit, fit.watch.every - good.num_applied % fit.watch.every)
            n = sizer.next(limit)
            start = time.perf_counter()
            new, failed = _run_chunk(fit, run_chunk, good, data_values, batches, n, chunk_len, like)
            sizer.observe(n, time.perf_counter() - start)
            good = new
            bar.chunk(good.stats[-1])
            if failed:
                break
            try:  # a failure here keeps the fit (err.result): the state after the chunk is consistent
                if checkpoint is not None and (fit.done + good.num_applied) % checkpoint[0] == 0:
                    save(_make_result(fit, good.carry, good.stats, good.num_applied, good.batches), checkpoint[1])
                if fit.watch is not None and fit.watch.after_chunk(
                        good.num_applied, good.carry.params, _negative_chains(fit.estimator, good.carry.est_state), bar):
                    break  # early stop
            except Exception as e:
                stop = e
                break
        stop = guard.pending if stop is None else stop
    except (KeyboardInterrupt, SystemExit) as e:
        stop = e
        batches.restore(good.batches, like)
    return good, failed, stop


_FIT_UNNORMALIZED_DOC = """Fit the parameters of an unnormalized model by (stochastic) maximum likelihood.

    The gradient of the mean log-likelihood of a batch is the positive phase (the batch's
    ∇θ log p̃) minus the negative phase, the model expectation of ∇θ log p̃, estimated
    with MCMC chains by ``estimator`` (Goodfellow, Bengio & Courville, *Deep Learning*,
    eq. 18.15). Each update minimizes the surrogate loss
    mean log p̃(negative) − mean log p̃(positive) with the backend's optimizer.

    Parameters
    ----------
    model : callable
        A Pyro or NumPyro model whose first argument is a batch of examples (an array with
        examples on axis 0, or a dict of such arrays).
    data : array or dict of arrays
        The training set; it is never modified. Not a generator, data loader or list of
        tensors (stack them), not complex; float16 / bfloat16 leaves are computed in
        float32 (a float32 copy), and the parameters and chains are float32.
    estimator : an estimator from ``ebm_ppl.estimators``, optional
        Default ``PCD(num_chains=100, num_steps=1)``. An estimator may add entries to
        ``history`` (PT: ``"swap_rate"``).
    sampler : "auto" or a sampler from ``ebm_ppl.samplers``
        ``"auto"``: Gibbs on discrete sites, MALA (adapted step size) on continuous ones.
    optimizer : optional
        Pyro: a ``pyro.optim.PyroOptim`` (``PyroLRScheduler`` is stepped once per update);
        NumPyro: a ``numpyro.optim`` optimizer or an ``optax.GradientTransformation``.
        Default: Adam with learning rate 1e-2.
    num_epochs, num_steps : int
        Exactly one: passes over the data, or parameter updates.
    batch_size : int, optional
        Examples per update; None uses the whole data set. Each epoch visits a random
        permutation in ``len(data) // batch_size`` batches (the remainder is dropped).
        Set-up runs the model on the first ``batch_size`` rows only (the data's values
        are checked in chunks), so that its memory does not grow with the data set.
    backend : {"pyro", "numpyro"}, optional
        Default: from the data's array type (torch -> Pyro, jax -> NumPyro).
    rng_seed : int
        In [0, 2**32).
    progress_bar : bool
        A tqdm bar of epochs (given ``num_epochs``) or updates, after a "compiling" phase:
        the surrogate loss, the acceptance rate where the sampler has one, monitor values.
    resume : FitResult, optional
        Continue its chains, parameters, optimizer state, random streams and position in
        the current epoch (also a result from :func:`ebm_ppl.load`). It is checked against
        the model before anything changes: the same parameter names, shapes and
        constraints, the same sites and shapes, the same estimator, chains that fit the
        sampler and batch size, an optimizer of the same kind.
    model_args, model_kwargs
        Extra arguments passed to the model after the batch.
    covariates : str or sequence of str, optional
        Names of leaves of a dict ``data`` that are inputs, not modelled (a conditional
        model p(y | x), e.g. a CRF): minibatched with the data, passed to the model with
        each batch, fixed in both phases, never sampled. The objective becomes the
        conditional log-likelihood Σᵢ log p̃(yᵢ | xᵢ) − log Z(xᵢ), and the negative phase
        samples the modelled sites given each example's inputs: ``CD`` starts example i's
        chain at its yᵢ; ``PCD`` keeps one persistent chain per training example (its
        ``num_chains`` is not used), continued whenever the example is in the batch (see
        the Notes of :class:`~ebm_ppl.PCD`). Other estimators raise NotImplementedError.
    monitor : Monitor or list of callables, optional
        What to evaluate between updates (:class:`ebm_ppl.Monitor`: held-out exact / AIS
        log-likelihood, pseudo-likelihood, split R-hat and ESS of the chains; or callables
        ``f(step, params, chains) -> dict``, evaluated once per epoch). Values land in
        ``history`` (NaN between evaluations) and on the progress bar. A monitor that
        cannot evaluate the model raises before the first update, changing nothing.
    checkpoint_every, checkpoint_path : int and path, optional
        Together: save the result with :func:`ebm_ppl.save` to ``checkpoint_path`` every
        ``checkpoint_every`` updates (counted from the first call of a resumed fit),
        atomically; ``ebm_ppl.load(checkpoint_path)`` resumes from the last one. A folder
        where a file cannot be created is refused before the first update; a fit stopped
        by SIGINT or SIGTERM also saves its last consistent state there.
    devices : int, list of jax.Device or jax.sharding.Mesh, optional
        NumPyro: shard the fit over these devices (an int: the first ``devices`` of
        ``jax.devices()``). The persistent chains are split along the chain axis and each
        minibatch along the example axis; parameters, optimizer state and the training
        set are replicated; the update stays one compiled program, which gives the
        one-device fit's parameters up to the order of floating-point sums (the random
        streams are the same: see the README, "More than one device"). The estimator's
        ``num_chains`` (``buffer_size``) and the batch size must be multiples of the
        number of devices. ``result.chains`` stay sharded. Pyro: not supported (raises
        ``NotImplementedError``); a Pyro fit is split over the ranks of
        ``torch.distributed`` when it is initialized (each rank holds
        ``num_chains / world`` chains and its share of every minibatch; gradients are
        all-reduced; ``result.chains`` are this rank's).

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError, TypeError
        For bad input, before anything changes (the message names the site or argument).
    FloatingPointError
        When an update meets a non-finite log density, gradient or updated parameter; the
        parameters, optimizer state and chains are left at their values before that update
        (also in ``err.result``).
    KeyboardInterrupt
        On Ctrl-C (SIGINT), at the next chunk boundary (within about 0.2 s): ``err.result``
        holds the last consistent state, and resuming from it equals the uninterrupted
        fit. A second Ctrl-C interrupts at once, without a result.
    SystemExit
        On SIGTERM, as on SIGINT (``err.result``, the final checkpoint), with exit status
        143 (``err.code``): a script that does not catch it exits quietly with the status
        of a process ended by SIGTERM. A second SIGTERM stops at once.
    OSError, and any error of a monitor
        Raised between chunks (a checkpoint that cannot be written: disk full, file-size
        limit, folder removed; a monitor callable that fails): the error itself, with
        ``err.result`` holding every update made.
    RuntimeError
        If another ebm_ppl call is running in another thread (fits are not thread-safe).

    Notes
    -----
    Any split of N updates into resumed calls (``resume=``, or checkpoints loaded in
    another process) gives the same result as one call of N, bit for bit: the random
    streams, the optimizer state and the position in the current epoch carry over, and
    the number of updates per compiled call (sized by time) does not change any update.

    On NumPyro the update is compiled once and a chunk of updates is one ``lax`` loop of
    it; the compiled update is kept (up to 8 of them) for later calls with the same model
    object, model arguments, estimator and sampler configuration, optimizer object and
    data shapes, so resuming a fit, or fitting the same model again, does not compile
    again (a model that reads mutable global state sees that state as it was when it was
    compiled, as with ``jax.jit``). On Pyro the model's log density and the gradients the
    samplers and the optimizer take run as Pyro-free ``torch.fx`` graphs captured once per
    input shape, where capture succeeds and reproduces the eager model, else eagerly (see
    the README).

    Examples
    --------
    >>> result = ebm_ppl.fit_unnormalized(ising, data, ebm_ppl.PCD(500, 2), num_steps=3000)  # doctest: +SKIP
    >>> result.params["J"]  # doctest: +SKIP

    References
    ----------
    Hinton (2002); Tieleman (2008); Goodfellow, Bengio & Courville (2016), ch. 18.
    """


@exclusive
@doc(_FIT_UNNORMALIZED_DOC)
def fit_unnormalized(
    model,
    data,
    estimator=None,
    sampler="auto",
    optimizer=None,
    num_epochs=None,
    num_steps=None,
    batch_size=None,
    backend=None,
    rng_seed=0,
    progress_bar=True,
    resume=None,
    model_args=(),
    model_kwargs=None,
    covariates=None,
    monitor=None,
    checkpoint_every=None,
    checkpoint_path=None,
    devices=None,
):
    trainer = Trainer(model, estimator, sampler, optimizer, batch_size=batch_size, backend=backend,
                      model_args=model_args, model_kwargs=model_kwargs, covariates=covariates,
                      devices=devices)
    return trainer.run(data, num_epochs=num_epochs, num_steps=num_steps, rng_seed=rng_seed,
                       progress_bar=progress_bar, resume=resume, monitor=monitor,
                       checkpoint_every=checkpoint_every, checkpoint_path=checkpoint_path)


class Carry(NamedTuple):
    """The loop state of a fit, threaded through every update (a pytree on NumPyro)."""

    params: Any  # unconstrained parameters
    opt_state: Any
    est_state: Any  # the estimator's chains and the sampler's adapted step sizes
    key: Any  # the sampling stream
    t: Any  # updates applied in this call (an integer array)
    failed: Any  # the index of the first non-finite update of this call, or -1


class _Compiled(NamedTuple):
    """A trainer bound to data of one shape: the compiled model, kernels and update."""

    be: Any
    ops: Any  # the backend's ops, placed over the devices / ranks where the fit is split
    name: str
    info: Any
    problem: Any
    opt: Any
    run_chunk: Any
    init_chains: Any
    data_values: dict
    batch_size: int
    like: Any
    signature: dict
    placement: Any  # None on one device / process
    estimator: Any  # this device's or rank's share of the trainer's estimator


class Trainer:
    """Fitting an unnormalized model as an object, in the style of NumPyro's ``SVI``:
    built from (model, estimator, sampler, optimizer), it owns the compiled update.

    ``init(data) -> FitState``, ``update(state, batch) -> (state, stats)`` for a loop of
    your own, and ``run(data, num_steps=...) -> FitResult``, which is what
    :func:`fit_unnormalized` calls (same arguments, same results, bit for bit). The
    keyword arguments are :func:`fit_unnormalized`'s.

    Examples
    --------
    >>> trainer = ebm_ppl.Trainer(model, ebm_ppl.PCD(100, 1), optimizer=optax.adam(1e-2))  # doctest: +SKIP
    >>> state = trainer.init(data)  # doctest: +SKIP
    >>> for batch in batches:  # doctest: +SKIP
    ...     state, stats = trainer.update(state, batch)
    >>> result = trainer.run(data, num_steps=1000)  # doctest: +SKIP
    """

    def __init__(self, model, estimator=None, sampler="auto", optimizer=None, *, batch_size=None, backend=None,
                 model_args=(), model_kwargs=None, covariates=None, devices=None):
        self.model, self.sampler, self.optimizer = model, sampler, optimizer
        self.estimator = PCD() if estimator is None else estimator
        _check_fit_args(self.estimator, None, 1, batch_size)
        self.batch_size, self.backend = batch_size, backend
        self.model_args, self.model_kwargs = tuple(model_args), model_kwargs
        self.covariates, self.devices = covariates, devices

    def _compile(self, data, resume=None, batch_size=None, checkpoint_every=None):
        """Check ``data`` (and ``resume``) and bind the trainer to them; raises before
        anything the caller can see changes (a rejected Pyro call restores the store)."""
        name = detect_backend(data, self.backend)
        if resume is not None:
            if not isinstance(resume, (FitResult, _AsResult)):
                raise TypeError(f"resume must be a FitResult, got {type(resume).__name__}")
            if resume.backend != name:
                raise ValueError(f"resume: a {resume.backend!r} result cannot resume a {name!r} fit")
        _check_data(data)
        be = get_backend(name)
        batch_size = self.batch_size if batch_size is None else batch_size
        placement = be.make_placement(self.devices)
        _check_placement(placement, self.estimator, data, batch_size, checkpoint_every)
        ops = be.ops.with_placement(placement)
        local = self.estimator if placement is None else placement.local_estimator(self.estimator)
        snapshot = be.snapshot_params()
        try:
            setup = _setup(be, ops, name, self.model, data, local, self.sampler, self.optimizer, batch_size,
                           self.model_args, self.model_kwargs, resume, self.covariates, placement, self.estimator)
        except BaseException:
            be.restore_snapshot(snapshot)
            raise
        info, problem, opt, run_chunk, init_chains, data_values, batch_size, like, signature = setup
        return _Compiled(be, ops, name, info, problem, opt, run_chunk, init_chains, data_values, batch_size, like,
                         signature, placement, local)

    def _start(self, c, rng_seed, resume, watch=None):
        """(_Fit, Carry, data values, (data key, epoch permutation, offset)) to start from."""
        params, opt_state, est_state, key, data_key, done, perm, offset = _start_state(
            c.ops, c.be, c.info, c.opt, c.init_chains, c.data_values, c.like, rng_seed, resume, c.placement)
        data_values = c.data_values
        if c.placement is not None:
            params, opt_state, est_state, data_values = c.placement.place(params, opt_state, est_state, data_values)
        fit = _Fit(c.ops, c.be, c.info, c.problem, c.opt, c.estimator, c.name, done, c.signature, watch,
                   c.placement, self.estimator)
        carry = Carry(params, opt_state, est_state, key, c.ops.asarray(0, None, int_=True),
                      c.ops.asarray(-1, None, int_=True))
        return fit, carry, data_values, (data_key, perm, offset)

    def init(self, data, rng_seed=0, resume=None):
        """The :class:`FitState` a fit on ``data`` starts from (fresh chains, or ``resume``'s)."""
        _check_rng_seed(rng_seed)
        c = self._compile(data, resume)
        fit, carry, _, (data_key, perm, offset) = self._start(c, rng_seed, resume)
        return _make_result(fit, carry, [], 0, (c.ops.key_state(data_key), perm, offset)).state

    def update(self, state, batch):
        """One parameter update on ``batch`` (all of its examples) from ``state``:
        ``(new state, {"loss", "positive_log_density", "negative_log_density",
        "acceptance_rate", ...})``. A non-finite update raises ``FloatingPointError`` and
        leaves ``state`` as it was."""
        if not isinstance(state, FitState):
            raise TypeError(f"state must be a FitState (from Trainer.init or a FitResult.state), got "
                            f"{type(state).__name__}")
        num = int(next(iter(batch.values())).shape[0]) if isinstance(batch, dict) else int(batch.shape[0])
        resume = _AsResult(state, detect_backend(batch, self.backend, "batch"))
        c = self._compile(batch, resume, batch_size=num)
        ops = c.ops
        fit, carry, data_values, _ = self._start(c, 0, resume)
        idx = np.zeros((_CHUNK_UPDATES, num), np.int64)
        idx[0] = np.arange(num)
        if c.placement is not None:
            idx = c.placement.local_indices(idx)
        active = ops.asarray(np.arange(_CHUNK_UPDATES) < 1, None, bool_=True)
        carry, out = c.run_chunk(carry, data_values, (ops.from_numpy(idx, ops.int_dtype, c.like), active))
        if int(ops.to_numpy(carry.failed)) >= 0:
            raise FloatingPointError("Trainer.update: non-finite log density, gradient or parameter; the state "
                                     "passed is unchanged")
        stats = [ops.to_numpy(o)[:1] for o in out]
        new = _make_result(fit, carry, [stats], 1, (state.data_key, state.epoch_perm, state.epoch_offset))
        names = _HISTORY + tuple(getattr(self.estimator, "history_names", ()))
        return new.state, {k: float(v[0]) for k, v in zip(names, stats)}

    def run(self, data, num_epochs=None, num_steps=None, *, rng_seed=0, progress_bar=True, resume=None,
            monitor=None, checkpoint_every=None, checkpoint_path=None):
        """Fit on ``data``: the arguments and the result of :func:`fit_unnormalized`."""
        _check_fit_args(self.estimator, num_epochs, num_steps, self.batch_size, rng_seed, checkpoint_every,
                        checkpoint_path)
        monitor = as_monitors(monitor)
        snapshot = get_backend(detect_backend(data, self.backend)).snapshot_params() if monitor is not None else None
        c = self._compile(data, resume, checkpoint_every=checkpoint_every)
        num_data = int(next(iter(c.data_values.values())).shape[0])
        total = num_steps if num_steps is not None else num_epochs * (num_data // c.batch_size)
        watch = None
        if monitor is not None:  # evaluated every `every` updates of the call (callables: every epoch)
            ctx = dict(problem=c.problem, model=self.model, backend=c.name, model_args=self.model_args,
                       model_kwargs=self.model_kwargs, covariates=c.problem.covariates,
                       data_to_values=lambda d: c.info.data_to_values(c.be.as_data(d)))
            done = resume.state.num_updates if resume is not None else 0
            watch = MonitorRun(monitor, monitor.every or num_data // c.batch_size, ctx, done)
            try:  # refused before the first update, the Pyro param store as it was
                watch.check(resume.state.params if resume is not None else c.info.init_params, c.data_values)
            except BaseException:
                c.be.restore_snapshot(snapshot)
                raise
        fit, carry, data_values, (data_key, perm, offset) = self._start(c, rng_seed, resume, watch)
        batches = _Minibatches(c.ops, data_key, num_data, c.batch_size, perm, offset)
        good = _Progress(carry, [], 0, batches.state())
        checkpoint = None if checkpoint_every is None else (int(checkpoint_every), os.fspath(checkpoint_path))
        bar = FitBar(progress_bar, total, num_epochs)
        with DeferredStop() as guard:  # SIGINT / SIGTERM stop the fit between chunks
            try:
                good, failed, stop = _fit_loop(fit, c.run_chunk, good, data_values, batches, total,
                                               _CHUNK_UPDATES, c.like, bar, checkpoint, guard)
            finally:
                bar.close()
            result = _make_result(fit, good.carry, good.stats, good.num_applied, good.batches)
            error = stop_error(result, good.num_applied, failed, stop)
            if checkpoint is not None and is_interrupt(error) and good.num_applied:
                save_on_stop(error, result, checkpoint[1])  # the last consistent state, on disk
        if error is not None:
            raise error
        return result


class _AsResult(NamedTuple):
    """A bare FitState where ``resume=`` takes a FitResult (Trainer.update)."""

    state: FitState
    backend: str


def _setup(be, ops, name, model, data, estimator, sampler, optimizer, batch_size, model_args, model_kwargs, resume,
           covariates=None, placement=None, given_estimator=None):
    """Compile (or reuse) the model, kernels, optimizer and chunk runner, and check
    ``resume``; raises before anything the caller can see changes. ``estimator`` is this
    rank's share of ``given_estimator`` (the same object without torch.distributed)."""
    data = be.as_data(data)
    kwargs = {"covariates": covariates} if covariates else {}
    # traced on one batch's rows (the data's values are checked in chunks): set-up memory O(batch)
    info = be.compile_model(model, data, model_args, model_kwargs or {}, trace_rows=batch_size, **kwargs)
    if info.covariates and not getattr(estimator, "supports_covariates", False):
        able = sorted(n for n, c in REGISTRY.items() if c.supports_covariates and n.isidentifier())
        raise NotImplementedError(f"covariates with estimator {type(estimator).__name__}: conditional models "
                                  f"are fitted with {', '.join(able)} only")
    data_values = info.data_to_values(data)
    num_data = int(next(iter(data_values.values())).shape[0])
    batch_size = num_data if batch_size is None else int(batch_size)
    if batch_size > num_data:
        raise ValueError(f"batch_size={batch_size} is larger than the data set ({num_data} examples)")
    like = next(iter(data_values.values()))
    cache_key = _compiled_key(name, model, model_args, model_kwargs, data, estimator, sampler, optimizer,
                              batch_size, _CHUNK_UPDATES, covariates, placement) if ops.caches_compiled else None
    cached = _COMPILED.get(cache_key) if cache_key is not None else None
    if cached is not None:  # the same fit as before: its kernels and compiled update
        _COMPILED.move_to_end(cache_key)
        problem, opt, run_chunk, init_chains = cached
    else:
        problem = Problem(ops, info)
        probe = problem.probe(ops.seed(PROBE_SEED, like))
        estimator.check(problem, probe)  # a model the estimator cannot fit is refused here
        problem.kernel = build_kernel(sampler, ops, list(info.sites.values()), probe=probe)
        latent = [site for site in info.sites.values() if not site.is_observed]
        if latent and estimator.needs_sampler:
            positive = restrict_sampler(sampler, [s.name for s in latent])
            problem.positive_kernel = build_kernel(positive, ops, latent, probe=probe)
        problem.rao_blackwell = rao_blackwell_site(problem, estimator, probe)
        opt = be.make_optimizer(optimizer)
        opt.check(info.init_params)
        run_chunk = ops.make_chunk_runner(_make_step(problem, estimator, opt, num_data, placement))
        init_chains = ops.jit(lambda k, d: estimator.init(problem, k, d, batch_size))
        if cache_key is not None:
            _COMPILED[cache_key] = (problem, opt, run_chunk, init_chains)
            while len(_COMPILED) > _COMPILED_SIZE:
                _COMPILED.popitem(last=False)
    signature = _signature(info, opt)
    if resume is not None:
        _check_resume(resume, ops, info, opt, estimator if given_estimator is None else given_estimator, init_chains, data_values, like,
                      signature)
    return info, problem, opt, run_chunk, init_chains, data_values, batch_size, like, signature


_SAMPLE_DOC = """Draw samples of every site from the fitted unnormalized model.

    Chains start as ``PCD(init="base")`` does, run ``num_warmup`` transitions, then keep
    every ``thinning``-th state until ``num_samples`` are collected across chains.

    Parameters
    ----------
    model : callable
    params : dict
        name -> array of constrained values, as in ``FitResult.params``.
    example : array or dict
        One batch of data (one row is enough): it fixes the shapes and dtypes of the
        observed sites; its values are not used.
    num_samples, num_chains, num_warmup, thinning : int
    sampler : "auto", a sampler from ``ebm_ppl.samplers``, a list of (sampler, site names)
        pairs, or (NumPyro) a ``numpyro.infer.HMC``/``NUTS`` kernel. Step sizes that
        adapt (``"auto"``, ``MALA``/``HMC`` with ``adapt=True``) adapt during warm-up only.
    covariates : str or sequence of str, optional
        Data leaves of ``example`` that are inputs of a conditional model: then its values
        are used, and the draws are from p(· | x_i) for each row i of ``example``, with
        ``num_chains`` chains per row.
    devices : int, list of jax.Device or jax.sharding.Mesh, optional
        NumPyro: split the chains over these devices, as ``fit_unnormalized(devices=)``
        does (the same draws as on one device; ``num_chains`` a multiple of the number of
        devices). Pyro: raises ``NotImplementedError``.

    Returns
    -------
    dict
        site name -> array of shape ``(num_samples, *site event shape)``; with covariates
        ``(num_samples, num_rows, *site event shape)``, num_rows the rows of ``example``.
        The model's deterministic sites (``pyro.deterministic`` / ``numpyro.deterministic``)
        inside the data plate are included, computed from each draw.

    Examples
    --------
    >>> draws = ebm_ppl.sample(ising, result.params, data[:1], num_samples=2000)  # doctest: +SKIP
    """


@exclusive
@doc(_SAMPLE_DOC)
def sample(
    model,
    params,
    example,
    num_samples=1000,
    *,
    sampler="auto",
    num_chains=100,
    num_warmup=1000,
    thinning=1,
    rng_seed=0,
    backend=None,
    model_args=(),
    model_kwargs=None,
    covariates=None,
    devices=None,
):
    _check_positive_int("num_samples", num_samples, allow_none=False)
    _check_positive_int("num_chains", num_chains, allow_none=False)
    _check_positive_int("thinning", thinning, allow_none=False)
    _check_rng_seed(rng_seed)
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, (int, np.integer)) or num_warmup < 0:
        raise ValueError(f"num_warmup must be an integer >= 0, got {num_warmup!r}")
    problem, example = compile_problem(model, params, example, backend, model_args, model_kwargs, covariates,
                                       argument="example")
    problem = place_problem(problem, devices, num_chains)
    ops, info = problem.ops, problem.info
    example_values = info.data_to_values(example)
    like = next(iter(example_values.values()))
    num_rows = int(like.shape[0]) if problem.covariates else 1
    key = ops.seed(rng_seed, like)
    key, key_init = ops.split(key, 2)
    p = info.init_params
    logdensity = problem.logdensity_fn(p)
    position = problem.init_position(key_init, num_chains * num_rows, "base")
    if problem.covariates:  # chain c conditions on row c % num_rows of example
        rows = ops.from_numpy(np.tile(np.arange(num_rows), num_chains), ops.int_dtype, like)
        position.update({c: example_values[c][rows] for c in problem.covariates})
    # a deterministic site outside the data plate is refused before any kernel is built
    _deterministic_rows(info, p, problem.from_internal(position), num_chains * num_rows)
    probe = problem.probe(ops.seed(PROBE_SEED, like))
    kernel = build_kernel(sampler, ops, list(info.sites.values()), num_warmup=num_warmup, probe=probe)
    # adaptation only during warm-up: afterwards the chain must be a fixed Markov kernel
    frozen = kernel
    if is_adaptive(sampler):
        frozen = build_kernel(sampler, ops, list(info.sites.values()), is_adapting=False,
                              num_warmup=num_warmup, probe=probe)
    aux = kernel.init(position)
    if num_warmup:
        run = ops.make_sample_runner(kernel, logdensity, run_kernel)
        key, sub = ops.split(key, 2)
        position, aux = run(sub, position, aux, num_warmup)
    run = ops.make_sample_runner(frozen, logdensity, run_kernel)
    num_rounds = -(-num_samples // num_chains)
    draws = []
    for _ in range(num_rounds):
        key, sub = ops.split(key, 2)
        position, aux = run(sub, position, aux, thinning)
        values = problem.from_internal(position)
        draws.append({**values, **_deterministic_rows(info, p, values, num_chains * num_rows)})
    names = list(info.sites) + [n for n in draws[0] if n not in info.sites and n not in problem.covariates]
    if problem.covariates:
        return {k: ops.xp.concatenate([d[k].reshape((num_chains, num_rows) + tuple(d[k].shape[1:])) for d in draws],
                                      axis=0)[:num_samples] for k in names}
    return {
        k: ops.xp.concatenate([d[k] for d in draws], axis=0)[:num_samples] for k in names
    }


def _deterministic_rows(info, params, values, num_rows):
    """The model's deterministic sites at ``values``, one row per chain (a site outside the
    data plate, one value for all chains, is refused: it would not be a draw per sample)."""
    out = info.deterministic(params, values)
    flat = [n for n, v in out.items() if tuple(getattr(v, "shape", ()))[:1] != (num_rows,)]
    if flat:
        raise NotImplementedError(f"sample: deterministic site(s) {flat} outside the data plate (one value for "
                                  "all chains, not one per draw): compute them from the returned draws")
    return out
