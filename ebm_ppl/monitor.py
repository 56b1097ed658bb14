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

import numpy as np

from .evaluation import log_likelihood, log_partition

__all__ = ["Monitor", "as_monitors"]

DIAGNOSTIC_SEED = 7_919  # diagnostics draw from their own stream: the fit is unaffected


class Monitor:
    """What to evaluate every ``every`` updates of a fit.

    Parameters
    ----------
    every : int
        Evaluate after every ``every`` updates of the call (a multiple of the updates per
        epoch, so that evaluations fall between compiled chunks).
    data : array or dict, optional
        Held-out examples for ``exact``, ``ais`` and ``pseudo_likelihood``.
    exact : bool
        Record ``"log_likelihood"``: the mean exact log-likelihood of ``data``
        (:func:`ebm_ppl.log_likelihood`, enumerable models).
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
        ``pyro.ops.stats`` / ``numpyro.diagnostics``.
    diagnostic_steps : int
        Length of that trace (default 50).
    early_stop : callable, optional
        ``early_stop(values) -> bool`` with ``values`` a dict name -> numpy array of the
        values recorded so far (one per evaluation); True ends the fit after this
        evaluation (the result is complete and resumable).

    Examples
    --------
    >>> monitor = ebm_ppl.Monitor(every=100, data=held_out, exact=True)  # doctest: +SKIP
    >>> result = ebm_ppl.fit_unnormalized(ising, data, monitor=monitor, num_steps=3000)  # doctest: +SKIP
    >>> result.history["log_likelihood"][99::100]  # doctest: +SKIP
    """

    def __init__(self, every, data=None, exact=False, ais=None, pseudo_likelihood=False, diagnostics=True,
                 diagnostic_steps=50, early_stop=None):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"Monitor: every must be an integer >= 1, got {every!r}")
        if (exact or ais or pseudo_likelihood) and data is None:
            raise ValueError("Monitor: exact, ais and pseudo_likelihood need held-out data (data=...)")
        if ais not in (None, False, True) and not isinstance(ais, dict):
            raise ValueError(f"Monitor: ais must be None, True or a dict of log_partition arguments, got {ais!r}")
        if isinstance(diagnostic_steps, bool) or not isinstance(diagnostic_steps, int) or diagnostic_steps < 4:
            raise ValueError(f"Monitor: diagnostic_steps must be an integer >= 4, got {diagnostic_steps!r}")
        if early_stop is not None and not callable(early_stop):
            raise ValueError(f"Monitor: early_stop must be callable, got {early_stop!r}")
        self.every = int(every)
        self.data = data
        self.exact = bool(exact)
        self.ais = {} if ais is True else (ais or None)
        self.pseudo_likelihood = bool(pseudo_likelihood)
        self.diagnostics = bool(diagnostics)
        self.diagnostic_steps = diagnostic_steps
        self.early_stop = early_stop
        self.callbacks = []

    def __repr__(self):
        return f"Monitor(every={self.every}, exact={self.exact}, diagnostics={self.diagnostics})"

    def evaluate(self, ctx, step, params_u, position):
        """The values at update ``step`` (``params_u`` unconstrained, ``position`` sampler space)."""
        problem, ops = ctx["problem"], ctx["problem"].ops
        params = ops.copy_tree(problem.info.constrain(params_u))
        kw = dict(backend=ctx["backend"], model_args=ctx["model_args"], model_kwargs=ctx["model_kwargs"])
        if ctx.get("covariates"):  # a conditional model: conditional log-likelihoods, per example
            kw["covariates"] = ctx["covariates"]
        out = {}
        if self.exact:
            out["log_likelihood"] = float(np.mean(ops.to_numpy(log_likelihood(ctx["model"], params, self.data, **kw))))
        if self.ais is not None:
            lz = log_partition(ctx["model"], params, self.data, method="ais", **dict(kw, **self.ais))
            ll = log_likelihood(ctx["model"], params, self.data, log_z=lz, **kw)
            out["ais_log_likelihood"] = float(np.mean(ops.to_numpy(ll)))
        if self.pseudo_likelihood:
            out["pseudo_log_likelihood"] = pseudo_log_likelihood(problem, params_u, ctx["data_to_values"](self.data))
        if self.diagnostics:
            out.update(chain_diagnostics(ctx, params_u, position, self.diagnostic_steps, step))
        for f in self.callbacks:
            out.update(f(step, params, problem.from_internal(position)))
        return out


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


def pseudo_log_likelihood(problem, params_u, data_values):
    """Mean over examples of Σ_i log p(x_i | x_−i), every coordinate of the discrete observed
    sites, by enumerating each coordinate's values (Besag 1975)."""
    ops, info, xp = problem.ops, problem.info, problem.ops.xp
    if problem.latent_names:
        raise NotImplementedError(f"Monitor(pseudo_likelihood=True): the model has latent site(s) "
                                  f"{list(problem.latent_names)}; pseudo-likelihood needs every site observed")
    total = 0.0
    with ops.no_grad():
        ld = info.log_density(params_u, data_values)
        for name, x in data_values.items():
            site = problem.sites[name]
            if not site.is_discrete or site.values is None:
                raise NotImplementedError(f"Monitor(pseudo_likelihood=True): site {name!r} is not discrete "
                                          f"with a finite support ({site.support})")
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
    if ops.name == "pyro":
        from pyro.ops.stats import effective_sample_size, split_gelman_rubin

        t = trace.double()
        return float(split_gelman_rubin(t, chain_dim=0, sample_dim=1)), float(
            effective_sample_size(t, chain_dim=0, sample_dim=1))
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    t = np.asarray(trace, np.float64)
    return float(split_gelman_rubin(t)), float(effective_sample_size(t))


def chain_diagnostics(ctx, params_u, position, num_steps, step):
    """Split R-hat and ESS of the chains' log p̃ over ``num_steps`` transitions from ``position``
    (the transition is compiled once per fit and kept in ``ctx``)."""
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

    def after_chunk(self, num_done, params_u, position, bar):
        """Evaluate if ``num_done`` updates of the call end an interval; True: stop the fit."""
        if num_done == 0 or num_done % self.every:
            return False
        values = self.monitor.evaluate(self.ctx, self.first + num_done, params_u, position)
        self.records[num_done - 1] = values
        if values:
            bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
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
