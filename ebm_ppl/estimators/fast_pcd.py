"""Fast persistent contrastive divergence (FPCD).

The persistent chains run under θ + θ_fast, where θ_fast is a copy of every parameter
(in unconstrained space) that follows the same gradient with a large learning rate and
decays toward zero at every update:

    θ_fast ← fast_decay · θ_fast − fast_lr · g,

g being the gradient of the surrogate loss (mean log p̃(negative) − mean log p̃(positive)).
The fast weights raise the energy where the chains are and so push them out of the
modes they sit in, which speeds up mixing; because θ_fast decays to zero, the
negative phase still follows the model. Written once over the parameter dict, it works
for any model.

References
----------
Tieleman & Hinton (2009), Using fast weights to improve persistent contrastive divergence.
"""

from typing import Any, NamedTuple

from .._problem import run_kernel
from .._registry import state_type
from .base import Contrastive, Phases
from ._common import check_bool, check_int, check_positive_args, init_positive, positive_repr, run_positive
from .pcd import _INITS

__all__ = ["FPCD", "FPCDState"]

DEFAULT_FAST_LR = 0.05


@state_type
class FPCDState(NamedTuple):
    """State of :class:`FPCD` between updates.

    Attributes
    ----------
    position : dict
        The persistent negative-phase chains (sampler space).
    aux : Any
        The negative-phase sampler's adapted state.
    positive_aux : Any
        The positive-phase state (see :class:`~ebm_ppl.estimators.CDState`).
    fast : dict
        The fast weights θ_fast, one array per (unconstrained) parameter.
    """

    position: Any
    aux: Any
    positive_aux: Any
    fast: Any


class FPCD(Contrastive):
    """Fast PCD: persistent chains advanced under θ + θ_fast (Tieleman & Hinton 2009).

    Parameters
    ----------
    num_chains : int
        Number of persistent negative-phase chains.
    num_steps : int
        Sampler transitions per parameter update.
    fast_lr : float, optional
        Learning rate of the fast weights (plain gradient steps on the surrogate loss);
        default 0.05. Tieleman & Hinton keep it constant while the regular rate decays.
    fast_decay : float
        Factor in [0, 1) applied to the fast weights at every update (default 0.95).
    init : {"base", "data", "uniform"}
        Where chains start (as :class:`~ebm_ppl.PCD`).
    positive, positive_steps, rao_blackwell
        The positive phase of latent sites, and Rao-Blackwellized gradients (see
        :class:`~ebm_ppl.CD`).

    Examples
    --------
    >>> ebm_ppl.FPCD(num_chains=500, fast_lr=0.1)
    FPCD(num_chains=500, num_steps=1, fast_lr=0.1, fast_decay=0.95)
    """

    shard_settings = ("num_chains",)

    def __init__(self, num_chains=100, num_steps=1, fast_lr=None, fast_decay=0.95, init="base",
                 positive="base", positive_steps=None, rao_blackwell=False):
        check_int("FPCD", "num_chains", num_chains)
        check_int("FPCD", "num_steps", num_steps)
        fast_lr = DEFAULT_FAST_LR if fast_lr is None else fast_lr
        if isinstance(fast_lr, bool) or not isinstance(fast_lr, (int, float)) or not fast_lr >= 0:
            raise ValueError(f"FPCD: fast_lr must be a number >= 0, got {fast_lr!r}")
        if isinstance(fast_decay, bool) or not isinstance(fast_decay, (int, float)) or not 0 <= fast_decay < 1:
            raise ValueError(f"FPCD: fast_decay must be in [0, 1), got {fast_decay!r}")
        if init not in _INITS:
            raise ValueError(f"FPCD: init must be one of {_INITS}, got {init!r}")
        positive, positive_steps = check_positive_args("FPCD", positive, positive_steps)
        self.num_chains = int(num_chains)
        self.num_steps = int(num_steps)
        self.fast_lr = float(fast_lr)
        self.fast_decay = float(fast_decay)
        self.init_method = init
        self.positive = positive
        self.positive_steps = positive_steps
        self.rao_blackwell = check_bool("FPCD", "rao_blackwell", rao_blackwell)

    def __repr__(self):
        init = "" if self.init_method == "base" else f", init={self.init_method!r}"
        return (f"FPCD(num_chains={self.num_chains}, num_steps={self.num_steps}, fast_lr={self.fast_lr}, "
                f"fast_decay={self.fast_decay}{init}{positive_repr(self)})")

    def init(self, problem, rng_key, data_values, batch_size):
        ops = problem.ops
        key_neg, key_pos = ops.split(rng_key, 2)
        position = problem.init_position(key_neg, self.num_chains, self.init_method, data_values)
        fast = {k: ops.stop_gradient(v) * 0 for k, v in problem.info.init_params.items()}
        return FPCDState(position, problem.kernel.init(position),
                         init_positive(self, problem, key_pos, data_values, batch_size), fast)

    def update(self, rng_key, problem, state, params, batch_values, batch_index=None):
        """Continue the chains under θ + θ_fast: (state, positive, negative, acceptance)."""
        key_pos, key_neg = problem.ops.split(rng_key, 2)
        positive, pos_aux = run_positive(self, problem, key_pos, state.positive_aux, params, batch_values,
                                         batch_index)
        shifted = {k: v + state.fast[k] for k, v in params.items()}
        position, aux, rate, _ = run_kernel(
            problem.ops, problem.kernel, key_neg, state.position, state.aux, problem.logdensity_fn(shifted),
            self.num_steps,
        )
        return Phases(FPCDState(position, aux, pos_aux, state.fast), positive, position, rate)

    def after_gradient(self, state, grads):
        """The fast-weight step, given the gradient of the surrogate loss at this update."""
        fast = {k: self.fast_decay * v - self.fast_lr * grads[k] for k, v in state.fast.items()}
        return state._replace(fast=fast)
