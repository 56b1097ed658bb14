"""Gibbs updates of one-hot sites (Pyro's ``OneHotCategorical``).

A one-hot site of shape ``(*groups, K)`` holds one of K unit vectors in each group; its
coordinates are not free (changing one coordinate leaves the support), so
:class:`~ebm_ppl.samplers.Gibbs` redraws each group as a whole from its exact conditional
over the K states: the log density is evaluated at the K - 1 states the group does not
hold (all chains and states in one batched call) and compared with the cached log density
of the current state, as single-site Gibbs does for an integer coordinate.
"""

import numpy as np

from ._numerics import categorical

__all__ = ["one_hot_update"]


def one_hot_update(ops, rng_key, position, site, logdensity_fn, current_ld):
    """Redraw every one-hot group of ``site`` in turn from its exact conditional.

    Parameters
    ----------
    ops : object
        The backend's ops.
    rng_key : object
        A random key.
    position : dict
        Site name -> array ``(num_chains, *site.shape)``.
    site : SiteInfo
        A one-hot site (``site.one_hot``), K = ``site.shape[-1]``.
    logdensity_fn : callable
        Per-chain log p̃ of a position.
    current_ld : array
        The per-chain log p̃ of ``position``.

    Returns
    -------
    tuple
        The new position and its per-chain log density.
    """
    xp = ops.xp
    values = position[site.name]
    num_chains, k = values.shape[0], int(site.shape[-1])
    num_groups = int(np.prod(site.shape[:-1], dtype=int))
    eye = ops.asarray(np.eye(k), values)  # (K, K), the site's dtype
    columns = ops.asarray(np.arange(k), None, int_=True)
    offsets = ops.asarray(np.arange(1, k), None, int_=True)  # (K-1,)
    flat = values.reshape((num_chains, num_groups * k))
    others = {n: xp.concatenate([v] * (k - 1), axis=0) for n, v in position.items() if n != site.name}

    def body(g, carry):
        flat, ld, key = carry
        key, sub = ops.split(key, 2)
        coords = g * k + columns
        cur = xp.argmax(flat[:, coords], axis=-1)  # (C,) the state each chain holds
        alt = (cur[None, :] + offsets[:, None]) % k  # (K-1, C)
        tiled = ops.set_column(xp.concatenate([flat] * (k - 1), axis=0), coords, eye[alt.reshape((-1,))])
        ld_alt = logdensity_fn({**others, site.name: tiled.reshape(((k - 1) * num_chains,) + tuple(values.shape[1:]))})
        logits = xp.concatenate([ld[None, :], ld_alt.reshape((k - 1, num_chains))], axis=0).T  # (C, K)
        j = categorical(ops, sub, logits)
        new = (cur + j) % k
        return ops.set_column(flat, coords, eye[new]), ops.pick(logits, j), key

    flat, ld, _ = ops.fori_loop(0, num_groups, body, (flat, current_ld, rng_key))
    return dict(position, **{site.name: flat.reshape(values.shape)}), ld
