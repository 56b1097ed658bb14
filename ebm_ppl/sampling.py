"""``sample``: draws from a fitted unnormalized model."""

import numpy as np

from ._problem import PROBE_SEED, compile_problem, place_problem, run_kernel
from ._exclusive import exclusive
from .samplers.auto import build_kernel
from .samplers.base import is_adaptive
from .fit.checks import _check_positive_int, _check_rng_seed

__all__ = ["sample"]


@exclusive
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
