"""The user-facing evaluation functions: ``log_partition`` and ``log_likelihood``."""

from typing import NamedTuple

import numpy as np

from .._exclusive import exclusive
from .._problem import PROBE_SEED, compile_problem
from ..samplers.base import build_kernel
from .ais import ais_log_weights, log_mean_exp_with_stderr, temperature_schedule
from .exact import log_marginal_exact, log_partition_exact

__all__ = ["LogZ", "log_partition", "log_likelihood"]

METHODS = ("exact", "ais")


class LogZ(NamedTuple):
    """An estimate of log Z(θ) and its standard error.

    Attributes
    ----------
    estimate : float
        log Z in nats (base measures included: Z is the integral of p̃ over every site).
    stderr : float
        Monte Carlo standard error of ``estimate`` (0.0 for ``method="exact"``).
    """

    estimate: float
    stderr: float


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@exclusive
def log_partition(
    model,
    params,
    example,
    *,
    method="exact",
    num_chains=100,
    num_temperatures=1000,
    sampler="auto",
    schedule="sigmoid",
    rng_seed=0,
    backend=None,
    model_args=(),
    model_kwargs=None,
):
    """log Z(θ), the log normalizer of the model at ``params``, exactly or by AIS.

    Z(θ) is the integral (sum) of p̃ over every site whose value is not fixed by data:
    the observed sites and the latent ones, base measures included.

    Parameters
    ----------
    model : callable
    params : dict
        name -> array of constrained values, as in ``FitResult.params``.
    example : array or dict
        One batch of data (one row is enough): it fixes the shapes and dtypes of the
        observed sites; its values are not used.
    method : {"exact", "ais"}
        ``"exact"`` enumerates the joint states of every site (discrete sites with a finite
        support only, at most 2**24 states, evaluated in chunks of 2**16). ``"ais"`` is
        annealed importance sampling from the sites' base distributions along the geometric
        path to p̃.
    num_chains : int
        AIS chains (independent importance weights).
    num_temperatures : int
        K, the number of annealing steps: K + 1 inverse temperatures from 0 to 1 and K − 1
        transitions per chain.
    sampler : "auto" or a sampler from ``ebm_ppl.samplers``
        The AIS transition at each intermediate temperature (``"auto"``: Gibbs on discrete
        sites, MALA on continuous ones).
    schedule : {"sigmoid", "linear", "geometric"} or array
        The inverse temperatures: ``"sigmoid"`` (Grosse et al. 2013, dense at both ends),
        ``"linear"``, ``"geometric"`` (dense near 0), or an explicit increasing sequence
        from 0.0 to 1.0.
    rng_seed : int
    backend : {"pyro", "numpyro"}, optional
    model_args, model_kwargs
        Extra arguments passed to the model after the batch.

    Returns
    -------
    LogZ
        ``(estimate, stderr)``; ``stderr`` is 0.0 for ``"exact"`` and the delta-method
        standard error sd(w) / (√n mean(w)) of the AIS weights for ``"ais"``.

    Raises
    ------
    TypeError
        ``"exact"`` with a continuous site (the message names it).
    ValueError
        ``"exact"`` past 2**24 joint states or with an unbounded discrete support;
        ``"ais"`` where a site's base distribution is improper (e.g. ``ImproperUniform``).

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
    >>> log_z.estimate, log_z.stderr  # doctest: +SKIP
    >>> ebm_ppl.log_partition(rbm, params, data[:1], method="ais", num_chains=200)  # doctest: +SKIP

    References
    ----------
    Neal, R. M. (2001). Annealed importance sampling. *Statistics and Computing* 11, 125–139.
    Salakhutdinov, R. & Murray, I. (2008). On the quantitative analysis of deep belief
    networks. *ICML*.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    _check_count("num_chains", num_chains)
    _check_count("num_temperatures", num_temperatures)
    betas = temperature_schedule(schedule, num_temperatures) if method == "ais" else None
    problem, example = compile_problem(model, params, example, backend, model_args, model_kwargs)
    ops, info = problem.ops, problem.info
    like = next(iter(info.data_to_values(example).values()))
    if method == "exact":
        return LogZ(log_partition_exact(problem, info.init_params, like), 0.0)
    probe = problem.probe(ops.seed(PROBE_SEED, like))  # "auto" blocks stay valid when tempered
    kernel = build_kernel(sampler, ops, list(info.sites.values()), probe=probe)
    key = ops.seed(rng_seed, like)
    log_w = ais_log_weights(problem, kernel, key, info.init_params, betas, num_chains)
    return LogZ(*log_mean_exp_with_stderr(log_w))


def _log_z_value(log_z):
    if isinstance(log_z, LogZ):
        return float(log_z.estimate)
    value = np.asarray(log_z.detach().cpu() if hasattr(log_z, "detach") else log_z, dtype=np.float64)
    if value.size != 1 or not np.isfinite(value).all():
        raise ValueError(f"log_z must be a finite number or a LogZ, got {log_z!r}")
    return float(value.reshape(()))


@exclusive
def log_likelihood(model, params, data, *, log_z=None, backend=None, model_args=(), model_kwargs=None):
    """Per-example log-likelihood log p(x) = log Σ_z p̃(x, z) − log Z.

    Latent sites (unobserved sample sites) are summed out by enumeration, in chunks.

    Parameters
    ----------
    model : callable
    params : dict
        name -> array of constrained values, as in ``FitResult.params``.
    data : array or dict
        The examples (on axis 0) to evaluate.
    log_z : float or LogZ, optional
        log Z(θ). None computes it with ``log_partition(method="exact")``, which needs every
        site discrete with at most 2**24 joint states; otherwise pass one (e.g. from
        ``log_partition(..., method="ais")``).
    backend : {"pyro", "numpyro"}, optional
    model_args, model_kwargs
        Extra arguments passed to the model after the batch.

    Returns
    -------
    array
        Shape ``(num_examples,)``, in the backend's array type (torch / jax).

    Raises
    ------
    TypeError, ValueError
        Where a latent site cannot be enumerated (continuous, unbounded, or more than 2**24
        latent states), or ``log_z=None`` and log Z cannot be computed exactly.

    Examples
    --------
    >>> ll = ebm_ppl.log_likelihood(ising, result.params, data)  # doctest: +SKIP
    >>> float(ll.mean())  # doctest: +SKIP

    References
    ----------
    Salakhutdinov, R. & Murray, I. (2008). On the quantitative analysis of deep belief
    networks. *ICML* (log-likelihoods of RBMs from an estimate of log Z).
    """
    problem, data = compile_problem(model, params, data, backend, model_args, model_kwargs)
    ops, info = problem.ops, problem.info
    data_values = info.data_to_values(data)
    log_p = log_marginal_exact(problem, info.init_params, data_values)
    if log_z is None:
        like = next(iter(data_values.values()))
        try:
            log_z = log_partition_exact(problem, info.init_params, like)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"log_likelihood: log Z cannot be computed exactly ({e}); pass log_z=, e.g. "
                "ebm_ppl.log_partition(model, params, data[:1], method='ais')"
            ) from e
    return ops.asarray(log_p - _log_z_value(log_z), None)
