"""Watching a fit as it runs: held-out log-likelihood, pseudo-likelihood, chain diagnostics.

``fit_unnormalized(..., monitor=Monitor(every=N, ...))`` (or a list of callables
``f(step, params, chains) -> dict``) evaluates the monitor after every N updates of the call;
each value lands in ``FitResult.history`` under its name (NaN at the updates in between) and
on the progress bar. A monitor's ``early_stop`` ends the fit after an evaluation.

References
----------
Gelman & Rubin (1992); Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), Rank-
normalization, folding, and localization: an improved R-hat (split R-hat). Besag (1975),
Statistical analysis of non-lattice data (pseudo-likelihood). Salakhutdinov & Murray
(2008) (AIS for monitoring RBMs).
"""

import logging
import warnings

import numpy as np

from ._data_checks import check_data
from .evaluation import EstimateWarning, log_likelihood, log_partition

__all__ = ["Monitor", "as_monitors"]

DIAGNOSTIC_SEED = 7_919  # diagnostics draw from their own stream: the fit is unaffected


class Monitor:
    """What to evaluate every ``every`` updates of a fit.

    ``Monitor(every, data=held_out)`` records ``history["log_likelihood"]``, the mean
    held-out log-likelihood: exact where the model enumerates (as
    :func:`ebm_ppl.log_likelihood` computes it, a binary layer summed out analytically),
    else with log Z from AIS (``log_partition(method="ais", num_chains=50,
    num_temperatures=200)`` from a base-rate start fitted to ``data`` where its sites are
    binary, else from the base measures; a stochastic lower bound on log Z, so the value
    tends to lie above the truth), which is said once in a notice on the ``"ebm_ppl"``
    logger. A monitor that cannot evaluate the model is refused (``ValueError`` or
    ``NotImplementedError``) when the fit starts, before its first update.

    Parameters
    ----------
    every : int
        Evaluate after every ``every`` updates of the call (chunks of updates end there).
    data : array or dict, optional
        Held-out examples (shaped like the training data) for the log-likelihoods and
        ``pseudo_likelihood``.
    exact : bool or None
        ``None`` (default): ``"log_likelihood"`` exact where the model enumerates, else by
        AIS as above (only when ``ais`` is None: with ``ais`` given, an AIS value is
        recorded under ``"ais_log_likelihood"`` instead). ``True``: exact, and a model that
        does not enumerate is refused. ``False``: no ``"log_likelihood"``.
    ais : dict or bool, optional
        Record ``"ais_log_likelihood"``: the mean log-likelihood of ``data`` with log Z from
        :func:`ebm_ppl.log_partition` ``(method="ais", **ais)`` (``True``: its defaults).
    pseudo_likelihood : bool
        Record ``"pseudo_log_likelihood"``: the mean over ``data`` of Σ_i log p(x_i | x_−i)
        over every coordinate of the discrete observed sites (models without latent sites).
    diagnostics : bool
        Record ``"rhat"`` and ``"ess"``: split R-hat and the effective sample size (over all
        chains) of the negative chains' log p̃ over ``diagnostic_steps`` further transitions
        at the current parameters (copies: the fit's chains are not moved), computed with
        ``pyro.ops.stats`` / ``numpyro.diagnostics`` (none with an estimator that keeps no
        chains, such as ``ScoreMatching``).
    diagnostic_steps : int
        Length of that trace (default 50).
    early_stop : callable, optional
        ``early_stop(values) -> bool`` with ``values`` a dict name -> numpy array of the
        values recorded so far (one per evaluation); True ends the fit after this
        evaluation (the result is complete and resumable).

    Examples
    --------
    >>> monitor = ebm_ppl.Monitor(every=100, data=held_out)  # doctest: +SKIP
    >>> result = ebm_ppl.fit_unnormalized(ising, data, monitor=monitor, num_steps=3000)  # doctest: +SKIP
    >>> result.history["log_likelihood"][99::100]  # doctest: +SKIP
    """

    def __init__(self, every, data=None, exact=None, ais=None, pseudo_likelihood=False, diagnostics=True,
                 diagnostic_steps=50, early_stop=None):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"Monitor: every must be an integer >= 1, got {every!r}")
        if exact not in (None, True, False):
            raise ValueError(f"Monitor: exact must be None (exact where the model enumerates, else AIS), True or "
                             f"False, got {exact!r}")
        if (exact or ais or pseudo_likelihood) and data is None:
            raise ValueError("Monitor: exact, ais and pseudo_likelihood need held-out data (data=...)")
        if ais not in (None, False, True) and not isinstance(ais, dict):
            raise ValueError(f"Monitor: ais must be None, True or a dict of log_partition arguments, got {ais!r}")
        if isinstance(diagnostic_steps, bool) or not isinstance(diagnostic_steps, int) or diagnostic_steps < 4:
            raise ValueError(f"Monitor: diagnostic_steps must be an integer >= 4, got {diagnostic_steps!r}")
        if early_stop is not None and not callable(early_stop):
            raise ValueError(f"Monitor: early_stop must be callable, got {early_stop!r}")
        if data is not None:
            check_data(data, "Monitor: data")
        self.every = int(every)
        self.data = data
        self.exact = None if exact is None else bool(exact)
        self.ais = {} if ais is True else (ais or None)
        self.pseudo_likelihood = bool(pseudo_likelihood)
        self.diagnostics = bool(diagnostics)
        self.diagnostic_steps = diagnostic_steps
        self.early_stop = early_stop
        self.callbacks = []
        self.noticed = False  # the AIS notice is given once per monitor

    def __repr__(self):
        return (f"Monitor(every={self.every}, exact={self.exact}, ais={self.ais}, "
                f"pseudo_likelihood={self.pseudo_likelihood}, diagnostics={self.diagnostics})")

    def evaluate(self, ctx, step, params_u, position):
        """The values at update ``step`` (``params_u`` unconstrained, ``position`` sampler space)."""
        problem, ops = ctx["problem"], ctx["problem"].ops
        params = ops.copy_tree(problem.info.constrain(params_u))
        kw = _eval_kwargs(ctx)
        out = {}
        method = ctx.get("log_likelihood_method", "exact" if self.exact else None)
        if method == "exact":
            out["log_likelihood"] = float(np.mean(ops.to_numpy(log_likelihood(ctx["model"], params, self.data, **kw))))
        elif method == "ais":
            out["log_likelihood"] = _ais_mean(ctx, params, self.data, kw, ctx["default_ais"])
        if self.ais is not None:
            out["ais_log_likelihood"] = _ais_mean(ctx, params, self.data, kw, self.ais)
        if self.pseudo_likelihood:
            out["pseudo_log_likelihood"] = pseudo_log_likelihood(problem, params_u, ctx["data_to_values"](self.data))
        if self.diagnostics and position:  # an estimator without chains (score matching) has none to diagnose
            out.update(chain_diagnostics(ctx, params_u, position, self.diagnostic_steps, step))
        for f in self.callbacks:
            out.update(_numbers(f, f(step, params, problem.from_internal(position))))
        return out


def _numbers(fn, values):
    """A callable's ``{name: number}`` as floats, or TypeError naming the callable (raised
    between chunks, it stops the fit with ``err.result``)."""
    if not isinstance(values, dict):
        raise TypeError(f"Monitor: {getattr(fn, '__name__', fn)!r} returned {type(values).__name__}, not a dict "
                        "name -> number (return {} to record nothing)")
    out = {}
    for k, v in values.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"Monitor: {getattr(fn, '__name__', fn)!r} returned {k!r}: {v!r}, not a number "
                            "(a float or a one-element array)") from None
    return out


def _eval_kwargs(ctx):
    kw = dict(backend=ctx["backend"], model_args=ctx["model_args"], model_kwargs=ctx["model_kwargs"])
    if ctx.get("covariates"):  # a conditional model: conditional log-likelihoods, per example
        kw["covariates"] = ctx["covariates"]
    return kw


def _ais_mean(ctx, params, data, kw, ais):
    """The mean log-likelihood of ``data`` with log Z from ``log_partition(method="ais", **ais)``."""
    lz = log_partition(ctx["model"], params, data, method="ais", **dict(kw, **ais))
    ll = log_likelihood(ctx["model"], params, data, log_z=lz, **kw)
    return float(np.mean(ctx["problem"].ops.to_numpy(ll)))


# Monitor(exact=None)'s AIS where the model does not enumerate, and the run that checks a monitor
DEFAULT_AIS = {"num_chains": 50, "num_temperatures": 200}
_TRIAL = {"num_chains": 2, "num_temperatures": 2}
_LOG = logging.getLogger("ebm_ppl")


def _refuse_unless(what, fn):
    """``fn()``, or the monitor refused: its error re-raised as ValueError (NotImplementedError
    kept) saying that ``what`` cannot be evaluated. EstimateWarnings of the trial are muted."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EstimateWarning)
            return fn()
    except NotImplementedError as e:
        raise NotImplementedError(f"Monitor: {what} cannot be evaluated for this model: {e}") from e
    except Exception as e:
        raise ValueError(f"Monitor: {what} cannot be evaluated for this model and data: {e}") from e


def _held_out_values(ctx, data, train_values):
    """The held-out ``data`` as site values, refused unless shaped like the training data."""
    try:
        values = ctx["data_to_values"](data)
    except Exception as e:
        raise ValueError(f"Monitor: data (held-out) is not shaped like the training data: {e!r}") from e
    if sorted(values) != sorted(train_values):
        raise ValueError(f"Monitor: data (held-out) has the leaves {sorted(values)}, the training data "
                         f"{sorted(train_values)}")
    for name, v in values.items():
        got, want = tuple(v.shape), tuple(train_values[name].shape)
        if len(got) != len(want) or got[1:] != want[1:] or got[0] < 1:
            raise ValueError(f"Monitor: data (held-out) {name!r} has shape {got}; the training data has "
                             f"{want}: one example per row, each of shape {want[1:]}")
    return values


def _choose_log_likelihood(m, ctx, params, kw):
    """How ``"log_likelihood"`` is computed: "exact", "ais" (``ctx["default_ais"]``) or None."""
    if m.exact is False:
        return None

    def exact():
        return log_likelihood(ctx["model"], params, m.data, **kw)

    if m.exact:
        _refuse_unless("log_likelihood (exact=True)", exact)
        return "exact"
    try:
        _refuse_unless("log_likelihood", exact)
        return "exact"
    except (ValueError, NotImplementedError) as e:
        reason = e
        while reason.__cause__ is not None:  # the innermost: what makes enumeration impossible
            reason = reason.__cause__
    if m.ais is not None:  # the user's AIS settings record "ais_log_likelihood"
        return None
    what = f"log_likelihood (not exactly: {reason}; nor by AIS)"
    settings = dict(DEFAULT_AIS, init=m.data)  # a base-rate start where the observed sites are binary
    try:
        _refuse_unless(what, lambda: _ais_mean(ctx, params, m.data, kw, dict(settings, **_TRIAL)))
    except NotImplementedError:
        settings["init"] = "base"
        _refuse_unless(what, lambda: _ais_mean(ctx, params, m.data, kw, dict(settings, **_TRIAL)))
    ctx["default_ais"] = settings
    if not m.noticed:
        m.noticed = True
        start = "'base'" if isinstance(settings["init"], str) else "<the held-out data> (a base-rate start)"
        _LOG.warning(
            "Monitor: the model does not enumerate (%s), so history['log_likelihood'] is the held-out "
            "log-likelihood with log Z from AIS: ebm_ppl.log_partition(method='ais', num_chains=%d, "
            "num_temperatures=%d, init=%s), a stochastic lower bound on log Z (the value tends to lie above "
            "the truth). Pass Monitor(ais=dict(...)) for other AIS settings (recorded as 'ais_log_likelihood') "
            "or exact=False to record no log-likelihood.", reason, settings["num_chains"],
            settings["num_temperatures"], start)
    return "ais"


def as_monitors(monitor):
    """``monitor=`` as a :class:`Monitor`: a list of callables ``f(step, params, chains)``
    becomes one evaluating only them, once per epoch."""
    if monitor is None or isinstance(monitor, Monitor):
        return monitor
    if callable(monitor):
        monitor = [monitor]
    if isinstance(monitor, (list, tuple)) and monitor and all(callable(f) for f in monitor):
        m = Monitor(1, diagnostics=False)
        m.every = None  # the fit evaluates plain callables once per epoch
        m.callbacks = list(monitor)
        return m
    raise ValueError(f"monitor must be an ebm_ppl.Monitor or a list of callables f(step, params, chains), got {monitor!r}")


def _add(self, *fns):
    """Add callables ``f(step, params, chains) -> dict`` evaluated with the others; returns self."""
    for f in fns:
        if not callable(f):
            raise ValueError(f"Monitor.add: {f!r} is not callable")
    self.callbacks.extend(fns)
    return self


Monitor.add = _add


def check_pseudo_likelihood(problem, data_values):
    """Refuse (NotImplementedError) a model whose pseudo-likelihood cannot be computed: a
    latent site, or an observed site that is not discrete with a finite support."""
    if problem.latent_names:
        raise NotImplementedError(f"Monitor(pseudo_likelihood=True): the model has latent site(s) "
                                  f"{list(problem.latent_names)}; pseudo-likelihood needs every site observed")
    for name in data_values:
        site = problem.sites.get(name)
        if site is None or not site.is_discrete or site.values is None:
            what = "a covariate" if site is None else f"not discrete with a finite support ({site.support})"
            raise NotImplementedError(f"Monitor(pseudo_likelihood=True): {name!r} is {what}")


def pseudo_log_likelihood(problem, params_u, data_values):
    """Mean over examples of Σ_i log p(x_i | x_−i), every coordinate of the discrete observed
    sites, by enumerating each coordinate's values (Besag 1975)."""
    ops, info, xp = problem.ops, problem.info, problem.ops.xp
    check_pseudo_likelihood(problem, data_values)
    total = 0.0
    with ops.no_grad():
        ld = info.log_density(params_u, data_values)
        for name, x in data_values.items():
            site = problem.sites[name]
            n = x.shape[0]
            flat = x.reshape((n, -1))
            for j in range(flat.shape[1]):
                alts = []
                for v in site.values:
                    col = ops.asarray(np.full(n, v), flat)
                    alts.append(info.log_density(params_u, dict(data_values, **{
                        name: ops.set_column(flat, j, col).reshape(x.shape)})))
                total = total + ld - ops.logsumexp(xp.stack(alts, axis=0), axis=0)
    return float(np.mean(ops.to_numpy(total)))


def _framework_diagnostics(ops, trace):
    """(split R-hat, ESS summed over chains) of ``trace`` (chains, draws) by the framework's own code."""
    return ops.chain_diagnostics(trace)


def chain_diagnostics(ctx, params_u, position, num_steps, step):
    """Split R-hat and ESS of the chains' log p̃ over ``num_steps`` transitions from ``position``
    (the transition is compiled once per fit and kept in ``ctx``); nothing for an
    estimator without chains (PL, RM, SM, NCE)."""
    if not position:
        return {}
    problem = ctx["problem"]
    ops, xp, kernel = problem.ops, problem.ops.xp, problem.kernel
    if "diagnostic_step" not in ctx:
        def one(key, position, aux, params):
            logdensity = problem.logdensity_fn(params)
            position, aux, _ = kernel.step(key, position, aux, logdensity)
            return position, aux, logdensity(position)

        ctx["diagnostic_step"] = ops.jit(one)
    run = ctx["diagnostic_step"]
    like = ops.first_leaf(position)
    key = ops.seed(DIAGNOSTIC_SEED + int(step), like)
    with ops.no_grad():
        aux = kernel.init(position)
        trace = []
        for _ in range(num_steps):
            key, sub = ops.split(key, 2)
            position, aux, ld = run(sub, position, aux, params_u)
            trace.append(ld)
        trace = xp.stack(trace, axis=1)
    rhat, ess = _framework_diagnostics(ops, trace)
    return {"rhat": rhat, "ess": ess}


class MonitorRun:
    """A monitor bound to one call of ``fit_unnormalized``: evaluates between compiled chunks
    and builds the history entries."""

    def __init__(self, monitor, every, ctx, first_update):
        self.monitor, self.every, self.ctx, self.first = monitor, every, ctx, first_update
        self.records = {}  # index of the update in this call -> values

    def check(self, params_u, train_values):
        """Refuse, before the first update, a monitor that cannot evaluate the model
        (``ValueError`` / ``NotImplementedError`` naming what), and choose how
        ``"log_likelihood"`` is computed: everything that can fail is evaluated once at
        ``params_u`` (the fit's starting parameters), the AIS ones with 2 chains and 2
        temperatures. Draws nothing from the fit's streams."""
        m, ctx = self.monitor, self.ctx
        if m.data is None:
            return
        values = _held_out_values(ctx, m.data, train_values)
        params = ctx["problem"].ops.copy_tree(ctx["problem"].info.constrain(params_u))
        kw = _eval_kwargs(ctx)
        ctx["log_likelihood_method"] = _choose_log_likelihood(m, ctx, params, kw)
        if m.ais is not None:
            _refuse_unless("ais_log_likelihood (ais=...)",
                           lambda: _ais_mean(ctx, params, m.data, kw, dict(m.ais, **_TRIAL)))
        if m.pseudo_likelihood:
            _refuse_unless("pseudo_log_likelihood", lambda: check_pseudo_likelihood(ctx["problem"], values))

    def after_chunk(self, num_done, params_u, position, bar):
        """Evaluate if ``num_done`` updates of the call end an interval; True: stop the fit."""
        if num_done == 0 or num_done % self.every:
            return False
        values = self.monitor.evaluate(self.ctx, self.first + num_done, params_u, position)
        self.records[num_done - 1] = values
        if values:
            bar.show_monitor(values)
        stop = self.monitor.early_stop
        if stop is None:
            return False
        names = sorted({k for v in self.records.values() for k in v})
        so_far = {k: np.array([self.records[i].get(k, np.nan) for i in sorted(self.records)]) for k in names}
        return bool(stop(so_far))

    def history(self, num_updates):
        names = sorted({k for v in self.records.values() for k in v})
        out = {k: np.full(num_updates, np.nan) for k in names}
        for i, values in self.records.items():
            for k, v in values.items():
                if i < num_updates:
                    out[k][i] = v
        return out
