"""Exact evaluation by enumeration: log Z over every discrete site, and log p(x) with the
latent discrete sites summed out.

The joint states are enumerated in mixed radix (the last coordinate of the last site runs
fastest) and evaluated in chunks of at most ``chunk_size`` rows, so memory stays bounded
whatever the number of states; the log-sum-exp is accumulated in float64 on the host.
"""

import math

import numpy as np

from .._one_hot import is_one_hot, num_states as one_hot_count, states_at as one_hot_states_at
from .analytic import sum_out

__all__ = ["MAX_STATES", "CHUNK_SIZE", "count_states", "state_block", "log_partition_exact",
           "log_marginal_exact", "sample_exact"]

#: The largest number of joint states that enumeration accepts (2**24).
MAX_STATES = 2**24
#: The largest number of enumerated states when one site is summed out analytically (2**25).
MAX_STATES_SUMMED = 2**25
#: Rows evaluated per call of the log density.
CHUNK_SIZE = 2**16


def count_states(sites, what, max_states=MAX_STATES):
    """The number of joint states of ``sites``; raises where they cannot be enumerated.

    ``TypeError`` names a continuous site, ``ValueError`` a discrete site without a finite
    support, or the count where it exceeds :data:`MAX_STATES`.
    """
    count = 1
    for site in sites:
        if not site.is_discrete:
            raise TypeError(
                f"{what}: site {site.name!r} is continuous (support {site.support}); enumeration "
                "needs discrete sites with a finite support"
            )
        if is_one_hot(site):  # OneHotCategorical: K states in each group
            count *= one_hot_count(site)
            continue
        if site.values is None:
            raise ValueError(
                f"{what}: site {site.name!r} has support {site.support}, which is not a finite "
                "range of integers; enumeration needs a finite support"
            )
        count *= len(site.values) ** math.prod(site.shape)
    if count > max_states:
        names = [s.name for s in sites]
        raise ValueError(
            f"{what}: sites {names} have {count} joint states, more than the {max_states} "
            "that enumeration accepts"
        )
    return count


def state_block(sites, start, stop):
    """Joint states ``start`` to ``stop`` (exclusive) of ``sites`` as numpy arrays.

    Returns a dict site name -> array of shape ``(stop - start, *site.shape)``.
    """
    return states_at(sites, np.arange(start, stop, dtype=np.int64))


def states_at(sites, index):
    """The joint states numbered ``index`` (an int64 array) of ``sites``, as in :func:`state_block`."""
    out = {}
    for site in reversed(sites):
        if is_one_hot(site):
            out[site.name], index = one_hot_states_at(site, index)
            continue
        size = math.prod(site.shape)
        k = len(site.values)
        digits = np.empty((len(index), size), dtype=np.int64)
        for j in reversed(range(size)):
            digits[:, j] = index % k
            index = index // k
        out[site.name] = np.asarray(site.values)[digits].reshape((-1,) + tuple(site.shape))
    return {s.name: out[s.name] for s in sites}


def _to_arrays(ops, block, sites, like):
    return {name: ops.from_numpy(v, sites[name].dtype, like) for name, v in block.items()}


def _logsumexp(x, axis=None):
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis) if axis is not None else float(out.reshape(()))


def _summed_fn(problem, params, summed):
    """``fn(values) -> per-row log p̃`` of the enumerated sites, the site ``summed`` (if any)
    summed out analytically (:func:`~ebm_ppl.evaluation.analytic.sum_out`)."""
    ops = problem.ops
    logdensity = problem.logdensity_fn(params)  # every site discrete: sampler space = values
    if summed is None:
        return logdensity
    site = problem.sites[summed]
    lo, hi = (float(v) for v in site.values)

    def fn(values):
        like = next(iter(values.values()))
        rows = like.shape[0]
        placeholder = ops.zeros((rows,) + tuple(site.shape), site.dtype, like)
        return sum_out(ops, {**values, summed: placeholder}, summed, lo, hi, logdensity)[0]

    return fn


def _chunk(problem, summed, chunk_size):
    if summed is None:
        return chunk_size
    size = math.prod(problem.sites[summed].shape)
    return max(1, min(chunk_size, MAX_ROWS_SUMMED // size))


#: Enumerated states x summed coordinates per call when a site is summed out analytically.
MAX_ROWS_SUMMED = 2**23


def log_partition_exact(problem, params, like=None, chunk_size=CHUNK_SIZE, summed=None, chunk_totals=None):
    """log Z: log-sum-exp of log p̃ over the joint states of every site (float).

    ``params`` are unconstrained; ``like`` is an array on the device to use. With
    ``summed`` (a site name that :func:`~ebm_ppl.evaluation.analytic.summable_sites`
    accepted), that site is summed out analytically and the others are enumerated (at
    most :data:`MAX_STATES_SUMMED` states). ``chunk_totals``, a list, receives the
    log-sum-exp of each chunk (for :func:`sample_exact`).
    """
    ops, info = problem.ops, problem.info
    sites = [s for s in info.sites.values() if s.name != summed]
    what = "log_partition(method='exact')"
    count = count_states(sites, what, MAX_STATES if summed is None else MAX_STATES_SUMMED) if sites else 1
    chunk_size = _chunk(problem, summed, chunk_size)
    fn = ops.jit(lambda p, values: _summed_fn(problem, p, summed)(values))
    total = -np.inf
    with ops.no_grad():
        for start in range(0, count, chunk_size):
            block = state_block(sites, start, min(count, start + chunk_size))
            if not sites:
                block = {}
                values = {summed: ops.zeros((1,) + tuple(info.sites[summed].shape), info.sites[summed].dtype, like)}
                ld = ops.to_numpy(_summed_fn(problem, params, summed)(values))
            else:
                ld = ops.to_numpy(fn(params, _to_arrays(ops, block, info.sites, like)))
            part = _logsumexp(ld)
            if chunk_totals is not None:
                chunk_totals.append(part)
            total = np.logaddexp(total, part)
    return float(total)


def sample_exact(problem, params, like, num_samples, rng_seed, summed=None, chunk_size=CHUNK_SIZE, chunk_totals=None):
    """``num_samples`` exact draws from p̃ / Z as a dict site name -> backend array.

    A joint state of the enumerated sites is drawn from its exact marginal (a chunk by its
    total, then a state within it), then the ``summed`` site, if any, given it (a
    Bernoulli per coordinate). ``chunk_totals`` from :func:`log_partition_exact` with the
    same arguments saves one pass over the states. Host numpy randomness (``rng_seed``).
    """
    ops, info = problem.ops, problem.info
    rng = np.random.default_rng(rng_seed)
    sites = [s for s in info.sites.values() if s.name != summed]
    count = count_states(sites, "sampling exactly", MAX_STATES if summed is None else MAX_STATES_SUMMED) if sites else 1
    chunk_size = _chunk(problem, summed, chunk_size)
    if chunk_totals is None:
        chunk_totals = []
        log_partition_exact(problem, params, like, chunk_size, summed, chunk_totals)
    totals = np.asarray(chunk_totals)
    p = np.exp(totals - totals.max())
    chunks = rng.choice(len(totals), size=num_samples, p=p / p.sum())
    fn = ops.jit(lambda par, values: _summed_fn(problem, par, summed)(values))
    index = np.empty(num_samples, np.int64)
    with ops.no_grad():
        for c in np.unique(chunks):
            start = int(c) * chunk_size
            stop = min(count, start + chunk_size)
            if sites:
                ld = ops.to_numpy(fn(params, _to_arrays(ops, state_block(sites, start, stop), info.sites, like)))
                q = np.exp(np.asarray(ld, np.float64) - ld.max())
                where = chunks == c
                index[where] = start + rng.choice(stop - start, size=int(where.sum()), p=q / q.sum())
            else:
                index[chunks == c] = 0
        values = _to_arrays(ops, states_at(sites, index), info.sites, like) if sites else {}
        if summed is not None:
            site = info.sites[summed]
            lo, hi = (float(v) for v in site.values)
            placeholder = ops.zeros((num_samples,) + tuple(site.shape), site.dtype, like)
            _, logits = sum_out(ops, {**values, summed: placeholder}, summed, lo, hi, problem.logdensity_fn(params))
            logits = np.asarray(ops.to_numpy(logits), np.float64)
            u = rng.uniform(size=logits.shape)
            draw = np.where(u * (1 + np.exp(-logits)) < 1, hi, lo)
            values[summed] = ops.from_numpy(draw, site.dtype, like)
    return {n: values[n] for n in info.sites}


def log_marginal_exact(problem, params, data_values, chunk_size=CHUNK_SIZE, summed=None):
    """Per-example log p̃(x) with every latent site summed out (numpy float64): ``summed``
    (a latent site :func:`~ebm_ppl.evaluation.analytic.summable_sites` accepted)
    analytically, the others by enumeration.

    ``data_values`` maps the observed sites to arrays with the examples on axis 0.
    """
    ops, info = problem.ops, problem.info
    latent = [s for s in info.sites.values() if not s.is_observed and s.name != summed]
    like = next(iter(data_values.values()))
    num_data = int(like.shape[0])
    num_states = count_states(latent, "log_likelihood: summing out the latent sites") if latent else 1
    chunk_size = _chunk(problem, summed, chunk_size)
    per_block = min(num_states, chunk_size)
    examples_per_block = max(1, chunk_size // per_block)
    log_density = ops.jit(lambda p, values: _summed_fn(problem, p, summed)(values))
    out = np.full(num_data, -np.inf)
    with ops.no_grad():
        for e0 in range(0, num_data, examples_per_block):
            e1 = min(num_data, e0 + examples_per_block)
            for s0 in range(0, num_states, per_block):
                s1 = min(num_states, s0 + per_block)
                rows = ops.asarray(np.repeat(np.arange(e0, e1), s1 - s0), like, int_=True)
                values = {k: v[rows] for k, v in data_values.items()}
                if latent:
                    block = state_block(latent, s0, s1)
                    block = {k: np.tile(v, (e1 - e0,) + (1,) * (v.ndim - 1)) for k, v in block.items()}
                    values.update(_to_arrays(ops, block, info.sites, like))
                ld = ops.to_numpy(log_density(params, values)).reshape((e1 - e0, s1 - s0))
                out[e0:e1] = np.logaddexp(out[e0:e1], _logsumexp(ld, axis=1))
    return out


def log_partition_conditional(problem, params, data_values, chunk_size=CHUNK_SIZE):
    """log Z(x_i) of a conditional model for each row i of ``data_values`` (numpy, float64).

    Every site is enumerated (at most :data:`MAX_STATES` joint states) with the covariates
    of row i held fixed: Z(x_i) = Σ_states p̃(states | x_i). ``params`` are unconstrained.
    """
    ops, info = problem.ops, problem.info
    sites = list(info.sites.values())
    count = count_states(sites, "log_partition(method='exact') with covariates")
    like = data_values[problem.covariates[0]]
    num_rows = like.shape[0]
    rows_per_call = max(1, chunk_size // count)
    states = state_block(sites, 0, count)
    fn = ops.jit(lambda p, values: problem.logdensity_fn(p)(values))
    out = []
    with ops.no_grad():
        for start in range(0, num_rows, rows_per_call):
            rows = min(num_rows, start + rows_per_call) - start
            block = {n: np.tile(v, (rows,) + (1,) * (v.ndim - 1)) for n, v in states.items()}
            values = _to_arrays(ops, block, info.sites, like)
            index = ops.from_numpy(np.repeat(np.arange(start, start + rows), count), ops.int_dtype, like)
            values.update({c: data_values[c][index] for c in problem.covariates})
            ld = ops.to_numpy(fn(params, values)).reshape(rows, count)
            out.append(_logsumexp(ld, axis=1))
    return np.concatenate(out)
