"""The Trainer (bound once to a data set; init / update / run) and fit_unnormalized,
a wrapper over ``Trainer.run``."""

import os
from typing import Any, NamedTuple

from .._progress import FitBar
from .._exclusive import exclusive
from .._result import FitResult, FitState
from .._stops import DeferredStop, is_interrupt, save_on_stop, stop_error
from .._tree import describe
from ..backend import detect_backend, get_backend
from ..estimators import default_estimator
from ..estimators.base import HISTORY
from ..monitor import MonitorRun, as_monitors
from .checks import _batch_values, _check_data, _check_fit_args, _check_placement, _check_rng_seed
from .checks import _check_update_state
from .ranks import on_ranks, rank_share, same_examples, stop_note
from .loop import _Fit, _Minibatches, _Progress, _fit_loop, _make_result, _make_state
from .resume import _start_state
from .bind import _Compiled, _setup
from .step import _CHUNK_UPDATES, Carry

__all__ = ["Trainer", "fit_unnormalized"]


@exclusive
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
        by SIGINT or SIGTERM also saves its last consistent state there. Under
        torch.distributed, rank 0 writes one file holding every rank's chains and random
        streams, and every rank resumes from it (with as many ranks); a stop writes none.
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
    trainer = Trainer(model, estimator, sampler, optimizer, batch_size=batch_size, backend=backend,
                      model_args=model_args, model_kwargs=model_kwargs, covariates=covariates,
                      devices=devices)
    return trainer.run(data, num_epochs=num_epochs, num_steps=num_steps, rng_seed=rng_seed,
                       progress_bar=progress_bar, resume=resume, monitor=monitor,
                       checkpoint_every=checkpoint_every, checkpoint_path=checkpoint_path)


class Trainer:
    """Fitting an unnormalized model as an object, in the style of NumPyro's ``SVI``:
    built from (model, estimator, sampler, optimizer), bound once to a data set.

    ``state = trainer.init(data)`` checks the data, traces the model, builds the kernels
    and compiles the update once, for this data set: its size is the one a parameter-only
    penalty (a log prior on θ) is counted against, once per data set, whatever the batch.
    ``state, stats = trainer.update(state, batch)`` is then one pure update: it reads
    everything from ``state`` (an edited ``state._replace(params=...)`` included) and
    runs none of the model's Python for a batch of a shape already seen. ``run(data,
    num_steps=...) -> FitResult`` is what :func:`fit_unnormalized` calls (same arguments,
    same results, bit for bit). The keyword arguments are :func:`fit_unnormalized`'s.

    ``init``, ``update`` and ``run`` hold the process-wide ebm_ppl lock: a call made
    while another thread is inside an ebm_ppl call raises ``RuntimeError`` (the
    frameworks' effect handlers and Pyro's param store are process-wide).

    Examples
    --------
    >>> trainer = ebm_ppl.Trainer(model, ebm_ppl.PCD(100, 1), optimizer=optax.adam(1e-2))  # doctest: +SKIP
    >>> state = trainer.init(data)  # doctest: +SKIP
    >>> for idx in np.split(np.random.permutation(len(data)), 10):  # doctest: +SKIP
    ...     state, stats = trainer.update(state, data[idx], indices=idx)
    >>> result = trainer.run(data, num_steps=1000)  # doctest: +SKIP
    """

    def __init__(self, model, estimator=None, sampler="auto", optimizer=None, *, batch_size=None, backend=None,
                 model_args=(), model_kwargs=None, covariates=None, devices=None):
        self.model, self.sampler, self.optimizer = model, sampler, optimizer
        self.estimator = default_estimator() if estimator is None else estimator
        _check_fit_args(self.estimator, None, 1, batch_size)
        self.batch_size, self.backend = batch_size, backend
        self.model_args, self.model_kwargs = tuple(model_args), model_kwargs
        self.covariates, self.devices = covariates, devices
        self._bound = None  # (_Compiled, the estimator state's layout, the last state update made)

    def _compile(self, data, resume=None, batch_size=None):
        """Check ``data`` (and ``resume``) and bind the trainer to them; raises before
        anything the caller can see changes (a rejected Pyro call restores the store)."""
        name = detect_backend(data, self.backend)
        if resume is not None:
            if not isinstance(resume, FitResult):
                raise TypeError(f"resume must be a FitResult, got {type(resume).__name__}")
            if resume.backend != name:
                raise ValueError(f"resume: a {resume.backend!r} result cannot resume a {name!r} fit")
        _check_data(data)
        be = get_backend(name)
        batch_size = self.batch_size if batch_size is None else batch_size
        placement = be.make_placement(self.devices)
        _check_placement(placement, self.estimator, data, batch_size)
        resume = rank_share(placement, resume)  # a checkpoint of a fit over ranks: this rank's chains and stream
        ops = be.ops.with_placement(placement)
        local = self.estimator if placement is None else placement.local_estimator(self.estimator)
        snapshot = be.snapshot_params()
        try:
            setup = _setup(be, ops, name, self.model, data, local, self.sampler, self.optimizer, batch_size,
                           self.model_args, self.model_kwargs, resume, self.covariates, placement, self.estimator)
        except BaseException:
            be.restore_snapshot(snapshot)
            raise
        return _Compiled(be, ops, name, *setup, placement, local)

    def _start(self, c, rng_seed, resume, watch=None):
        """(_Fit, Carry, data values, (data key, epoch permutation, offset)) to start from."""
        resume = rank_share(c.placement, resume)
        params, opt_state, est_state, key, data_key, done, perm, offset = _start_state(
            c.ops, c.be, c.info, c.opt, c.init_chains, c.data_values, c.like, rng_seed, resume, c.placement)
        data_values = c.data_values
        if resume is None:  # ranks: the same per-example chains on every rank
            est_state = same_examples(c.placement, est_state)
        if c.placement is not None:
            params, opt_state, est_state, data_values = c.placement.place(params, opt_state, est_state, data_values)
        fit = _Fit(c.ops, c.be, c.info, c.problem, c.opt, c.estimator, c.name, done, c.signature, watch,
                   c.placement, self.estimator)
        carry = Carry(params, opt_state, est_state, key, c.ops.asarray(0, None, int_=True),
                      c.ops.asarray(-1, None, int_=True))
        return fit, carry, data_values, (data_key, perm, offset)

    @exclusive
    def init(self, data, rng_seed=0, resume=None):
        """Bind the trainer to the data set ``data`` (trace, build and compile once) and
        return the :class:`FitState` a fit on it starts from: fresh chains, or ``resume``'s
        state (a :class:`FitResult`, checked as ``fit_unnormalized(resume=)`` checks it).

        The size of ``data`` is the data-set size of every later :meth:`update` (a
        parameter-only penalty counts once per data set); persistent per-example chains
        (``positive="persistent"``, PCD with covariates) are kept for its rows."""
        _check_rng_seed(rng_seed)
        c = self._compile(data, resume)
        fit, carry, _, (data_key, perm, offset) = self._start(c, rng_seed, resume)
        state = _make_state(fit, carry, 0, (c.ops.key_state(data_key), perm, offset))
        self._bound = _Bound(c, describe(state.estimator_state), state, frozenset())
        return state

    @exclusive
    def update(self, state, batch, indices=None):
        """One parameter update on ``batch`` (all of its examples) from ``state``.

        Parameters
        ----------
        state : FitState
            From :meth:`init`, an earlier :meth:`update` or ``FitResult.state`` of a fit of
            this trainer's model and estimator; it is read, never changed (edits made with
            ``state._replace(...)`` are honoured).
        batch : array or dict of arrays
            Examples of the data set given to :meth:`init` (the same leaves, shapes after
            axis 0 and dtypes).
        indices : array of int, optional
            The rows of the :meth:`init` data set that ``batch`` holds; needed where the
            state keeps chains per example (``positive="persistent"``, PCD with covariates).

        Returns
        -------
        (FitState, dict)
            The new state and the update's statistics (``loss``, ``positive_log_density``,
            ``negative_log_density``, ``acceptance_rate`` and the estimator's own).

        A non-finite update raises ``FloatingPointError`` and leaves ``state`` as it was.
        """
        if not isinstance(state, FitState):
            raise TypeError(f"state must be a FitState (from Trainer.init or a FitResult.state), got "
                            f"{type(state).__name__}")
        if self._bound is None:
            raise RuntimeError("Trainer.update: call trainer.init(data) first: it binds the trainer to the data "
                               "set (whose size counts a parameter-only penalty once) and compiles the update")
        b = self._bound
        c = b.compiled
        batch_values, idx = _batch_values(c, self.backend, batch, indices)
        if state is not b.last:  # a state this trainer did not just make: checked as resume= checks it
            _check_update_state(c, state, self.estimator, b.layout)
        resume = FitResult(None, {}, {}, state, c.name)
        params, opt_state, est_state, key, *_ = _start_state(c.ops, c.be, c.info, c.opt, c.init_chains, None,
                                                            c.like, 0, resume, c.placement, replace_params=True)
        if c.placement is not None:
            params, opt_state, est_state, batch_values = c.placement.place(params, opt_state, est_state,
                                                                           batch_values)
        carry = Carry(params, opt_state, est_state, key, c.ops.asarray(0, None, int_=True),
                      c.ops.asarray(-1, None, int_=True))
        shape = tuple((k, tuple(v.shape)) for k, v in sorted(batch_values.items())) + (idx is None,)
        if shape in b.shapes:
            carry, out = c.update(carry, batch_values, idx)
        else:  # a new shape: compiled (captured) now, so that later batches of it run no model Python
            with c.ops.compile_now():
                carry, out = c.update(carry, batch_values, idx)
        if int(c.ops.to_numpy(carry.failed)) >= 0:
            raise FloatingPointError("Trainer.update: non-finite log density, gradient or parameter; the state "
                                     "passed is unchanged")
        fit = _Fit(c.ops, c.be, c.info, c.problem, c.opt, c.estimator, c.name, state.num_updates, c.signature,
                   None, c.placement, state.estimator)
        stats = [c.ops.to_numpy(o).reshape(1) for o in out]
        new = _make_state(fit, carry, 1, (state.data_key, state.epoch_perm, state.epoch_offset))
        self._bound = b._replace(last=new, shapes=b.shapes | {shape})
        names = HISTORY + tuple(self.estimator.history_names)
        return new, {k: float(v[0]) for k, v in zip(names, stats)}

    @exclusive
    def run(self, data, num_epochs=None, num_steps=None, *, rng_seed=0, progress_bar=True, resume=None,
            monitor=None, checkpoint_every=None, checkpoint_path=None):
        """Fit on ``data``: the arguments and the result of :func:`fit_unnormalized`."""
        _check_fit_args(self.estimator, num_epochs, num_steps, self.batch_size, rng_seed, checkpoint_every,
                        checkpoint_path)
        monitor = as_monitors(monitor)
        snapshot = get_backend(detect_backend(data, self.backend)).snapshot_params() if monitor is not None else None
        c = self._compile(data, resume)
        num_data = int(next(iter(c.data_values.values())).shape[0])
        total = num_steps if num_steps is not None else num_epochs * (num_data // c.batch_size)
        watch = None
        if monitor is not None:  # evaluated every `every` updates of the call (callables: every epoch)
            watch = _bind_monitor(self, c, monitor, num_data, resume, snapshot)
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
                if on_ranks(c.placement):  # a gather now could wait forever for a rank that went on
                    stop_note(error, checkpoint[0])
                else:
                    save_on_stop(error, result, checkpoint[1])  # the last consistent state, on disk
        if error is not None:
            raise error
        return result


class _Bound(NamedTuple):
    """What :meth:`Trainer.init` binds: the compiled fit, the layout of its estimator state,
    the last state :meth:`Trainer.update` returned (trusted without checks) and the batch
    shapes seen."""

    compiled: Any
    layout: list
    last: Any
    shapes: frozenset  # batch shapes updated on so far


def _bind_monitor(trainer, c, monitor, num_data, resume, snapshot):
    """The monitor bound to this call, checked before the first update (a monitor that
    cannot evaluate the model is refused with the Pyro param store as it was)."""
    ctx = dict(problem=c.problem, model=trainer.model, backend=c.name, model_args=trainer.model_args,
               model_kwargs=trainer.model_kwargs, covariates=c.problem.covariates,
               data_to_values=lambda d: c.info.data_to_values(c.be.as_data(d)))
    done = resume.state.num_updates if resume is not None else 0
    watch = MonitorRun(monitor, monitor.every or num_data // c.batch_size, ctx, done)
    try:
        watch.check(resume.state.params if resume is not None else c.info.init_params, c.data_values)
    except BaseException:
        c.be.restore_snapshot(snapshot)
        raise
    return watch
