"""Systematic-scan single-site Gibbs for discrete sites with a finite support.

Each coordinate is drawn from its exact conditional, computed by evaluating the log density
at every value of that coordinate (all chains and all values in one batched call).
Geman & Geman (1984).
"""

from .base import Sampler, Kernel, categorical, nan_acceptance

__all__ = ["Gibbs"]


def _tile(ops, position, num_values):
    return {k: ops.xp.concatenate([v] * num_values, axis=0) for k, v in position.items()}


def gibbs_site_update(ops, rng_key, position, site, coords, logdensity_fn):
    """Redraw the flat coordinates ``coords`` of ``site`` one after another."""
    xp = ops.xp
    values = position[site.name]
    num_chains = values.shape[0]
    flat = values.reshape((num_chains, -1))
    choices = ops.asarray(site.values, flat)
    num_values = len(site.values)
    # candidate column for value k: chains (k*C ... (k+1)*C) take choices[k]
    column = xp.concatenate([xp.zeros_like(flat[:, 0]) + c for c in site.values], axis=0)

    def body(i, carry):
        flat, key = carry
        key, sub = ops.split(key, 2)
        coord = coords[i]
        tiled = _tile(ops, dict(position, **{site.name: flat.reshape(values.shape)}), num_values)
        tflat = ops.set_column(tiled[site.name].reshape((num_values * num_chains, -1)), coord, column)
        tiled[site.name] = tflat.reshape((num_values * num_chains,) + tuple(values.shape[1:]))
        logits = logdensity_fn(tiled).reshape((num_values, num_chains)).T
        idx = categorical(ops, sub, logits)
        return ops.set_column(flat, coord, choices[idx]), key

    flat, _ = ops.fori_loop(0, len(coords), body, (flat, rng_key))
    return dict(position, **{site.name: flat.reshape(values.shape)})


class Gibbs(Sampler):
    """Systematic-scan single-site Gibbs sampler with exact conditionals.

    Moves discrete sites with a finite support (Bernoulli, Categorical, Binomial, ...):
    one step sweeps every coordinate of every site it moves once.

    Examples
    --------
    >>> sampler = ebm_ppl.samplers.Gibbs()
    >>> result = ebm_ppl.fit_unnormalized(ising, data, sampler=sampler, num_steps=100)  # doctest: +SKIP
    """

    site_kind = "discrete"

    def build(self, ops, sites):
        import numpy as np

        coords = {s.name: ops.asarray(np.arange(int(np.prod(s.shape, dtype=int))), None, int_=True)
                  for s in sites}

        def init(position):
            return ()

        def step(rng_key, position, aux, logdensity_fn):
            keys = ops.split(rng_key, len(sites))
            for key, site in zip(keys, sites):
                position = gibbs_site_update(ops, key, position, site, coords[site.name], logdensity_fn)
            return position, aux, nan_acceptance(ops, position)

        return Kernel(tuple(s.name for s in sites), init, step)
