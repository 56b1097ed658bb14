"""Finding conditionally independent coordinates numerically, so ``"auto"`` can block-update.

A discrete site's coordinates are conditionally independent given everything else exactly
when log p̃ has no interaction between any two of them: for every pair (i, j),

    f(x with x_i, x_j changed) − f(x with x_i changed) − f(x with x_j changed) + f(x) = 0.

This module evaluates that mixed difference for every pair of coordinates at a few random
states and at random parameter values (a structural zero holds for every θ; a coupling
that happens to be zero at the initial parameters, e.g. an Ising model started at J = 0,
is not mistaken for one). Sites with more than ``max_coordinates`` coordinates are not
checked and are treated as dependent.
"""

import numpy as np

__all__ = ["conditional_blocks"]


def _mixed_differences(ops, logdensity_fn, position, site, max_rows):
    xp = ops.xp
    name = site.name
    num_states = position[name].shape[0]
    size = int(np.prod(site.shape, dtype=int))
    lowest, num_values = site.values[0], len(site.values)
    flat = position[name].reshape((num_states, size))
    alt = ops.astype((ops.astype(flat - lowest, ops.int_dtype) + 1) % num_values + lowest, flat.dtype)
    ii, jj = np.triu_indices(size, k=1)
    eye = np.eye(size, dtype=bool)
    masks = np.concatenate([np.zeros((1, size), bool), eye, eye[ii] | eye[jj]])  # (1 + D + P, D)
    values = []
    step = max(1, max_rows // num_states)
    for start in range(0, masks.shape[0], step):
        m = ops.asarray(masks[start:start + step], None, bool_=True)
        rows = xp.where(m[:, None, :], alt[None], flat[None]).reshape((-1,) + tuple(site.shape))
        copies = m.shape[0]
        tiled = {k: xp.concatenate([v] * copies, axis=0) for k, v in position.items()}
        tiled[name] = rows
        values.append(ops.to_numpy(logdensity_fn(tiled)).reshape((copies, num_states)))
    f = np.concatenate(values).astype(np.float64)
    f0, f1, f2 = f[0], f[1:size + 1], f[size + 1:]
    return f2 - f1[ii] - f1[jj] + f0, f0


def _greedy_coloring(adjacent):
    """Colour classes of a graph (boolean adjacency matrix), largest-degree first."""
    size = adjacent.shape[0]
    colors = -np.ones(size, int)
    for node in np.argsort(-adjacent.sum(1), kind="stable"):
        taken = set(colors[adjacent[node]]) - {-1}
        colors[node] = next(c for c in range(size) if c not in taken)
    return [np.flatnonzero(colors == c) for c in range(colors.max() + 1)]


def conditional_blocks(ops, logdensity, params, positions, sites, max_coordinates=128, max_rows=16384):
    """Blocks of mutually non-interacting coordinates for each discrete site.

    Returns ``{site name: [flat index arrays]}``: a greedy colouring of the site's
    measured interaction graph (an edge wherever a mixed difference is non-zero at any
    probe), so the coordinates of one colour are conditionally independent given the rest
    (an RBM layer is one block; a 3x3 Ising lattice two, the checkerboard). Sites that are
    too large, not discrete, or cannot be evaluated are left out (single-site Gibbs).
    ``logdensity(params, position)``, ``params`` and ``positions`` are probes: random
    parameter values and a few random states for each.
    """
    out = {}
    for site in sites:
        size = int(np.prod(site.shape, dtype=int))
        if not site.is_discrete or site.values is None or size > max_coordinates:
            continue
        if size == 1:
            out[site.name] = [np.zeros(1, int)]
            continue
        try:
            adjacent = np.zeros((size, size), bool)
            ii, jj = np.triu_indices(size, k=1)
            for p, position in zip(params, positions):
                inter, f0 = _mixed_differences(ops, lambda x, p=p: logdensity(p, x), position, site, max_rows)
                if not np.all(np.isfinite(inter)):
                    raise FloatingPointError
                tol = 1e-4 * (1.0 + np.abs(f0).max())  # float32 cancellation in four terms
                edge = (np.abs(inter) > tol).any(axis=1)
                adjacent[ii[edge], jj[edge]] = adjacent[jj[edge], ii[edge]] = True
        except Exception:  # a model that cannot be probed is left to single-site Gibbs
            continue
        out[site.name] = _greedy_coloring(adjacent)
    return out
