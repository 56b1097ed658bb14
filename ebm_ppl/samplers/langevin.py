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

from ._numerics import check_number, logdensity_and_grad, nan_acceptance
from .base import Kernel, Sampler

__all__ = ["Langevin"]


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
            _, grad = logdensity_and_grad(ops, position, names, logdensity_fn, value=False)
            keys = ops.split(rng_key, len(names))
            new = dict(position)
            for key, n in zip(keys, names):
                x = position[n]
                new[n] = x + eps * grad[n] + sigma * ops.normal(key, tuple(x.shape), x)
            return new, aux, nan_acceptance(ops, position)

        return Kernel(names, init, step)
