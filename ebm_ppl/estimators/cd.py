"""Contrastive divergence (CD-k): negative chains start at the batch each update.

References
----------
Hinton (2002), Training products of experts by minimizing contrastive divergence.
Carreira-Perpiñán & Hinton (2005), On contrastive divergence learning (its bias).
"""

from typing import Any, NamedTuple

from .._problem import run_kernel
from .._registry import state_type
from .base import Contrastive, Phases
from ._common import check_bool, check_int, check_positive_args, init_positive, positive_repr, run_positive

__all__ = ["CD", "CDState"]


@state_type
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
        The positive-phase state (models with latent sites): the sampler's adapted state,
        or :class:`~ebm_ppl.estimators._common.PersistentLatents` with
        ``positive="persistent"``.
    """

    position: Any
    aux: Any
    positive_aux: Any = ()


class CD(Contrastive):
    """CD-k: each update runs ``num_steps`` transitions from the current batch.

    With latent sites, the positive phase first draws them given the batch
    (``positive_steps`` transitions of the sampler restricted to the latent sites, from
    their base distributions, or continuing per-example chains with
    ``positive="persistent"``), and the negative chains start from that joint state, as in
    Hinton's CD for restricted Boltzmann machines. Cheap and low-variance, but biased: its
    fixed point is not the maximum-likelihood estimate unless the chains mix in
    ``num_steps``.

    Parameters
    ----------
    num_steps : int
        Sampler transitions per parameter update.
    positive : {"base", "persistent"}
        Latent sites of the positive phase: redrawn from their base distributions at every
        update, or one persistent chain per training example.
    positive_steps : int, optional
        Transitions of the positive phase (default ``num_steps``).
    rao_blackwell : bool
        Use the conditional means of a layer of binary latent units instead of their draws
        in both phases' gradients.

    Notes
    -----
    Conditional models (``covariates=`` in :func:`~ebm_ppl.fit_unnormalized`): the chain
    of example i starts at its own y_i and runs ``num_steps`` transitions of p(y | x_i),
    its inputs x_i held fixed: CD-k of each conditional model, averaged over the batch.

    Rao-Blackwellized phases (``rao_blackwell=True``, every estimator takes it): where a
    latent site h is a layer of binary units, conditionally independent given the other
    sites, on which log p̃ is affine (an RBM's hidden layer), both phases' gradients use
    E[∇θ log p̃(x, h) | x] = ∇θ log p̃(x, E[h | x]) in place of ∇θ log p̃(x, h) at the
    drawn h: the same expectation, less variance (the "mean-field" statistics of Hinton's
    RBM recipe and scikit-learn's ``BernoulliRBM``). The chains still carry drawn values.
    The structure is measured when the fit is compiled, as ``"auto"`` measures blocks, with
    h also at fractional values (the identity needs log p̃ affine in h on [lo, hi], not only
    at the two values); a model without such a site raises ``ValueError``. With several
    such sites, only the largest is averaged (averaging two interacting layers at once
    would bias the gradient).

    Examples
    --------
    >>> ebm_ppl.CD(num_steps=5)
    CD(num_steps=5)
    """

    supports_covariates = True

    def __init__(self, num_steps=1, positive="base", positive_steps=None, rao_blackwell=False):
        check_int("CD", "num_steps", num_steps)
        positive, positive_steps = check_positive_args("CD", positive, positive_steps)
        self.num_steps = int(num_steps)
        self.positive = positive
        self.positive_steps = positive_steps
        self.rao_blackwell = check_bool("CD", "rao_blackwell", rao_blackwell)

    def __repr__(self):
        return f"CD(num_steps={self.num_steps}{positive_repr(self)})"

    def init(self, problem, rng_key, data_values, batch_size):
        key_neg, key_pos = problem.ops.split(rng_key, 2)
        first = {k: v[:batch_size] for k, v in data_values.items()}
        position = problem.init_position(key_neg, batch_size, "base")
        position.update(problem.to_internal(first))
        return CDState(position, problem.kernel.init(position),
                       init_positive(self, problem, key_pos, data_values, batch_size))

    def update(self, rng_key, problem, state, params, batch_values, batch_index=None):
        """One update's samples: (state, positive position, negative position, acceptance)."""
        key_pos, key_neg = problem.ops.split(rng_key, 2)
        positive, pos_aux = run_positive(self, problem, key_pos, state.positive_aux, params, batch_values,
                                         batch_index)
        run = run_kernel(problem.ops, problem.kernel, key_neg, positive, state.aux, problem.logdensity_fn(params),
                         self.num_steps, logged=problem.ops.traced)  # see PCD.update
        return Phases(CDState(run.position, run.aux, pos_aux), positive, run.position, run.acceptance_rate,
                      negative_log_density=run.log_density)
