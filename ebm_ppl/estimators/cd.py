"""Contrastive divergence (CD-k): negative chains start at the batch each update.

References
----------
Hinton (2002), Training products of experts by minimizing contrastive divergence.
Carreira-Perpiñán & Hinton (2005), On contrastive divergence learning (its bias).
"""

from typing import Any, NamedTuple

from .._problem import run_kernel

__all__ = ["CD", "CDState"]


class CDState(NamedTuple):
    """State of CD between updates.

    Attributes
    ----------
    position : dict
        The negative-phase samples of the last update (sampler space).
    aux : Any
        The sampler's adapted state (step sizes), carried from update to update.
    """

    position: Any
    aux: Any


class CD:
    """CD-k: each update runs ``num_steps`` transitions from the current batch.

    Cheap and low-variance, but biased: its fixed point is not the maximum-likelihood
    estimate unless the chains mix in ``num_steps`` transitions.

    Examples
    --------
    >>> ebm_ppl.CD(num_steps=5)
    CD(num_steps=5)
    """

    def __init__(self, num_steps=1):
        if not (isinstance(num_steps, int) and num_steps >= 1):
            raise ValueError(f"CD: num_steps must be an integer >= 1, got {num_steps!r}")
        self.num_steps = num_steps

    def __repr__(self):
        return f"CD(num_steps={self.num_steps})"

    def num_negative(self, batch_size):
        return batch_size

    def init(self, problem, kernel, rng_key, data_values, batch_size):
        first = {k: v[:batch_size] for k, v in data_values.items()}
        position = problem.init_position(rng_key, batch_size, "base")
        position.update(problem.to_internal(first))
        return CDState(position, kernel.init(position))

    def update(self, problem, kernel, rng_key, state, params, batch_values):
        """Negative samples for one parameter update: (state, negative position, acceptance)."""
        position = dict(state.position)
        position.update(problem.to_internal(batch_values))
        logdensity = problem.logdensity_fn(params)
        position, aux, rate = run_kernel(
            problem.ops, kernel, rng_key, position, state.aux, logdensity, self.num_steps
        )
        return CDState(position, aux), position, rate
