"""Persistent contrastive divergence / stochastic maximum likelihood (PCD, SML).

The negative chains persist across parameter updates: each update continues them for
``num_steps`` transitions under the new parameters. With small learning rates the chains
track the model distribution and the gradient estimate is asymptotically unbiased.

References
----------
Younes (1998), Stochastic gradient estimation strategies for Markov random fields.
Tieleman (2008), Training restricted Boltzmann machines using approximations to the
likelihood gradient.
"""

import numbers

from .._problem import run_kernel
from .cd import CDState

__all__ = ["PCD", "PCDState"]

PCDState = CDState

_INITS = ("base", "data", "uniform")


class PCD:
    """Persistent chains (SML): ``num_chains`` chains advanced ``num_steps`` per update.

    With latent sites, the positive phase draws them given each batch as :class:`CD`
    does (fresh from their base distributions at every update, ``num_steps``
    transitions of the sampler restricted to the latent sites).

    Parameters
    ----------
    num_chains : int
        Number of persistent negative-phase chains.
    num_steps : int
        Sampler transitions per parameter update.
    init : {"base", "data", "uniform"}
        Where chains start: draws from the sites' base distributions (improper bases:
        uniform in (-2, 2) in unconstrained space), random data examples, or uniform over
        a discrete support.

    Examples
    --------
    >>> ebm_ppl.PCD(num_chains=500, num_steps=2)
    PCD(num_chains=500, num_steps=2, init='base')
    """

    def __init__(self, num_chains=100, num_steps=1, init="base"):
        if isinstance(num_chains, bool) or not (isinstance(num_chains, numbers.Integral) and num_chains >= 1):
            raise ValueError(f"PCD: num_chains must be an integer >= 1, got {num_chains!r}")
        if isinstance(num_steps, bool) or not (isinstance(num_steps, numbers.Integral) and num_steps >= 1):
            raise ValueError(f"PCD: num_steps must be an integer >= 1, got {num_steps!r}")
        if init not in _INITS:
            raise ValueError(f"PCD: init must be one of {_INITS}, got {init!r}")
        self.num_chains = int(num_chains)
        self.num_steps = int(num_steps)
        self.init_method = init

    def __repr__(self):
        return f"PCD(num_chains={self.num_chains}, num_steps={self.num_steps}, init={self.init_method!r})"

    def init(self, problem, rng_key, data_values, batch_size):
        key_neg, key_pos = problem.ops.split(rng_key, 2)
        position = problem.init_position(key_neg, self.num_chains, self.init_method, data_values)
        return PCDState(position, problem.kernel.init(position), problem.init_positive_aux(key_pos, batch_size))

    def update(self, rng_key, problem, state, params, batch_values):
        """Continue the persistent chains: (state, positive position, negative position, acceptance)."""
        key_pos, key_neg = problem.ops.split(rng_key, 2)
        positive, pos_aux = problem.positive(key_pos, state.positive_aux, params, batch_values, self.num_steps)
        position, aux, rate = run_kernel(
            problem.ops, problem.kernel, key_neg, state.position, state.aux, problem.logdensity_fn(params),
            self.num_steps,
        )
        return PCDState(position, aux, pos_aux), positive, position, rate
