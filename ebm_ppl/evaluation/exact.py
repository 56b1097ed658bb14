"""Exact evaluation by enumeration: log Z over every discrete site, and log p(x) with the
latent discrete sites summed out.

The joint states are enumerated in mixed radix (the last coordinate of the last site runs
fastest) and evaluated in chunks of at most ``chunk_size`` rows, so memory stays bounded
whatever the number of states; the log-sum-exp is accumulated in float64 on the host.
"""

import math

import numpy as np

__all__ = ["MAX_STATES", "CHUNK_SIZE", "count_states", "state_block", "log_partition_exact",
           "log_marginal_exact"]

#: The largest number of joint states that enumeration accepts (2**24).
MAX_STATES = 2**24
#: Rows evaluated per call of the log density.
CHUNK_SIZE = 2**16


def count_states(sites, what):
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
        if site.values is None:
            raise ValueError(
                f"{what}: site {site.name!r} has support {site.support}, which is not a finite "
                "range of integers; enumeration needs a finite support"
            )
        count *= len(site.values) ** math.prod(site.shape)
    if count > MAX_STATES:
        names = [s.name for s in sites]
        raise ValueError(
            f"{what}: sites {names} have {count} joint states, more than the 2**24 = {MAX_STATES} "
            "that enumeration accepts"
        )
    return count


def state_block(sites, start, stop):
    """Joint states ``start`` to ``stop`` (exclusive) of ``sites`` as numpy arrays.

    Returns a dict site name -> array of shape ``(stop - start, *site.shape)``.
    """
    index = np.arange(start, stop, dtype=np.int64)
    out = {}
    for site in reversed(sites):
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


def log_partition_exact(problem, params, like=None, chunk_size=CHUNK_SIZE):
    """log Z: log-sum-exp of log p̃ over the joint states of every site (float).

    ``params`` are unconstrained; ``like`` is an array on the device to use.
    """
    ops, info = problem.ops, problem.info
    sites = list(info.sites.values())
    count = count_states(sites, "log_partition(method='exact')")
    log_density = ops.jit(info.log_density)
    total = -np.inf
    with ops.no_grad():
        for start in range(0, count, chunk_size):
            block = state_block(sites, start, min(count, start + chunk_size))
            ld = ops.to_numpy(log_density(params, _to_arrays(ops, block, info.sites, like)))
            total = np.logaddexp(total, _logsumexp(ld))
    return float(total)


def log_marginal_exact(problem, params, data_values, chunk_size=CHUNK_SIZE):
    """Per-example log p̃(x) with every latent site summed out by enumeration (numpy float64).

    ``data_values`` maps the observed sites to arrays with the examples on axis 0.
    """
    ops, info = problem.ops, problem.info
    latent = [s for s in info.sites.values() if not s.is_observed]
    like = next(iter(data_values.values()))
    num_data = int(like.shape[0])
    num_states = count_states(latent, "log_likelihood: summing out the latent sites") if latent else 1
    per_block = min(num_states, chunk_size)
    examples_per_block = max(1, chunk_size // per_block)
    log_density = ops.jit(info.log_density)
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
