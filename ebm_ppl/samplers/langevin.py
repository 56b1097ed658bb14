"""Unadjusted Langevin dynamics, as used to sample neural energy-based models.

x' = x + ε ∇log p̃(x) + σ ξ with σ = √(2ε) by default (``noise_scale`` replaces it, as in
Du & Mordatch 2019), in unconstrained space. No Metropolis correction: the chain is biased
by O(ε); use :class:`~ebm_ppl.samplers.MALA` where that matters.

References
----------
Roberts & Tweedie (1996), Exponential convergence of Langevin distributions.
Du & Mordatch (2019), Implicit generation and generalization in energy-based models.
"""

import math

from .base import Sampler, Kernel, check_number, nan_acceptance

__all__ = ["Langevin", "logdensity_and_grad", "differentiate", "per_chain_sum"]


def per_chain_sum(ops, tree):
    """Sum every array of ``tree`` over all axes but the first (chains)."""
    total = 0.0
    for v in tree.values():
        total = total + v.reshape((v.shape[0], -1)).sum(-1)
    return total


def logdensity_and_grad(ops, position, names, logdensity_fn):
    """Per-chain log density and its gradient with respect to the sites ``names``."""
    if hasattr(logdensity_fn, "value_and_grad"):  # the backend's faster gradient (Pyro: a traced graph)
        return logdensity_fn.value_and_grad(position, list(names))
    return differentiate(ops, logdensity_fn, position, names)


def differentiate(ops, logdensity_fn, position, names):
    """:func:`logdensity_and_grad` by differentiating ``logdensity_fn`` (no fast path)."""
    moved = {n: position[n] for n in names}

    def total(sub):
        ld = logdensity_fn(dict(position, **sub))
        return ld.sum(), ld

    (_, ld), grad = ops.value_and_grad(total, has_aux=True)(moved)
    return ld, grad


class Langevin(Sampler):
    """Unadjusted Langevin dynamics on continuous sites.

    Parameters
    ----------
    step_size : float
        ε in x' = x + ε ∇log p̃(x) + σ ξ.
    noise_scale : float, optional
        σ; defaults to √(2ε) (the discretized Langevin diffusion).

    Examples
    --------
    >>> ebm_ppl.samplers.Langevin(step_size=0.01, noise_scale=0.005)
    Langevin(step_size=0.01, noise_scale=0.005)
    """

    site_kind = "continuous"

    def __init__(self, step_size, noise_scale=None):
        self.step_size = check_number("Langevin", "step_size", step_size)
        self.noise_scale = None if noise_scale is None else check_number("Langevin", "noise_scale", noise_scale,
                                                                         low_inclusive=True)

    def build(self, ops, sites):
        names = tuple(s.name for s in sites)
        eps = self.step_size
        sigma = math.sqrt(2 * eps) if self.noise_scale is None else self.noise_scale

        def init(position):
            return ()

        def step(rng_key, position, aux, logdensity_fn):
            _, grad = logdensity_and_grad(ops, position, names, logdensity_fn)
            keys = ops.split(rng_key, len(names))
            new = dict(position)
            for key, n in zip(keys, names):
                x = position[n]
                new[n] = x + eps * grad[n] + sigma * ops.normal(key, tuple(x.shape), x)
            return new, aux, nan_acceptance(ops, position)

        return Kernel(names, init, step)
