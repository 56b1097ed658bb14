"""The user-facing functions: ``fit_unnormalized`` and ``sample`` (and, re-exported from
``ebm_ppl.evaluation``, ``log_partition``, ``log_likelihood`` and ``LogZ``).

The fit is written once over the backend contract (``ebm_ppl.backend``): one parameter
update is a pure function ``step(carry, (batch_indices, active)) -> (carry, stats)`` that
NumPyro's backend jits and scans over an epoch, and Pyro's backend runs in a plain loop.
"""

import collections
import math
from typing import Any, NamedTuple

import numpy as np

from ._problem import PROBE_SEED, Problem, compile_problem, run_kernel
from ._sites import Same as _Same
from .backend import detect_backend, get_backend
from .estimators import PCD
from .monitor import MonitorRun, as_monitors
from .evaluation import LogZ, log_likelihood, log_partition
from .samplers.base import build_kernel, is_adaptive, restrict_sampler

__all__ = ["fit_unnormalized", "sample", "log_partition", "log_likelihood", "FitResult", "FitState", "LogZ"]

# Updates per compiled call (whole epochs, at least this many): each call costs some
# microseconds of Python (minibatch indices, statistics to the host, the progress bar),
# and on NumPyro epochs past the last active one are skipped, so long chunks cost nothing.
_CHUNK_UPDATES = 256

_HISTORY = ("loss", "positive_log_density", "negative_log_density", "acceptance_rate")


class FitState(NamedTuple):
    """Everything ``resume=`` needs to continue a fit exactly where it stopped.

    Attributes
    ----------
    params : dict
        Unconstrained parameters (copies).
    optimizer_state : Any
        The optimizer's state (Pyro: ``PyroOptim.get_state()``; NumPyro: its pytree).
    estimator_state : Any
        Chains (sampler space) and the sampler's adapted step sizes.
    rng_key : Any
        The key of the sampling stream (Pyro: a ``torch.Generator`` state).
    data_key : Any
        The key of the minibatch-shuffling stream.
    num_updates : int
        Parameter updates done so far.
    estimator : Any
        The estimator object that produced ``estimator_state``.
    """

    params: Any
    optimizer_state: Any
    estimator_state: Any
    rng_key: Any
    data_key: Any
    num_updates: int
    estimator: Any


class FitResult(NamedTuple):
    """What :func:`fit_unnormalized` returns.

    Attributes
    ----------
    params : dict
        name -> array (``torch.Tensor`` / ``jax.Array``), constrained values. On Pyro they
        are also left in ``pyro.get_param_store()``.
    history : dict
        name -> 1-D ``numpy.ndarray`` with one entry per update: ``loss`` (the surrogate
        mean log p̃(negative) − mean log p̃(positive), whose gradient is the estimator; it
        is *not* the negative log-likelihood), ``positive_log_density``,
        ``negative_log_density`` and ``acceptance_rate`` (NaN where the sampler has none).
    chains : dict
        site name -> array: the negative-phase chain state at the end (constrained values).
    state : FitState
        What ``resume=`` needs.
    backend : str
        ``"pyro"`` or ``"numpyro"``.
    """

    params: dict
    history: dict
    chains: dict
    state: FitState
    backend: str


def _check_positive_int(name, value, allow_none=True):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_fit_args(estimator, num_epochs, num_steps, batch_size):
    if (num_epochs is None) == (num_steps is None):
        raise ValueError(
            "pass exactly one of num_epochs and num_steps, got "
            f"num_epochs={num_epochs!r}, num_steps={num_steps!r}"
        )
    _check_positive_int("num_epochs", num_epochs)
    _check_positive_int("num_steps", num_steps)
    _check_positive_int("batch_size", batch_size)
    if not (hasattr(estimator, "update") and hasattr(estimator, "init")):
        raise TypeError("estimator must be one of ebm_ppl.CD, PCD, PT, FPCD, ReplayBuffer (an object with "
                        f"init and update), got {estimator!r}")


def _negative_chains(estimator, est_state):
    """The estimator's negative-phase chains (sampler space): PT's β = 1 replicas, else ``position``."""
    if hasattr(estimator, "negative_chains"):
        return estimator.negative_chains(est_state)
    return est_state.position


def _make_step(problem, estimator, optimizer):
    """One parameter update as a pure function of (carry, (indices, active))."""
    ops, info, xp = problem.ops, problem.info, problem.ops.xp
    surrogate_weights = {}  # (num positive, num negative) -> weights of weighted_param_grad

    def step(data_values, carry, x):
        params, opt_state, est_state, key, t, failed = carry
        idx, active = x
        old_key = key
        key, key_neg = ops.split(key, 2)
        batch = {k: v[idx] for k, v in data_values.items()}
        with ops.no_grad():  # sampling needs no parameter gradients (MALA re-enables its own)
            out = estimator.update(key_neg, problem, est_state, ops.stop_gradient(params), batch, batch_index=idx)
        new_est, positive, negative, rate = out[:4]
        extra = tuple(out[4]) if len(out) > 4 else ()  # the estimator's own history entries
        positive = problem.from_internal(ops.stop_gradient(positive))
        negative = problem.from_internal(ops.stop_gradient(negative))

        num_pos = next(iter(positive.values())).shape[0]
        both = {k: xp.concatenate([positive[k], negative[k]], axis=0) for k in positive}

        def surrogate(p):  # one call of the model on the positive and negative rows
            ld = info.log_density(p, both)
            pos, neg = xp.mean(ld[:num_pos]), xp.mean(ld[num_pos:])
            return neg - pos, (pos, neg)

        if info.weighted_param_grad is not None:  # the backend's faster gradient (Pyro)
            num_neg = next(iter(negative.values())).shape[0]
            if (num_pos, num_neg) not in surrogate_weights:  # the same for every update of a fit
                w = np.concatenate([np.full(num_pos, -1.0 / num_pos), np.full(num_neg, 1.0 / num_neg)])
                surrogate_weights[num_pos, num_neg] = ops.from_numpy(w, ops.asarray(0.0, None).dtype,
                                                                     next(iter(both.values())))
            ld, grads = info.weighted_param_grad(params, both, surrogate_weights[num_pos, num_neg])
            pos, neg = xp.mean(ld[:num_pos]), xp.mean(ld[num_pos:])
            loss = neg - pos
        else:
            (loss, (pos, neg)), grads = ops.value_and_grad(surrogate, has_aux=True)(params)
        ok = ops.all_finite((loss, pos, neg, grads))
        go = active & ok & (failed < 0)

        def apply(_):
            new_params, new_opt = optimizer.update(grads, opt_state, params, loss)
            if hasattr(estimator, "after_gradient"):  # e.g. FPCD's fast weights
                return new_params, new_opt, estimator.after_gradient(new_est, grads)
            return new_params, new_opt, new_est

        def skip(_):
            return params, opt_state, est_state

        params2, opt2, est2 = ops.cond(go, apply, skip, None)
        key = ops.select_key(active, key, old_key)
        failed = xp.where(active & ~ok & (failed < 0), t, failed)
        t = t + xp.where(active, 1, 0)
        stats = (loss, pos, neg, rate) + extra
        return (params2, opt2, est2, key, t, failed), stats

    return step


# Compiled updates (NumPyro) kept across calls, so that resuming a fit, or fitting the same
# model again, does not trace and compile again. The key holds the model, its arguments and
# the optimizer by identity, the estimator and sampler by configuration, and the data by
# shapes and dtypes (see _compiled_key).
_COMPILED = collections.OrderedDict()
_COMPILED_SIZE = 8


def _config_key(obj):
    """A hashable key of a configuration value (samplers, estimators, masks, numbers)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return (type(obj).__name__, obj)
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__,) + tuple(_config_key(v) for v in obj)
    if isinstance(obj, dict):
        return ("dict",) + tuple((k, _config_key(v)) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0])))
    if isinstance(obj, np.ndarray):
        return ("ndarray", obj.dtype.str, obj.shape, obj.tobytes())
    if hasattr(obj, "__dict__") and type(obj).__module__.startswith("ebm_ppl."):
        return (type(obj),) + _config_key(vars(obj))
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and getattr(obj, "size", 1 << 20) <= 1 << 16:
        try:  # a small array (e.g. a block mask): by value
            return ("array", str(obj.dtype), tuple(obj.shape), np.asarray(obj).tobytes())
        except Exception:
            pass
    return _Same(obj)


def _compiled_key(name, model, model_args, model_kwargs, data, estimator, sampler, optimizer, batch_size,
                  chunk_len):
    leaves = data if isinstance(data, dict) else {"": data}
    shapes = tuple((k, tuple(v.shape), str(v.dtype)) for k, v in sorted(leaves.items()))
    kwargs = tuple((k, _Same(v)) for k, v in sorted((model_kwargs or {}).items()))
    return (name, _Same(model), tuple(_Same(a) for a in model_args), kwargs, shapes, _config_key(estimator),
            _config_key(sampler), _config_key(optimizer), batch_size, chunk_len)


def _batches(ops, data_key, num_data, batch_size, chunk_len, num_active, like=None):
    """Minibatch indices for a chunk: ``(chunk_len, batch_size)``, one row per update.

    Each epoch is a fresh random permutation (the last ``num_data % batch_size`` examples
    of it are dropped); only the epochs that active updates need are drawn, so a resumed
    fit shuffles exactly as an uninterrupted one (both start epochs at chunk boundaries).
    Indices are drawn on the host (``ops.epoch_permutations``) and moved once per chunk.
    """
    per_epoch = num_data // batch_size
    num_epochs = -(-num_active // per_epoch)
    data_key, perms = ops.epoch_permutations(data_key, num_data, num_epochs)
    idx = np.asarray(perms)[:, : per_epoch * batch_size].reshape((-1, batch_size))
    if idx.shape[0] < chunk_len:
        idx = np.concatenate([idx, np.zeros((chunk_len - idx.shape[0], batch_size), idx.dtype)])
    return data_key, ops.from_numpy(idx[:chunk_len], ops.int_dtype, like)


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
    monitor=None,
):
    """Fit the parameters of an unnormalized model by (stochastic) maximum likelihood.

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
        The training set; it is never modified.
    estimator : CD, PCD, PT, FPCD or ReplayBuffer, optional
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
    backend : {"pyro", "numpyro"}, optional
        Default: from the data's array type (torch -> Pyro, jax -> NumPyro).
    rng_seed : int
    progress_bar : bool
        A tqdm bar with the loss and the acceptance rate.
    resume : FitResult, optional
        Continue its chains, parameters, optimizer state and random streams.
    model_args, model_kwargs
        Extra arguments passed to the model after the batch.
    monitor : Monitor or list of callables, optional
        What to evaluate between updates (:class:`ebm_ppl.Monitor`: held-out exact / AIS
        log-likelihood, pseudo-likelihood, split R-hat and ESS of the chains; or callables
        ``f(step, params, chains) -> dict``, evaluated once per epoch). Values land in
        ``history`` (NaN between evaluations) and on the progress bar; ``Monitor.every``
        must be a multiple of the updates per epoch.

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError, TypeError
        For bad input, before anything changes (the message names the site or argument).
    FloatingPointError
        When an update meets a non-finite log density or gradient; parameters and chains
        are left at their last finite values (also in ``err.result``).

    Notes
    -----
    On NumPyro the update is compiled once and an epoch is one ``lax.scan`` of it; the
    compiled update is kept (up to 8 of them) for later calls with the same model object,
    model arguments, estimator and sampler configuration, optimizer object and data shapes,
    so resuming a fit, or fitting the same model again, does not compile again (a model
    that reads mutable global state sees that state as it was when it was compiled, as
    with ``jax.jit``). On Pyro the model's log density and the gradients the samplers and
    the optimizer take run as TorchScript graphs traced once per input shape, where the
    trace reproduces the eager model (see the README).

    Examples
    --------
    >>> result = ebm_ppl.fit_unnormalized(ising, data, ebm_ppl.PCD(500, 2), num_steps=3000)  # doctest: +SKIP
    >>> result.params["J"]  # doctest: +SKIP

    References
    ----------
    Hinton (2002); Tieleman (2008); Goodfellow, Bengio & Courville (2016), ch. 18.
    """
    estimator = PCD() if estimator is None else estimator
    _check_fit_args(estimator, num_epochs, num_steps, batch_size)
    monitor = as_monitors(monitor)
    name = detect_backend(data, backend)
    if resume is not None:
        if not isinstance(resume, FitResult):
            raise TypeError(f"resume must be a FitResult, got {type(resume).__name__}")
        if resume.backend != name:
            raise ValueError(f"resume: a {resume.backend!r} result cannot resume a {name!r} fit")
    be = get_backend(name)
    ops = be.ops
    data = be.as_data(data)
    info = be.compile_model(model, data, model_args, model_kwargs or {})
    data_values = info.data_to_values(data)
    num_data = int(next(iter(data_values.values())).shape[0])
    batch_size = num_data if batch_size is None else int(batch_size)
    if batch_size > num_data:
        raise ValueError(f"batch_size={batch_size} is larger than the data set ({num_data} examples)")
    like = next(iter(data_values.values()))
    per_epoch = num_data // batch_size
    epochs_per_chunk = max(1, math.ceil(_CHUNK_UPDATES / per_epoch))
    chunk_len = epochs_per_chunk * per_epoch
    if monitor is not None:  # evaluations fall between compiled chunks: chunks of `every` updates
        every = monitor.every or per_epoch
        if every % per_epoch:
            raise ValueError(f"monitor: every={every} must be a multiple of the updates per epoch ({per_epoch})")
        chunk_len = every
    cache_key = _compiled_key(name, model, model_args, model_kwargs, data, estimator, sampler, optimizer,
                              batch_size, chunk_len) if ops.caches_compiled else None
    cached = _COMPILED.get(cache_key) if cache_key is not None else None
    if cached is not None:  # the same fit as before: its kernels and compiled update
        _COMPILED.move_to_end(cache_key)
        problem, opt, run_chunk, init_chains = cached
    else:
        problem = Problem(ops, info)
        probe = problem.probe(ops.seed(PROBE_SEED, like))
        problem.kernel = build_kernel(sampler, ops, list(info.sites.values()), probe=probe)
        latent = [site for site in info.sites.values() if not site.is_observed]
        if latent:
            positive = restrict_sampler(sampler, [s.name for s in latent])
            problem.positive_kernel = build_kernel(positive, ops, latent, probe=probe)
        opt = be.make_optimizer(optimizer)
        run_chunk = ops.make_chunk_runner(_make_step(problem, estimator, opt), per_epoch)
        init_chains = ops.jit(lambda k, d: estimator.init(problem, k, d, batch_size))
        if cache_key is not None:
            _COMPILED[cache_key] = (problem, opt, run_chunk, init_chains)
            while len(_COMPILED) > _COMPILED_SIZE:
                _COMPILED.popitem(last=False)

    if resume is not None:
        st = resume.state
        if type(st.estimator) is not type(estimator) or vars(st.estimator) != vars(estimator):
            raise ValueError(f"resume: the result was fitted with {st.estimator!r}, not {estimator!r}")
        params = be.restore_params(info, st.params)
        opt_state = opt.init(params, state=st.optimizer_state)
        est_state = ops.copy_tree(st.estimator_state)
        key, data_key = ops.key_from_state(st.rng_key, like), ops.key_from_state(st.data_key, like)
        done = st.num_updates
    else:
        params = info.init_params
        opt_state = opt.init(params)
        key = ops.seed(rng_seed, like)
        data_key = ops.fork(key)  # an independent stream for minibatch shuffling
        key, key_init = ops.split(key, 2)
        est_state = init_chains(key_init, data_values)
        done = 0

    total = num_steps if num_steps is not None else num_epochs * per_epoch

    t = ops.asarray(0, None, int_=True)
    failed = ops.asarray(-1, None, int_=True)
    carry = (params, opt_state, est_state, key, t, failed)
    stats = []
    from tqdm.auto import tqdm

    bar = tqdm(total=total, disable=not progress_bar, desc="fit_unnormalized", leave=False)
    watch = None
    if monitor is not None:
        ctx = dict(problem=problem, model=model, backend=name, model_args=model_args, model_kwargs=model_kwargs,
                   data_to_values=lambda d: info.data_to_values(be.as_data(d)))
        watch = MonitorRun(monitor, every, ctx, done)
    remaining = total
    try:
        while remaining > 0:
            data_key, idx = _batches(ops, data_key, num_data, batch_size, chunk_len, min(remaining, chunk_len), like)
            active = ops.asarray(np.arange(chunk_len) < remaining, None, bool_=True)
            carry, out = run_chunk(carry, data_values, (idx, active))
            n_done = min(remaining, chunk_len)
            fail_at = int(ops.to_numpy(carry[5]))
            if fail_at >= 0:
                n_done = fail_at - (total - remaining)
            stats.append([ops.to_numpy(o)[:n_done] for o in out])
            remaining -= n_done
            bar.update(n_done)
            if n_done:
                acc = stats[-1][3]
                acc = float(np.mean(acc[np.isfinite(acc)])) if np.isfinite(acc).any() else float("nan")
                bar.set_postfix(loss=f"{stats[-1][0][-1]:.4g}", acc=f"{acc:.3g}")
            if fail_at >= 0:
                break
            if watch is not None and watch.after_chunk(total - remaining, carry[0],
                                                       _negative_chains(estimator, carry[2]), bar):
                break  # early stop
    finally:
        bar.close()

    params, opt_state, est_state, key, t, failed = carry
    history = {
        name_: np.concatenate([s[i] for s in stats]).astype(float) if stats else np.zeros(0)
        for i, name_ in enumerate(_HISTORY + tuple(getattr(estimator, "history_names", ())))
    }
    n_updates = int(ops.to_numpy(t))
    if watch is not None:
        history.update(watch.history(len(history["loss"])))
    state = FitState(
        params=ops.copy_tree(params),
        optimizer_state=opt.get_state(opt_state),
        estimator_state=ops.copy_tree(est_state),
        rng_key=ops.key_state(key),
        data_key=ops.key_state(data_key),
        num_updates=done + n_updates,
        estimator=estimator,
    )
    be.store_params(info, params)
    result = FitResult(
        params=ops.copy_tree(info.constrain(params)),
        history=history,
        chains=ops.copy_tree(problem.from_internal(_negative_chains(estimator, est_state))),
        state=state,
        backend=name,
    )
    fail_at = int(ops.to_numpy(failed))
    if fail_at >= 0:
        err = FloatingPointError(
            f"non-finite log density or gradient at update {done + fail_at} "
            f"(update {fail_at} of this call); parameters and chains are left at their values "
            "before that update (see err.result)"
        )
        err.result = result
        raise err
    return result


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
):
    """Draw samples of every site from the fitted unnormalized model.

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

    Returns
    -------
    dict
        site name -> array of shape ``(num_samples, *site event shape)``.

    Examples
    --------
    >>> draws = ebm_ppl.sample(ising, result.params, data[:1], num_samples=2000)  # doctest: +SKIP
    """
    _check_positive_int("num_samples", num_samples, allow_none=False)
    _check_positive_int("num_chains", num_chains, allow_none=False)
    _check_positive_int("thinning", thinning, allow_none=False)
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, (int, np.integer)) or num_warmup < 0:
        raise ValueError(f"num_warmup must be an integer >= 0, got {num_warmup!r}")
    problem, example = compile_problem(model, params, example, backend, model_args, model_kwargs)
    ops, info = problem.ops, problem.info
    like = next(iter(info.data_to_values(example).values()))
    probe = problem.probe(ops.seed(PROBE_SEED, like))
    kernel = build_kernel(sampler, ops, list(info.sites.values()), num_warmup=num_warmup, probe=probe)
    # adaptation only during warm-up: afterwards the chain must be a fixed Markov kernel
    frozen = kernel
    if is_adaptive(sampler):
        frozen = build_kernel(sampler, ops, list(info.sites.values()), is_adapting=False,
                              num_warmup=num_warmup, probe=probe)
    key = ops.seed(rng_seed, like)
    key, key_init = ops.split(key, 2)
    p = info.init_params
    logdensity = problem.logdensity_fn(p)
    position = problem.init_position(key_init, num_chains, "base")
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
        draws.append(problem.from_internal(position))
    return {
        k: ops.xp.concatenate([d[k] for d in draws], axis=0)[:num_samples] for k in info.sites
    }
