"""Metropolis-adjusted Langevin algorithm (MALA), vectorized over chains.

Proposal x' = x + ε ∇log p̃(x) + √(2ε) ξ (blackjax's convention) in unconstrained space,
accepted per chain with the Metropolis-Hastings ratio of the two Gaussian proposals.
With ``adapt=True`` (the default inside ``sampler="auto"``) log ε follows a Robbins-Monro
recursion toward ``target_accept`` (0.574, Roberts & Rosenthal 1998), step after step,
so the step size keeps up with parameters that change during fitting.

References
----------
Roberts & Tweedie (1996), Exponential convergence of Langevin distributions and their
discrete approximations. Roberts & Rosenthal (1998), Optimal scaling of discrete
approximations to Langevin diffusions.
"""

import math
from typing import Any, NamedTuple

from .._registry import state_type
from ._numerics import adapt_log_step, check_number, logdensity_and_grad, mh_accept, select_rows
from .base import Kernel, Sampler

__all__ = ["MALA", "MALAAux"]


@state_type
class MALAAux(NamedTuple):
    """Adapted state of MALA.

    Attributes
    ----------
    log_step_size : array
        log ε (a scalar array, adapted when ``adapt=True``).
    """

    log_step_size: Any


def _sq_norm(ops, tree):
    total = 0.0
    for v in tree.values():
        total = total + (v * v).reshape((v.shape[0], -1)).sum(-1)
    return total


class MALA(Sampler):
    """Metropolis-adjusted Langevin on continuous sites, one accept/reject per chain.

    Parameters
    ----------
    step_size : float
        ε (initial value when ``adapt=True``).
    adapt : bool
        Adapt ε toward ``target_accept`` at every step (default False).
    target_accept : float
        Target mean acceptance probability for adaptation (default 0.574).
    adapt_rate : float
        Gain of the Robbins-Monro recursion on log ε (default 0.05).

    Examples
    --------
    >>> ebm_ppl.samplers.MALA(step_size=0.05)
    MALA(step_size=0.05, adapt=False, target_accept=0.574, adapt_rate=0.05)
    """

    site_kind = "continuous"

    def __init__(self, step_size, adapt=False, target_accept=0.574, adapt_rate=0.05):
        step_size = check_number("MALA", "step_size", step_size)
        check_number("MALA", "target_accept", target_accept, high=1.0)
        adapt_rate = check_number("MALA", "adapt_rate", adapt_rate, low_inclusive=True)
        self.step_size = float(step_size)
        self.adapt = bool(adapt)
        self.target_accept = float(target_accept)
        self.adapt_rate = float(adapt_rate)

    def build(self, ops, sites):
        names = tuple(s.name for s in sites)
        xp = ops.xp

        def init(position):
            like = position[names[0]]
            return MALAAux(ops.asarray(math.log(self.step_size), like))

        def step(rng_key, position, aux, logdensity_fn):
            eps = xp.exp(aux.log_step_size)
            ld, grad = logdensity_and_grad(ops, position, names, logdensity_fn)
            key_noise, key_accept = ops.split(rng_key, 2)
            noise_keys = ops.split(key_noise, len(names))
            proposal, forward = dict(position), {}
            for key, n in zip(noise_keys, names):
                x = position[n]
                xi = ops.normal(key, tuple(x.shape), x)
                proposal[n] = x + eps * grad[n] + xp.sqrt(2 * eps) * xi
                forward[n] = xi
            ld_new, grad_new = logdensity_and_grad(ops, proposal, names, logdensity_fn)
            backward = {n: (position[n] - proposal[n] - eps * grad_new[n]) for n in names}
            # log q(x | x') - log q(x' | x), with q = N(x + ε∇, 2ε): the forward residual is √(2ε) ξ
            log_ratio = (_sq_norm(ops, forward) / 2.0) - _sq_norm(ops, backward) / (4 * eps)
            accept, rate = mh_accept(ops, key_accept, ld_new - ld + log_ratio, ld)
            new = select_rows(ops, accept, proposal, position, names)
            if self.adapt:
                aux = MALAAux(adapt_log_step(ops, aux.log_step_size, rate, self.target_accept, self.adapt_rate))
            return new, aux, rate

        return Kernel(names, init, step)
