"""The user-facing evaluation functions: ``log_partition`` and ``log_likelihood``."""

import warnings

import numpy as np

from .._doc import doc
from .._exclusive import exclusive
from .._problem import PROBE_SEED, compile_problem, place_problem
from ..backend import get_backend
from ..samplers.auto import build_kernel
from ..samplers.block_gibbs import BlockGibbs
from .ais import (BASE_START, _parts_fn, ais_log_weights, annealing_bar, base_rate_start, equilibrate,
                  log_mean_exp_with_stderr, rb_config, sample_start, temperature_schedule)
from .analytic import summable_sites
from .exact import (MAX_STATES_SUMMED, count_states, log_marginal_exact, log_partition_conditional,
                    log_partition_exact, sample_exact)
from .logz import (ADVICE, INTERVAL_STDERRS, EstimateWarning, LogLikelihood, LogZ, ais_result, check_estimate,
                   exact_result)

__all__ = ["EstimateWarning", "LogZ", "LogLikelihood", "log_partition", "log_likelihood"]

METHODS = ("auto", "exact", "ais", "bidirectional")


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


_LOG_PARTITION_DOC = """log Z(θ), the log normalizer of the model at ``params``: exactly where the model
    enumerates, else bracketed by forward and reverse AIS.

    Z(θ) is the integral (sum) of p̃ over every site whose value is not fixed by data:
    the observed sites and the latent ones, base measures included.

    Parameters
    ----------
    model : callable
    params : dict
        name -> array of constrained values, as in ``FitResult.params``.
    example : array or dict
        One batch of data (one row is enough): it fixes the shapes and dtypes of the
        observed sites. For AIS its distinct rows also give the rigorous lower bound
        log Z ≥ log Σ_x p̃(x) that the estimate is checked against (pass the training set
        to make the check bite).
    method : {"auto", "exact", "ais", "bidirectional"}
        ``"auto"`` (default): ``"exact"`` where the model enumerates within the budget
        below (decided by counting states and measuring which layer can be summed out,
        before anything is enumerated), else ``"bidirectional"``; ``LogZ.method`` says
        which ran. ``"exact"`` enumerates the joint states of every site (discrete sites
        with a finite support only, at most 2**24 states, in chunks); where a binary site is measured to
        be conditionally independent given the rest (an RBM layer), it is summed out
        analytically and the other sites enumerated (at most 2**25 states). ``"ais"`` is
        annealed importance sampling from ``init`` along the geometric path to p̃ (a
        stochastic lower bound: E log Ẑ ≤ log Z). ``"bidirectional"`` adds reverse AIS from
        model samples (a stochastic upper bound), exact draws where the sites can be
        enumerated with one layer summed out, else ``num_temperatures`` transitions at
        β = 1 from the ``init`` data (or from the start distribution). With a base-rate
        ``init``, the forward side runs from both starts (base-rate and the sites' base
        measures) and keeps the larger estimate: reverse chains that start near the data
        can miss modes that the model holds far from it, and a forward run from the base
        that lands above the reverse side exposes that (the check below then warns).
    num_chains : int
        AIS chains (independent importance weights).
    num_temperatures : int
        K, the number of annealing steps: K + 1 inverse temperatures from 0 to 1 and K − 1
        transitions per chain.
    init : "base" or array or dict
        The AIS start: ``"base"``, the sites' base distributions; or a batch of data, to
        which a factorized Bernoulli (base-rate) distribution over the binary observed
        sites is fitted (Salakhutdinov & Murray 2008), the latent sites keeping their
        base distributions: much closer to a trained model, and recommended for one.
        Refused (``NotImplementedError`` naming the site) where an observed site's base is
        not a product over its coordinates or depends on other sites' values: the
        factorized start could not replace it and keep p₀ normalized.
    sampler : "auto" or a sampler from ``ebm_ppl.samplers``
        The AIS transition at each intermediate temperature (``"auto"``: Gibbs on discrete
        sites, MALA on continuous ones; an RBM, every site a measured conditionally
        independent binary layer, gets block Gibbs over its layers whatever their size).
        A latent binary layer that can be summed out is summed out of the weights and
        redrawn exactly before each transition (Rao-Blackwellized AIS).
    schedule : {"sigmoid", "linear", "geometric"} or array
        The inverse temperatures: ``"sigmoid"`` (Grosse et al. 2013, dense at both ends),
        ``"linear"``, ``"geometric"`` (dense near 0), or an explicit increasing sequence
        from 0.0 to 1.0.
    rng_seed : int
    backend : {"pyro", "numpyro"}, optional
    model_args, model_kwargs
        Extra arguments passed to the model after the batch.
    covariates : str or sequence of str, optional
        Data leaves that are inputs of a conditional model (see
        :func:`~ebm_ppl.fit_unnormalized`): then Z(x_i) depends on each row i of
        ``example``, and ``estimate``, ``lower`` and ``upper`` are numpy arrays with one
        value per row, by enumeration (``method="exact"`` or ``"auto"``; AIS per example
        raises NotImplementedError).
    devices : int, list of jax.Device or jax.sharding.Mesh, optional
        NumPyro, AIS methods: split the ``num_chains`` annealing chains over these
        devices, as ``fit_unnormalized(devices=)`` does (the same estimate as on one
        device up to float sums; ``num_chains`` a multiple of the number of devices).
        ``method="exact"`` runs on one device. Pyro: raises ``NotImplementedError``.
    progress_bar : bool, optional
        A tqdm bar over the annealing steps of every AIS run: True shows it, False hides
        it, None (default) shows it once the annealing has run for 5 seconds. The result
        does not depend on it (the annealing runs in the same chunks of temperatures
        either way).

    Returns
    -------
    LogZ
        ``(estimate, stderr, lower, upper, lower_stderr, upper_stderr, data_bound,
        upper_is_exact_start, forward, reverse, method)``, always ``lower <= upper``.
        Exact: ``stderr`` 0.0 and ``lower = upper = forward = reverse = estimate``.
        ``"ais"``: ``estimate = forward``, the forward estimate with the delta-method
        standard error sd(w) / (√n mean(w)); ``lower = forward − 2·stderr``,
        ``upper = inf``; ``reverse`` NaN. ``"bidirectional"``: the raw ``forward`` and
        ``reverse`` estimates with their standard errors ``lower_stderr`` and
        ``upper_stderr``; ``estimate`` their midpoint; ``lower = min(forward, reverse)``
        and ``upper = max(forward, reverse)``, each widened by 2 standard errors of its
        side: with ``upper_is_exact_start`` an interval that holds log Z but for those
        sides' Monte Carlo error (forward AIS is a stochastic lower bound, reverse AIS
        from exact draws a stochastic upper bound); without, ``upper`` is only
        approximately a bound. ``data_bound`` is the rigorous lower bound from
        ``example``.

    Warns
    -----
    EstimateWarning
        Where an AIS side lies below ``data_bound`` by more than 3 standard errors, or the
        two sides differ by more than 3 combined standard errors: the estimate is not to
        be trusted; the message says what to change.

    Raises
    ------
    NotImplementedError
        ``init=<data>`` for an observed site that is not binary.
    TypeError
        ``"exact"`` with a continuous site (the message names it).
    ValueError
        ``"exact"`` past 2**24 joint states or with an unbounded discrete support;
        ``"ais"``, ``"bidirectional"`` (and ``"auto"`` where the model does not enumerate)
        where a site's base distribution is improper (e.g. ``ImproperUniform``).

    Notes
    -----
    AIS draws its starting points with each site's own distribution as the model states
    it for one example, and uses that distribution's log-probability as log p₀: this is
    the normalized base only when a site's distribution does not depend on the values of
    other sites (the usual ``Bernoulli(0.5)``, ``Normal(0, 1)``, ... base measures). Put
    interactions between sites in factors.

    Examples
    --------
    >>> log_z = ebm_ppl.log_partition(ising, result.params, data[:1])  # doctest: +SKIP
    >>> log_z.estimate, log_z.stderr, log_z.method  # doctest: +SKIP
    >>> ebm_ppl.log_partition(rbm, params, data[:1], method="ais", num_chains=200)  # doctest: +SKIP
    >>> lz = ebm_ppl.log_partition(rbm, params, x_train, method="bidirectional", init=x_train)  # doctest: +SKIP
    >>> lz.lower, lz.upper, lz.forward, lz.reverse, lz.data_bound  # doctest: +SKIP

    References
    ----------
    Neal, R. M. (2001). Annealed importance sampling. *Statistics and Computing* 11, 125–139.
    Salakhutdinov, R. & Murray, I. (2008). On the quantitative analysis of deep belief
    networks. *ICML*.
    Grosse, R., Ghahramani, Z. & Adams, R. P. (2015). Sandwiching the marginal likelihood
    using bidirectional Monte Carlo. arXiv:1511.02543.
    Burda, Y., Grosse, R. & Salakhutdinov, R. (2015). Accurate and conservative estimates
    of MRF log-likelihood using reverse annealing. *AISTATS*.
    """


@exclusive
@doc(_LOG_PARTITION_DOC)
def log_partition(
    model,
    params,
    example,
    *,
    method="auto",
    num_chains=100,
    num_temperatures=1000,
    sampler="auto",
    init="base",
    schedule="sigmoid",
    rng_seed=0,
    backend=None,
    model_args=(),
    model_kwargs=None,
    covariates=None,
    devices=None,
    progress_bar=None,
):
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    _check_count("num_chains", num_chains)
    _check_count("num_temperatures", num_temperatures)
    if progress_bar not in (None, True, False):
        raise ValueError(f"progress_bar must be None, True or False, got {progress_bar!r}")
    if not (isinstance(init, str) and init == "base") and (isinstance(init, str) or init is None):
        raise ValueError(f"init={init!r}: pass 'base' or a batch of data to fit a base-rate start to")
    betas = temperature_schedule(schedule, num_temperatures) if method != "exact" else None
    problem, example = compile_problem(model, params, example, backend, model_args, model_kwargs, covariates,
                                       argument="example")
    params_u = problem.info.init_params
    example_values = problem.info.data_to_values(example)
    if problem.covariates:  # Z(x_i) for each row of example
        if method not in ("auto", "exact"):
            raise NotImplementedError(f"log_partition(method={method!r}) with covariates: only method='exact' "
                                      "(enumeration per example) is implemented for conditional models")
        return exact_result(log_partition_conditional(problem, params_u, example_values))
    like = next(iter(example_values.values()))
    probe = problem.probe(problem.ops.seed(PROBE_SEED, like))
    if method in ("auto", "exact"):
        try:  # counts states and measures which layer can be summed out: nothing is enumerated yet
            summed = _exact_plan(problem, params_u, probe(), "log_partition(method='exact')")
        except (TypeError, ValueError):
            if method == "exact":
                raise
            method = "bidirectional"  # "auto": the model does not enumerate within budget
        else:
            return exact_result(log_partition_exact(problem, params_u, like, summed=summed))
    placed = place_problem(problem, devices, num_chains)
    if placed is not problem:
        probe = placed.probe(placed.ops.seed(PROBE_SEED, like))
    runs = 1 if method == "ais" else 2 + (not isinstance(init, str))
    with annealing_bar(progress_bar, runs * (len(betas) - 1)) as bar:
        result = ais_result(*_ais_bracket(placed, params_u, example_values, probe, method, init, sampler, betas,
                                          num_chains, num_temperatures, rng_seed, backend, bar), method)
    check_estimate(result, init)
    return result


def _ais_bracket(problem, params_u, example_values, probe, method, init, sampler, betas, num_chains,
                 num_temperatures, rng_seed, backend, bar):
    """Forward AIS from ``init`` (a stochastic lower bound on log Z) and, for
    ``method="bidirectional"``, reverse AIS from model draws (a stochastic upper bound):
    ``(forward, forward_se, reverse, reverse_se, data_bound, upper_is_exact_start)``;
    ``bar`` (tqdm) moves with the annealing."""
    ops = problem.ops
    like = next(iter(example_values.values()))
    start, init_values = BASE_START, None
    if not isinstance(init, str):
        init_values = _data_values(problem, init, backend, "init")
        start = base_rate_start(problem, params_u, init_values, like)
    kernel, rb = _ais_kernel(problem, params_u, sampler, probe, start, like)
    key_fwd, key_rev, key_eq = ops.split(ops.seed(rng_seed, like), 3)
    log_w = ais_log_weights(problem, kernel, key_fwd, params_u, betas, num_chains, start, rb, progress=bar.update)
    lower, lower_se = log_mean_exp_with_stderr(log_w)
    bound = _data_bound(problem, params_u, example_values)
    if method != "bidirectional":
        return lower, lower_se, float("nan"), float("nan"), bound, False
    if start is not BASE_START:
        # a second forward run from the sites' base measures: forward AIS from any start is a
        # stochastic lower bound, so the larger is kept; where it lies above the reverse side
        # that started near the data, that side was no upper bound and the check in log_partition warns
        base_kernel, base_rb = _ais_kernel(problem, params_u, sampler, probe, BASE_START, like)
        log_w_base = ais_log_weights(problem, base_kernel, key_fwd, params_u, betas, num_chains, BASE_START,
                                     base_rb, progress=bar.update)
        lower_base, lower_base_se = log_mean_exp_with_stderr(log_w_base)
        if lower_base > lower:
            lower, lower_se = lower_base, lower_base_se
    position, exact_start = _model_draws(problem, params_u, kernel, rb, key_eq, num_chains, rng_seed,
                                         num_temperatures, start, like, init_values, bar)
    log_w_rev = ais_log_weights(problem, kernel, key_rev, params_u, betas[::-1].copy(), num_chains,
                                start, rb, position=position, progress=bar.update)
    neg, upper_se = log_mean_exp_with_stderr(log_w_rev)
    return lower, lower_se, -neg, upper_se, bound, exact_start


def _data_values(problem, data, backend, what):
    be = get_backend(problem.ops.name)
    try:
        values = problem.info.data_to_values(be.as_data(data))
    except Exception as e:
        raise ValueError(f"{what}: expected a batch of data like `example` ({e})") from e
    return values


def _exact_plan(problem, params, probes, what):
    """The site to sum out analytically for exact evaluation (None: plain enumeration)."""
    sites = list(problem.sites.values())
    for name in summable_sites(problem, params, probes):
        rest = [s for s in sites if s.name != name]
        try:
            count_states(rest, what, MAX_STATES_SUMMED)
        except (TypeError, ValueError):
            continue
        return name
    count_states(sites, what)  # raises, naming the sites, where plain enumeration fails too
    return None


def _latent_plan(problem, params, probes, what):
    """The latent site to sum out analytically in log p̃(x) (None: enumerate every latent)."""
    latent = [s for s in problem.sites.values() if not s.is_observed]
    names = [s.name for s in latent]
    for name in summable_sites(problem, params, probes, names):
        try:
            count_states([s for s in latent if s.name != name], what)
        except (TypeError, ValueError):
            continue
        return name
    return None


def _data_bound(problem, params, example_values):
    """log Σ over the distinct rows x of ``example`` of p̃(x) (latent sites summed out): a
    rigorous lower bound on log Z when every observed site is discrete; NaN where it cannot
    be computed (continuous observed sites, latent sites that cannot be summed out)."""
    ops = problem.ops
    if any(not problem.sites[n].is_discrete for n in example_values):
        return float("nan")
    flat = np.concatenate([np.asarray(ops.to_numpy(v), np.float64).reshape((v.shape[0], -1))
                           for v in example_values.values()], axis=1)
    _, first = np.unique(flat, axis=0, return_index=True)
    idx = ops.asarray(np.sort(first), None, int_=True)
    rows = {k: v[idx] for k, v in example_values.items()}
    try:
        like = next(iter(example_values.values()))
        probes = problem.probe(ops.seed(PROBE_SEED, like))()
        summed = _latent_plan(problem, params, probes, "the data bound")
        log_p = log_marginal_exact(problem, params, rows, summed=summed)
    except (TypeError, ValueError):
        return float("nan")
    return float(np.logaddexp.reduce(log_p))


def _ais_kernel(problem, params, sampler, probe, start, like):
    """The AIS transition and, where a latent binary site can be summed out, its
    Rao-Blackwellization (:func:`~ebm_ppl.evaluation.ais.rb_config`)."""
    ops, info = problem.ops, problem.info
    probes = probe()
    latent = [n for n, s in problem.sites.items() if not s.is_observed]
    summable = summable_sites(problem, params, probes)
    rb_site = None
    for name in summable:
        if name in latent and name in summable_sites(problem, params, probes, [name], logdensity_of=lambda p: (
                lambda pos: _parts_fn(problem, p)(pos)[1]), tag="log_base"):
            rb_site = name
            break
    try:
        rb = rb_config(problem, params, rb_site, start, like) if rb_site is not None else None
    except NotImplementedError:  # its base depends on other sites: sampled by the kernel instead
        rb_site, rb = None, None
    if isinstance(sampler, str) and sampler == "auto" and set(summable) >= set(problem.sites) and len(summable) > 1:
        # every site a conditionally independent binary layer (an RBM): one block each,
        # whatever their size ("auto" probes sites of at most 128 coordinates)
        order = sorted(summable, key=lambda n: (n != rb_site, list(problem.sites).index(n)))
        sampler = BlockGibbs(order)
    kernel = build_kernel(sampler, ops, list(info.sites.values()), probe=probe)
    return kernel, rb


def _model_draws(problem, params, kernel, rb, rng_key, num_chains, rng_seed, num_steps, start, like, init_values,
                 bar):
    """Starting states for reverse AIS: exact draws from p̃ / Z where the sites can be
    enumerated (one of them summed out analytically), else ``num_steps`` transitions at
    β = 1 from the training rows (``init`` data) or from p₀ (added to ``bar``, tqdm).
    Returns (position, is_exact)."""
    ops = problem.ops
    probes = problem.probe(ops.seed(PROBE_SEED, like))()
    try:
        summed = _exact_plan(problem, params, probes, "reverse AIS from exact draws")
    except (TypeError, ValueError):
        summed = False
    if summed is not False:
        draws = sample_exact(problem, params, like, num_chains, rng_seed + 1, summed=summed)
        return problem.to_internal(draws), True
    key_start, key_pick, key_run = ops.split(rng_key, 3)
    position = sample_start(problem, key_start, num_chains, start)
    if init_values is not None:
        num_data = next(iter(init_values.values())).shape[0]
        rows = np.random.default_rng(rng_seed + 2).integers(0, num_data, size=num_chains)
        idx = ops.asarray(rows, None, int_=True)
        position.update(problem.to_internal({k: v[idx] for k, v in init_values.items()}))
    bar.total += num_steps  # shown at the next update (refresh() would show a delayed bar at once)
    return equilibrate(problem, kernel, key_run, params, position, num_steps, rb, progress=bar.update), False


def _conditional_log_likelihood(problem, data_values, log_z):
    """log p(y_i | x_i) = log p̃(y_i | x_i) − log Z(x_i), Z(x_i) by enumeration (numpy)."""
    if log_z is not None:
        raise NotImplementedError("log_likelihood with covariates and log_z=: Z depends on each example's "
                                  "inputs; pass log_z=None (exact enumeration per example)")
    if problem.latent_names:
        raise NotImplementedError(f"log_likelihood with covariates and latent sites {list(problem.latent_names)}: "
                                  "summing out latent sites of a conditional model is not implemented")
    params = problem.info.init_params
    ops = problem.ops
    with ops.no_grad():
        log_p = np.asarray(ops.to_numpy(problem.logdensity_fn(params)(problem.to_internal(data_values))),
                           dtype=np.float64)
    return log_p - log_partition_conditional(problem, params, data_values)


def _log_z_interval(log_z):
    """``(estimate, lower, upper)`` of log Z from a LogZ (where its ``lower`` or ``upper``
    is NaN, as in a LogZ built by hand, estimate ∓ 2 stderr) or a number (all three equal)."""
    if isinstance(log_z, LogZ):
        estimate, se = float(log_z.estimate), float(log_z.stderr)
        lower, upper = float(log_z.lower), float(log_z.upper)
        return (estimate, estimate - INTERVAL_STDERRS * se if np.isnan(lower) else lower,
                estimate + INTERVAL_STDERRS * se if np.isnan(upper) else upper)
    value = np.asarray(log_z.detach().cpu() if hasattr(log_z, "detach") else log_z, dtype=np.float64)
    if value.size != 1 or not np.isfinite(value).all():
        raise ValueError(f"log_z must be a finite number or a LogZ, got {log_z!r}")
    value = float(value.reshape(()))
    return value, value, value


_LOG_LIKELIHOOD_DOC = """Per-example log-likelihood log p(x) = log Σ_z p̃(x, z) − log Z.

    Latent sites (unobserved sample sites) are summed out: a binary site measured to be
    conditionally independent given the rest (an RBM's hidden layer, any width)
    analytically (the free energy, a softplus per unit), the others by enumeration.
    A discrete model's log-likelihood above 0 (a ``log_z`` too small) warns with
    :class:`EstimateWarning`. ``interval=True`` also returns the interval that log Z's
    interval implies: log p̃(x) − ``log_z.upper`` to log p̃(x) − ``log_z.lower``.

    Parameters
    ----------
    model : callable
    params : dict
        name -> array of constrained values, as in ``FitResult.params``.
    data : array or dict
        The examples (on axis 0) to evaluate.
    log_z : float or LogZ, optional
        log Z(θ). None computes it with ``log_partition(method="exact")``, which needs every
        site discrete with at most 2**24 joint states (it does not fall back to AIS as
        ``log_partition(method="auto")`` does: a random, slow estimate is asked for
        explicitly); otherwise pass one, e.g. the LogZ of ``log_partition(...,
        method="bidirectional")``, whose ``estimate`` is used (and its interval with
        ``interval=True``; a number counts as exact).
    backend : {"pyro", "numpyro"}, optional
    model_args, model_kwargs
        Extra arguments passed to the model after the batch.
    covariates : str or sequence of str, optional
        Data leaves that are inputs of a conditional model: returns the conditional
        log-likelihood log p̃(y_i | x_i) − log Z(x_i) of each example, Z(x_i) by
        enumeration per example (``log_z`` must be None; latent sites raise
        NotImplementedError).
    interval : bool
        False (default): return the array of estimates. True: return a
        :class:`~ebm_ppl.evaluation.LogLikelihood` ``(estimate, lower, upper)`` of such
        arrays, ``lower = log p̃(x) − log_z.upper`` and ``upper = log p̃(x) − log_z.lower``
        (all three equal where log Z is exact or a number; ``lower`` is −inf for a
        ``method="ais"`` LogZ, whose ``upper`` is inf; a LogZ built by hand without
        ``lower`` / ``upper`` counts as ``estimate`` ∓ 2 ``stderr``).

    Returns
    -------
    array or LogLikelihood
        Shape ``(num_examples,)``, in the backend's array type (torch / jax); with
        ``interval=True`` three of them.

    Raises
    ------
    TypeError, ValueError
        Where a latent site cannot be enumerated (continuous, unbounded, or more than 2**24
        latent states), or ``log_z=None`` and log Z cannot be computed exactly.

    Examples
    --------
    >>> ll = ebm_ppl.log_likelihood(ising, result.params, data)  # doctest: +SKIP
    >>> float(ll.mean())  # doctest: +SKIP
    >>> lz = ebm_ppl.log_partition(rbm, params, x_train, method="bidirectional", init=x_train)  # doctest: +SKIP
    >>> ll = ebm_ppl.log_likelihood(rbm, params, x_test, log_z=lz, interval=True)  # doctest: +SKIP
    >>> float(ll.lower.mean()), float(ll.upper.mean())  # doctest: +SKIP

    References
    ----------
    Salakhutdinov, R. & Murray, I. (2008). On the quantitative analysis of deep belief
    networks. *ICML* (log-likelihoods of RBMs from an estimate of log Z).
    """


@exclusive
@doc(_LOG_LIKELIHOOD_DOC)
def log_likelihood(model, params, data, *, log_z=None, backend=None, model_args=(), model_kwargs=None,
                   covariates=None, interval=False):
    problem, data = compile_problem(model, params, data, backend, model_args, model_kwargs, covariates)
    ops, info = problem.ops, problem.info
    data_values = info.data_to_values(data)
    like = next(iter(data_values.values()))
    if problem.covariates:
        out = ops.asarray(_conditional_log_likelihood(problem, data_values, log_z), None)
        return LogLikelihood(out, out, out) if interval else out
    probes = problem.probe(ops.seed(PROBE_SEED, like))()
    summed = _latent_plan(problem, info.init_params, probes, "log_likelihood: summing out the latent sites")
    log_p = log_marginal_exact(problem, info.init_params, data_values, summed=summed)
    estimated = log_z is not None
    if log_z is None:
        try:
            exact = _exact_plan(problem, info.init_params, probes, "log_partition(method='exact')")
            log_z = log_partition_exact(problem, info.init_params, like, summed=exact)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"log_likelihood: log Z cannot be computed exactly ({e}); pass log_z=, e.g. "
                "ebm_ppl.log_partition(model, params, data[:1], method='bidirectional', init=x_train)"
            ) from e
    value, low, high = _log_z_interval(log_z)
    out = log_p - value
    if estimated and all(s.is_discrete for s in info.sites.values()):
        tol = 1e-4 * (1.0 + np.abs(log_p))
        if np.any(out > tol):
            warnings.warn(
                f"log_likelihood: {int(np.sum(out > tol))} of {out.size} examples get a log-likelihood "
                f"above 0 (up to {out.max():.2f}), impossible for a discrete model: the log_z passed is "
                f"too small and not to be trusted. To fix it, {ADVICE}", EstimateWarning, stacklevel=2)
    if not interval:
        return ops.asarray(out, None)
    return LogLikelihood(ops.asarray(out, None), ops.asarray(log_p - high, None), ops.asarray(log_p - low, None))
