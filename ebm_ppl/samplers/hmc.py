"""Hamiltonian Monte Carlo with an identity mass matrix, vectorized over chains.

Each step draws a fresh momentum p ~ N(0, I), takes ``num_leapfrog`` leapfrog steps of
size ε = ``step_size`` in unconstrained space and accepts the end point per chain with
probability min(1, exp(H(x, p) - H(x', p'))), H = -log p̃(x) + |p|² / 2. Every chain makes
its own decision (Pyro's ``pyro.infer.HMC`` makes one joint decision for a whole batch).
With ``adapt=True`` (used by ``sample``'s warm-up when asked) log ε follows a
Robbins-Monro recursion toward ``target_accept``, as :class:`~ebm_ppl.samplers.MALA` does.

References
----------
Duane, Kennedy, Pendleton & Roweth (1987), Hybrid Monte Carlo. Neal (2011), MCMC using
Hamiltonian dynamics, Handbook of MCMC. Beskos, Pillai, Roberts, Sanz-Serna & Stuart
(2013), Optimal tuning of the hybrid Monte Carlo algorithm (target acceptance 0.651).
"""

import math
from typing import Any, NamedTuple

from .._registry import state_type
from ._numerics import adapt_log_step, check_number, logdensity_and_grad, mh_accept, per_chain_sum, select_rows
from .base import Kernel, Sampler

__all__ = ["HMC", "HMCAux", "leapfrog"]


@state_type
class HMCAux(NamedTuple):
    """Adapted state of HMC.

    Attributes
    ----------
    log_step_size : array
        log ε (a scalar array, adapted when ``adapt=True``).
    """

    log_step_size: Any


def leapfrog(ops, position, momentum, grad, eps, num_steps, names, logdensity_fn):
    """``num_steps`` leapfrog steps; returns the end position, momentum, log density and
    gradient (the gradient at the end is reused by the next step's first half kick)."""

    def body(i, carry):
        x, p, _, g = carry
        p = {n: p[n] + 0.5 * eps * g[n] for n in names}
        x = dict(x, **{n: x[n] + eps * p[n] for n in names})
        ld, g = logdensity_and_grad(ops, x, names, logdensity_fn)
        p = {n: p[n] + 0.5 * eps * g[n] for n in names}
        return x, p, ld, g

    ld0 = ops.asarray(0.0, grad[names[0]]) * per_chain_sum(ops, grad)
    x, p, ld, g = ops.fori_loop(0, num_steps, body, (position, momentum, ld0, grad))
    return x, p, ld, g


def _kinetic(ops, momentum):
    return per_chain_sum(ops, {n: v * v for n, v in momentum.items()}) / 2.0


class HMC(Sampler):
    """Metropolis-adjusted HMC on continuous sites, one accept/reject per chain.

    Parameters
    ----------
    step_size : float
        ε, the leapfrog step size (initial value when ``adapt=True``).
    num_leapfrog : int
        Leapfrog steps per transition.
    adapt : bool
        Adapt ε toward ``target_accept`` at every step (default False).
    target_accept : float
        Target mean acceptance probability for adaptation (default 0.651).
    adapt_rate : float
        Gain of the Robbins-Monro recursion on log ε (default 0.05).

    Examples
    --------
    >>> ebm_ppl.samplers.HMC(step_size=0.2, num_leapfrog=10)
    HMC(step_size=0.2, num_leapfrog=10, adapt=False, target_accept=0.651, adapt_rate=0.05)
    """

    site_kind = "continuous"

    def __init__(self, step_size, num_leapfrog, adapt=False, target_accept=0.651, adapt_rate=0.05):
        step_size = check_number("HMC", "step_size", step_size)
        check_number("HMC", "target_accept", target_accept, high=1.0)
        adapt_rate = check_number("HMC", "adapt_rate", adapt_rate, low_inclusive=True)
        import numbers

        if (isinstance(num_leapfrog, bool) or not isinstance(num_leapfrog, numbers.Real)
                or not math.isfinite(num_leapfrog) or int(num_leapfrog) != num_leapfrog or num_leapfrog < 1):
            raise ValueError(f"HMC: num_leapfrog must be a positive integer, got {num_leapfrog!r}")
        self.step_size = float(step_size)
        self.num_leapfrog = int(num_leapfrog)
        self.adapt = bool(adapt)
        self.target_accept = float(target_accept)
        self.adapt_rate = float(adapt_rate)

    def build(self, ops, sites):
        names = tuple(s.name for s in sites)
        xp = ops.xp

        def init(position):
            return HMCAux(ops.asarray(math.log(self.step_size), position[names[0]]))

        def step(rng_key, position, aux, logdensity_fn):
            eps = xp.exp(aux.log_step_size)
            ld, grad = logdensity_and_grad(ops, position, names, logdensity_fn)
            key_momentum, key_accept = ops.split(rng_key, 2)
            keys = ops.split(key_momentum, len(names))
            momentum = {n: ops.normal(k, tuple(position[n].shape), position[n]) for k, n in zip(keys, names)}
            x, p, ld_new, _ = leapfrog(ops, position, momentum, grad, eps, self.num_leapfrog,
                                       names, logdensity_fn)
            log_alpha = ld_new - _kinetic(ops, p) - ld + _kinetic(ops, momentum)
            accept, rate = mh_accept(ops, key_accept, log_alpha, ld)
            new = select_rows(ops, accept, x, position, names)
            if self.adapt:
                aux = HMCAux(adapt_log_step(ops, aux.log_step_size, rate, self.target_accept, self.adapt_rate))
            return new, aux, rate

        return Kernel(names, init, step)
