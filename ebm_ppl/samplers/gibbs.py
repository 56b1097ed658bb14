"""Systematic-scan single-site Gibbs for discrete sites with a finite support.

Each coordinate is drawn from its exact conditional: the log density is evaluated at the
K - 1 values the coordinate does not hold (all chains and values in one batched call) and
compared with the cached log density of the current state, so a sweep over D binary
coordinates costs D + 1 evaluations of C chains. Geman & Geman (1984).
"""

from .._one_hot import is_one_hot
from ._numerics import categorical, nan_acceptance
from .base import Kernel, Sampler
from .one_hot import one_hot_update

__all__ = ["Gibbs", "gibbs_site_update"]


def _tile(ops, position, num_copies):
    return {k: ops.xp.concatenate([v] * num_copies, axis=0) for k, v in position.items()}


def gibbs_site_update(ops, rng_key, position, site, coords, logdensity_fn, current_ld):
    """Redraw the flat coordinates ``coords`` of ``site`` one after another.

    ``site.values`` are consecutive integers; ``current_ld`` is the per-chain log density
    of ``position``. Returns the new position and its per-chain log density.
    """
    xp = ops.xp
    values = position[site.name]
    num_chains = values.shape[0]
    num_values = len(site.values)
    lowest = site.values[0]
    flat = values.reshape((num_chains, -1))
    offsets = ops.asarray(list(range(1, num_values)), None, int_=True)  # (K-1,)

    def body(i, carry):
        flat, ld, key = carry
        key, sub = ops.split(key, 2)
        coord = coords[i]
        cur = ops.astype(flat[:, coord] - lowest, ops.int_dtype)  # (C,) index of the current value
        alt = (cur[None, :] + offsets[:, None]) % num_values  # (K-1, C)
        column = ops.astype(alt.reshape((-1,)) + lowest, flat.dtype)
        tiled = _tile(ops, dict(position, **{site.name: flat.reshape(values.shape)}), num_values - 1)
        tflat = ops.set_column(tiled[site.name].reshape(((num_values - 1) * num_chains, -1)), coord, column)
        tiled[site.name] = tflat.reshape(((num_values - 1) * num_chains,) + tuple(values.shape[1:]))
        ld_alt = logdensity_fn(tiled).reshape((num_values - 1, num_chains))
        logits = xp.concatenate([ld[None, :], ld_alt], axis=0).T  # (C, K): current first
        j = categorical(ops, sub, logits)
        new_idx = (cur + j) % num_values
        new_ld = ops.pick(logits, j)
        return ops.set_column(flat, coord, ops.astype(new_idx + lowest, flat.dtype)), new_ld, key

    flat, ld, _ = ops.fori_loop(0, len(coords), body, (flat, current_ld, rng_key))
    return dict(position, **{site.name: flat.reshape(values.shape)}), ld


class Gibbs(Sampler):
    """Systematic-scan single-site Gibbs sampler with exact conditionals.

    Moves discrete sites with a finite support (Bernoulli, Categorical, Binomial, ...):
    one step sweeps every coordinate of every site it moves once. A one-hot site (Pyro's
    ``OneHotCategorical``) is swept group by group, each group redrawn from its exact
    conditional over its K states (:func:`~ebm_ppl.samplers.one_hot.one_hot_update`).

    Examples
    --------
    >>> sampler = ebm_ppl.samplers.Gibbs()
    >>> result = ebm_ppl.fit_unnormalized(ising, data, sampler=sampler, num_steps=100)  # doctest: +SKIP
    """

    site_kind = "discrete"

    def can_move(self, site) -> bool:
        """Discrete sites with a finite support, and one-hot sites."""
        return is_one_hot(site) or super().can_move(site)

    def build(self, ops, sites):
        import numpy as np

        coords = {s.name: ops.asarray(np.arange(int(np.prod(s.shape, dtype=int))), None, int_=True)
                  for s in sites if not is_one_hot(s)}

        def init(position):
            return ()

        def step(rng_key, position, aux, logdensity_fn):
            keys = ops.split(rng_key, len(sites))
            ld = logdensity_fn(position)
            for key, site in zip(keys, sites):
                if site.name not in coords:  # a one-hot site: its groups' K states
                    position, ld = one_hot_update(ops, key, position, site, logdensity_fn, ld)
                    continue
                position, ld = gibbs_site_update(ops, key, position, site, coords[site.name], logdensity_fn, ld)
            return position, aux, nan_acceptance(ops, position)

        return Kernel(tuple(s.name for s in sites), init, step)
