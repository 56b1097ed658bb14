"""Block Gibbs: all coordinates of a conditionally independent block drawn at once.

``blocks`` is a list; each block is a site name (all its coordinates) or a dict site name
-> boolean mask over that site's event shape, e.g. an RBM's ``["h", "v"]`` or a lattice's
``[{"x": even}, {"x": ~even}]``. It is the user's claim that the coordinates of a block are
conditionally independent given everything else, i.e. that

    log p̃(x_B, rest) = Σ_{i ∈ B} g_i(x_i, rest) + c(rest).

Under that claim the exact conditional of coordinate i is read off evaluations in which
coordinate i alone changes: log p(x_i = k | rest) = log p̃(x with x_i := k) + const. So a
block of n coordinates with K values each costs ONE batched call of the log density on
(1 + n (K - 1)) C rows (C chains; the current state and every single-coordinate change),
after which all n coordinates are drawn independently, at once. This is exact under the
claim for any model; it does not rely on how the model is written (no gradients, no
structure inspection). For an RBM's 64 visible units that is 65 C rows per block instead
of the 65 sequential C-row calls of single-site :class:`~ebm_ppl.samplers.Gibbs`.

If the claim is false the sampler is not exact (coordinates of the block are then drawn
from their single-site conditionals simultaneously, which is not a Gibbs step);
:class:`~ebm_ppl.samplers.Gibbs` is always exact.

References
----------
Geman & Geman (1984). Hinton (2002), Training products of experts by minimizing
contrastive divergence (block Gibbs in RBMs).
"""

import numpy as np

from .base import Sampler, Kernel, categorical, nan_acceptance

__all__ = ["BlockGibbs", "block_update"]


def _parse_blocks(blocks, sites):
    """``blocks`` -> list of dicts site name -> sorted flat coordinate indices (numpy)."""
    by_name = {s.name: s for s in sites}
    if isinstance(blocks, (str, dict)) or not isinstance(blocks, (list, tuple)) or not blocks:
        raise ValueError(f"blocks must be a non-empty list of site names or dicts, got {blocks!r}")
    parsed, covered = [], {n: np.zeros(int(np.prod(s.shape, dtype=int)), bool) for n, s in by_name.items()}
    for block in blocks:
        block = {block: None} if isinstance(block, str) else block
        if not isinstance(block, dict) or not block:
            raise ValueError(f"a block is a site name or a dict site name -> boolean mask, got {block!r}")
        coords = {}
        for name, mask in block.items():
            if name not in by_name:
                raise ValueError(f"block names unknown site {name!r}; sites moved: {sorted(by_name)}")
            shape = tuple(by_name[name].shape)
            if mask is None:
                flat = np.ones(int(np.prod(shape, dtype=int)), bool)
            else:
                mask = np.asarray(_to_numpy(mask))
                if mask.dtype != bool or mask.shape != shape:
                    raise ValueError(f"the mask of site {name!r} must be boolean of shape {shape}, "
                                     f"got {mask.dtype} of shape {mask.shape}")
                flat = mask.reshape(-1)
            if flat.any():
                coords[name] = np.flatnonzero(flat)
                covered[name] |= flat
        if coords:
            parsed.append(coords)
    missed = {n: int((~c).sum()) for n, c in covered.items() if not c.all()}
    if missed:
        raise ValueError(f"blocks leave coordinates unmoved (site: count): {missed}")
    return parsed


def _to_numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


def _variants(ops, site, flat, coords, onehot, num_copies_before, num_copies_after):
    """Rows of ``flat`` (C, D): ``before`` plain copies, then each coordinate of ``coords``
    set to each value it does not hold (n (K-1) copies), then ``after`` plain copies."""
    xp = ops.xp
    num_values, lowest = len(site.values), site.values[0]
    cur = ops.astype(flat[:, coords] - lowest, ops.int_dtype)  # (C, n)
    offsets = ops.asarray(list(range(1, num_values)), None, int_=True)
    alt = (cur[None] + offsets[:, None, None]) % num_values + lowest  # (K-1, C, n)
    alt = ops.astype(xp.moveaxis(alt, 2, 1), flat.dtype)  # (K-1, n, C)
    changed = xp.where(onehot[None, :, None, :], alt[..., None], flat[None, None])  # (K-1, n, C, D)
    changed = changed.reshape((-1, flat.shape[1]))
    parts = [flat] * num_copies_before + [changed] + [flat] * num_copies_after
    return xp.concatenate(parts, axis=0), cur


def block_update(ops, rng_key, position, sites, block, onehots, logdensity_fn):
    """Draw every coordinate of ``block`` (site name -> flat indices) from its conditional."""
    xp = ops.xp
    num_chains = next(iter(position.values())).shape[0]
    names = list(block)
    counts = [len(block[n]) * (len(sites[n].values) - 1) for n in names]
    flats = {n: position[n].reshape((num_chains, -1)) for n in names}
    tiled, currents = dict(), {}
    total = 1 + sum(counts)
    for j, n in enumerate(names):
        before = 1 + sum(counts[:j])
        tiled_flat, currents[n] = _variants(ops, sites[n], flats[n], block[n], onehots[n],
                                            before, sum(counts[j + 1:]))
        tiled[n] = tiled_flat.reshape((total * num_chains,) + tuple(position[n].shape[1:]))
    for n, v in position.items():
        if n not in tiled:
            tiled[n] = xp.concatenate([v] * total, axis=0)
    ld = logdensity_fn(tiled).reshape((total, num_chains))
    keys = ops.split(rng_key, len(names))
    new = dict(position)
    start = 1
    for key, j, n in zip(keys, range(len(names)), names):
        num_values, n_coords = len(sites[n].values), len(block[n])
        ld_alt = ld[start:start + counts[j]].reshape((num_values - 1, n_coords, num_chains))
        start += counts[j]
        logits = xp.concatenate([xp.broadcast_to(ld[0][None, None], (1, n_coords, num_chains)), ld_alt])
        logits = xp.moveaxis(logits, 0, 2)  # (n, C, K): the current value first
        draw = categorical(ops, key, logits)  # (n, C) offsets from the current value
        value = (xp.moveaxis(currents[n], 1, 0) + draw) % num_values + sites[n].values[0]
        flat = ops.set_column(flats[n], block[n], ops.astype(xp.moveaxis(value, 0, 1), flats[n].dtype))
        new[n] = flat.reshape(position[n].shape)
    return new


class BlockGibbs(Sampler):
    """Block Gibbs sampler: each block's coordinates drawn at once from exact conditionals.

    Parameters
    ----------
    blocks : list
        Each block is a site name (all its coordinates) or a dict site name -> boolean mask
        over the site's event shape. Blocks are updated in the order given; together they
        must cover every coordinate of the sites moved. The coordinates of one block must
        be conditionally independent given the rest (the user's claim, not checked).

    Notes
    -----
    One block costs one call of the log density on (1 + n (K - 1)) C rows, n coordinates
    with K values each, C chains.

    Examples
    --------
    >>> even = (np.add.outer(np.arange(3), np.arange(3)) % 2 == 0).reshape(9)
    >>> sampler = ebm_ppl.samplers.BlockGibbs([{"x": even}, {"x": ~even}])
    >>> draws = ebm_ppl.sample(ising, params, data[:1], sampler=sampler)  # doctest: +SKIP
    """

    site_kind = "discrete"

    def __init__(self, blocks):
        if isinstance(blocks, (str, dict)) or not isinstance(blocks, (list, tuple)) or not blocks:
            raise ValueError(f"blocks must be a non-empty list of site names or dicts, got {blocks!r}")
        self.blocks = list(blocks)

    def restrict(self, names):
        blocks = []
        for block in self.blocks:
            if isinstance(block, str):
                if block in names:
                    blocks.append(block)
            else:
                kept = {k: v for k, v in block.items() if k in names}
                if kept:
                    blocks.append(kept)
        return BlockGibbs(blocks)

    def build(self, ops, sites):
        by_name = {s.name: s for s in sites}
        parsed = _parse_blocks(self.blocks, sites)
        blocks, onehots = [], []
        for coords in parsed:
            blocks.append({n: ops.asarray(c, None, int_=True) for n, c in coords.items()})
            size = {n: int(np.prod(by_name[n].shape, dtype=int)) for n in coords}
            onehots.append({n: ops.asarray(np.arange(size[n])[None, :] == c[:, None], None, bool_=True)
                            for n, c in coords.items()})

        def init(position):
            return ()

        def step(rng_key, position, aux, logdensity_fn):
            keys = ops.split(rng_key, len(blocks))
            for key, block, onehot in zip(keys, blocks, onehots):
                position = block_update(ops, key, position, by_name, block, onehot, logdensity_fn)
            return position, aux, nan_acceptance(ops, position)

        return Kernel(tuple(by_name), init, step)
