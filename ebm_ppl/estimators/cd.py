"""Contrastive divergence (CD-k): negative chains start at the batch each update.

References
----------
Hinton (2002), Training products of experts by minimizing contrastive divergence.
Carreira-Perpiñán & Hinton (2005), On contrastive divergence learning (its bias).
"""

import numbers
from typing import Any, NamedTuple

from .._problem import run_kernel

__all__ = ["CD", "CDState"]


class CDState(NamedTuple):
    """State of CD / PCD between updates.

    Attributes
    ----------
    position : dict
        The negative-phase chains (sampler space): for CD the last update's samples, for
        PCD the persistent chains.
    aux : Any
        The negative-phase sampler's adapted state (step sizes), carried across updates.
    positive_aux : Any
        The positive-phase sampler's adapted state (models with latent sites).
    """

    position: Any
    aux: Any
    positive_aux: Any = ()


class CD:
    """CD-k: each update runs ``num_steps`` transitions from the current batch.

    With latent sites, the positive phase first draws them given the batch (``num_steps``
    transitions of the sampler restricted to the latent sites, from their base
    distributions), and the negative chains start from that joint state, as in Hinton's
    CD for restricted Boltzmann machines. Cheap and low-variance, but biased: its fixed
    point is not the maximum-likelihood estimate unless the chains mix in ``num_steps``.

    Examples
    --------
    >>> ebm_ppl.CD(num_steps=5)
    CD(num_steps=5)
    """

    def __init__(self, num_steps=1):
        if isinstance(num_steps, bool) or not (isinstance(num_steps, numbers.Integral) and num_steps >= 1):
            raise ValueError(f"CD: num_steps must be an integer >= 1, got {num_steps!r}")
        self.num_steps = int(num_steps)

    def __repr__(self):
        return f"CD(num_steps={self.num_steps})"

    def init(self, problem, rng_key, data_values, batch_size):
        key_neg, key_pos = problem.ops.split(rng_key, 2)
        first = {k: v[:batch_size] for k, v in data_values.items()}
        position = problem.init_position(key_neg, batch_size, "base")
        position.update(problem.to_internal(first))
        return CDState(position, problem.kernel.init(position), problem.init_positive_aux(key_pos, batch_size))

    def update(self, rng_key, problem, state, params, batch_values):
        """One update's samples: (state, positive position, negative position, acceptance)."""
        key_pos, key_neg = problem.ops.split(rng_key, 2)
        positive, pos_aux = problem.positive(key_pos, state.positive_aux, params, batch_values, self.num_steps)
        position, aux, rate = run_kernel(
            problem.ops, problem.kernel, key_neg, positive, state.aux, problem.logdensity_fn(params), self.num_steps
        )
        return CDState(position, aux, pos_aux), positive, position, rate
