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

from .._problem import run_kernel
from ._common import check_int, check_positive_args, init_positive, positive_repr, run_positive
from .cd import CDState

__all__ = ["PCD", "PCDState"]

PCDState = CDState

_INITS = ("base", "data", "uniform")


class PCD:
    """Persistent chains (SML): ``num_chains`` chains advanced ``num_steps`` per update.

    With latent sites, the positive phase draws them given each batch as :class:`CD`
    does (``positive="base"``: fresh from their base distributions at every update;
    ``positive="persistent"``: continuing one chain per training example;
    ``positive_steps`` transitions of the sampler restricted to the latent sites).

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
    positive : {"base", "persistent"}
        Latent sites of the positive phase (see :class:`CD`).
    positive_steps : int, optional
        Transitions of the positive phase (default ``num_steps``).

    Examples
    --------
    >>> ebm_ppl.PCD(num_chains=500, num_steps=2)
    PCD(num_chains=500, num_steps=2, init='base')
    """

    def __init__(self, num_chains=100, num_steps=1, init="base", positive="base", positive_steps=None):
        check_int("PCD", "num_chains", num_chains)
        check_int("PCD", "num_steps", num_steps)
        if init not in _INITS:
            raise ValueError(f"PCD: init must be one of {_INITS}, got {init!r}")
        positive, positive_steps = check_positive_args("PCD", positive, positive_steps)
        self.num_chains = int(num_chains)
        self.num_steps = int(num_steps)
        self.init_method = init
        self.positive = positive
        self.positive_steps = positive_steps

    def __repr__(self):
        return (f"PCD(num_chains={self.num_chains}, num_steps={self.num_steps}, init={self.init_method!r}"
                f"{positive_repr(self)})")

    def init(self, problem, rng_key, data_values, batch_size):
        key_neg, key_pos = problem.ops.split(rng_key, 2)
        position = problem.init_position(key_neg, self.num_chains, self.init_method, data_values)
        return PCDState(position, problem.kernel.init(position),
                        init_positive(self, problem, key_pos, data_values, batch_size))

    def update(self, rng_key, problem, state, params, batch_values, batch_index=None):
        """Continue the persistent chains: (state, positive position, negative position, acceptance)."""
        key_pos, key_neg = problem.ops.split(rng_key, 2)
        positive, pos_aux = run_positive(self, problem, key_pos, state.positive_aux, params, batch_values,
                                         batch_index)
        position, aux, rate = run_kernel(
            problem.ops, problem.kernel, key_neg, state.position, state.aux, problem.logdensity_fn(params),
            self.num_steps,
        )
        return PCDState(position, aux, pos_aux), positive, position, rate
