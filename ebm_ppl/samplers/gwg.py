"""Gibbs-with-Gradients (Grathwohl et al. 2021) for discrete sites with a finite support.

Each Metropolis-Hastings proposal changes one coordinate of one chain: the move "set
coordinate i to value v" is chosen with probability ∝ exp(d̃_{i,v}(x) / 2), where d̃
estimates the change of log p̃ that the move would cause, and the proposal is accepted per
chain with the Hastings ratio of the reverse move. The estimate only affects efficiency:
the chain is exact whatever d̃ is, because the reverse proposal is computed the same way.

How d̃ is computed depends on the site's dtype:

* floating values (Bernoulli sites, binary or ordinal): the first-order Taylor estimate
  d̃_{i,v} = (v - x_i) ∂log p̃/∂x_i, i.e. d̃ = -(2x - 1) ∇log p̃(x) for binary x
  (Grathwohl et al. 2021, eq. 3), one gradient evaluation per proposal. The model must
  accept float values (as Bernoulli log-probabilities do).
* integer values (Categorical sites): gradients through integer values do not exist, so
  d̃_{i,v} is the exact change log p̃(x with x_i := v) - log p̃(x), from one batched call
  of D (K - 1) C rows per proposal (the locally balanced proposal of Zanella 2020, which
  GWG approximates).

One ``step`` makes ``num_proposals`` proposals per chain (default: the number of
coordinates moved, so a step costs about as much as a Gibbs sweep).

References
----------
Grathwohl, Swersky, Hashemi, Duvenaud & Maddison (2021), Oops I took a gradient: scalable
sampling for discrete distributions, ICML. Zanella (2020), Informed proposals for local
MCMC in discrete spaces, JASA.
"""

import numpy as np

from ._numerics import categorical, logdensity_and_grad, mh_accept, select_rows
from .base import Kernel, Sampler
from .block_gibbs import _variants

__all__ = ["GibbsWithGradients"]


def _site_logits(ops, site, flat, grad, ld, ld_alt):
    """Half the estimated change of log p̃, (C, D, K), indexed by offset from the current
    value (offset 0, the current value, is -inf)."""
    xp = ops.xp
    num_values, lowest = len(site.values), site.values[0]
    if ld_alt is None:  # Taylor estimate from the gradient
        offsets = ops.asarray(list(range(num_values)), flat)
        cur = flat - lowest
        alt = (cur[..., None] + offsets) % num_values  # (C, D, K) value index of each move
        delta = (alt - cur[..., None]) * grad[..., None]
    else:  # exact change, ld_alt (K-1, D, C)
        delta = xp.moveaxis(ld_alt - ld[None, None], 2, 0)  # (C, K-1, D)
        delta = xp.concatenate([xp.zeros_like(delta[:, :1]), delta], axis=1)
        delta = xp.moveaxis(delta, 1, 2)  # (C, D, K)
    offset0 = ops.asarray(np.arange(num_values) == 0, None, bool_=True)
    return xp.where(offset0, -float("inf"), delta / 2)


def _proposal(ops, sites, position, logdensity_fn):
    """Per-chain log p̃ and the flat proposal logits (C, Σ D_s K_s) over all moves."""
    xp = ops.xp
    num_chains = next(iter(position.values())).shape[0]
    float_names = [s.name for s in sites if ops.is_floating(position[s.name])]
    if float_names:
        ld, grad = logdensity_and_grad(ops, position, float_names, logdensity_fn)
    else:
        ld, grad = logdensity_fn(position), {}
    logits = []
    for site in sites:
        flat = position[site.name].reshape((num_chains, -1))
        ld_alt = None
        if site.name not in grad:
            size = flat.shape[1]
            onehot = ops.asarray(np.eye(size, dtype=bool), None, bool_=True)
            coords = ops.asarray(np.arange(size), None, int_=True)
            tiled, _ = _variants(ops, site, flat, coords, onehot, 0, 0)
            rows = dict({n: xp.concatenate([v] * (tiled.shape[0] // num_chains), axis=0)
                         for n, v in position.items()})
            rows[site.name] = tiled.reshape((-1,) + tuple(position[site.name].shape[1:]))
            ld_alt = logdensity_fn(rows).reshape((len(site.values) - 1, size, num_chains))
            ld_alt = ops.stop_gradient(ld_alt)
        g = grad[site.name].reshape((num_chains, -1)) if site.name in grad else None
        logits.append(_site_logits(ops, site, flat, g, ld, ld_alt).reshape((num_chains, -1)))
    return ld, xp.concatenate(logits, axis=1)


def _apply(ops, sites, position, index):
    """Make the move ``index`` (C,) of the flat proposal in every chain; also return the
    index of the reverse move."""
    xp = ops.xp
    new, reverse, start = dict(position), 0, 0
    for site in sites:
        x = position[site.name]
        flat = x.reshape((x.shape[0], -1))
        size, num_values = flat.shape[1], len(site.values)
        local = index - start
        inside = (local >= 0) & (local < size * num_values)
        coord, offset = local // num_values, local % num_values
        hit = (ops.asarray(np.arange(size), None, int_=True)[None, :] == coord[:, None]) & inside[:, None]
        moved = ops.astype((flat - site.values[0] + ops.astype(offset[:, None], flat.dtype)) % num_values
                           + site.values[0], flat.dtype)
        new[site.name] = xp.where(hit, moved, flat).reshape(x.shape)
        back = start + coord * num_values + (num_values - offset) % num_values
        reverse = xp.where(inside, back, reverse)
        start += size * num_values
    return new, reverse


def _mh_move(ops, sites, logdensity_fn, carry):
    """One proposal per chain and its accept/reject; ``carry`` holds the current state's
    log density and proposal logits, so each move costs one evaluation at the proposal."""
    xp = ops.xp
    position, ld, logits, key, total = carry
    key, key_move, key_accept = ops.split(key, 3)
    index = categorical(ops, key_move, logits)
    proposal, reverse = _apply(ops, sites, position, index)
    ld_new, logits_new = _proposal(ops, sites, proposal, logdensity_fn)
    log_forward = ops.pick(logits, index) - ops.logsumexp(logits, -1)
    log_reverse = ops.pick(logits_new, reverse) - ops.logsumexp(logits_new, -1)
    accept, rate = mh_accept(ops, key_accept, ld_new - ld + log_reverse - log_forward, ld)
    position = select_rows(ops, accept, proposal, position, list(position))
    ld = xp.where(accept, ld_new, ld)
    logits = xp.where(accept[:, None], logits_new, logits)
    return position, ld, logits, key, total + rate


class GibbsWithGradients(Sampler):
    """Gibbs-with-Gradients: informed single-coordinate Metropolis-Hastings proposals.

    Parameters
    ----------
    num_proposals : int, optional
        Proposals per chain in one step; defaults to the number of coordinates moved.

    Examples
    --------
    >>> ebm_ppl.samplers.GibbsWithGradients()
    GibbsWithGradients(num_proposals=None)
    """

    site_kind = "discrete"

    def __init__(self, num_proposals=None):
        if num_proposals is not None and (isinstance(num_proposals, bool) or not int(num_proposals) == num_proposals
                                          or num_proposals < 1):
            raise ValueError(f"num_proposals must be a positive integer or None, got {num_proposals!r}")
        self.num_proposals = None if num_proposals is None else int(num_proposals)

    def build(self, ops, sites):
        sites = list(sites)
        num_coords = sum(int(np.prod(s.shape, dtype=int)) for s in sites)
        num_proposals = self.num_proposals or num_coords

        def init(position):
            return ()

        def step(rng_key, position, aux, logdensity_fn):
            ld, logits = _proposal(ops, sites, position, logdensity_fn)
            zero = ops.asarray(0.0, ld)
            def body(t, carry):
                return _mh_move(ops, sites, logdensity_fn, carry)

            position, _, _, _, total = ops.fori_loop(0, num_proposals, body,
                                                     (position, ld, logits, rng_key, zero))
            return position, aux, total / num_proposals

        return Kernel(tuple(s.name for s in sites), init, step)
