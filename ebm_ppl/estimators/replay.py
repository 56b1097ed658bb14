"""Short-run chains from a replay buffer of past negative samples.

Each update draws ``num_chains`` distinct entries of a buffer of ``buffer_size`` past
negative samples, restarts each of them from ``init`` with probability ``reinit``, runs
``num_steps`` transitions under the current parameters, uses the result as the negative
phase and writes it back in place of the entries drawn. The buffer starts full, drawn
from ``init``. The restarts keep exploring regions the persistent samples have left; the
buffer keeps a diverse population with few transitions per update.

References
----------
Du & Mordatch (2019), Implicit generation and modeling with energy-based models (95 %
of the chains from the buffer, 5 % from noise). Nijkamp, Hill, Zhu & Wu (2019), Learning
non-convergent non-persistent short-run MCMC toward energy-based model.
"""

from typing import Any, NamedTuple

from .._problem import run_kernel
from .._registry import state_type
from .base import Contrastive, Phases
from ._common import check_bool, check_int, check_positive_args, init_positive, positive_repr, run_positive
from .pcd import _INITS

__all__ = ["ReplayBuffer", "ReplayState"]


@state_type
class ReplayState(NamedTuple):
    """State of :class:`ReplayBuffer` between updates.

    Attributes
    ----------
    buffer : dict
        site -> sampler-space values, ``buffer_size`` rows.
    position : dict
        The last update's negative samples (``num_chains`` rows).
    aux : Any
        The sampler's adapted state.
    positive_aux : Any
        The positive-phase state (see :class:`~ebm_ppl.estimators.CDState`).
    """

    buffer: Any
    position: Any
    aux: Any
    positive_aux: Any


class ReplayBuffer(Contrastive):
    """Replay buffer with reinitialization (Du & Mordatch 2019).

    Parameters
    ----------
    buffer_size : int
        Number of stored samples (>= ``num_chains``).
    num_chains : int
        Chains run per update (drawn from the buffer without replacement).
    reinit : float
        Probability in [0, 1] that a drawn chain restarts from ``init`` (default 0.05).
    num_steps : int
        Sampler transitions per update (default 20: short-run chains).
    init : {"base", "data", "uniform"}
        Where the buffer starts and restarts draw from (``"data"``: random examples of the
        current batch for restarts, of the data set for the initial buffer).
    positive, positive_steps, rao_blackwell
        The positive phase of latent sites, and Rao-Blackwellized gradients (see
        :class:`~ebm_ppl.CD`).

    Examples
    --------
    >>> ebm_ppl.ReplayBuffer(buffer_size=1000, num_chains=100)
    ReplayBuffer(buffer_size=1000, num_chains=100, reinit=0.05, num_steps=20, init='base')
    """

    shard_settings = ("num_chains", "buffer_size")

    def __init__(self, buffer_size=10000, num_chains=100, reinit=0.05, num_steps=20, init="base",
                 positive="base", positive_steps=None, rao_blackwell=False):
        check_int("ReplayBuffer", "buffer_size", buffer_size)
        check_int("ReplayBuffer", "num_chains", num_chains)
        if num_chains > buffer_size:
            raise ValueError(f"ReplayBuffer: num_chains ({num_chains}) must not exceed buffer_size ({buffer_size})")
        if isinstance(reinit, bool) or not isinstance(reinit, (int, float)) or not 0 <= reinit <= 1:
            raise ValueError(f"ReplayBuffer: reinit must be a probability in [0, 1], got {reinit!r}")
        check_int("ReplayBuffer", "num_steps", num_steps)
        if init not in _INITS:
            raise ValueError(f"ReplayBuffer: init must be one of {_INITS}, got {init!r}")
        positive, positive_steps = check_positive_args("ReplayBuffer", positive, positive_steps)
        self.buffer_size = int(buffer_size)
        self.num_chains = int(num_chains)
        self.reinit = float(reinit)
        self.num_steps = int(num_steps)
        self.init_method = init
        self.positive = positive
        self.positive_steps = positive_steps
        self.rao_blackwell = check_bool("ReplayBuffer", "rao_blackwell", rao_blackwell)

    def __repr__(self):
        return (f"ReplayBuffer(buffer_size={self.buffer_size}, num_chains={self.num_chains}, "
                f"reinit={self.reinit}, num_steps={self.num_steps}, init={self.init_method!r}"
                f"{positive_repr(self)})")

    def init(self, problem, rng_key, data_values, batch_size):
        key_neg, key_pos = problem.ops.split(rng_key, 2)
        buffer = problem.init_position(key_neg, self.buffer_size, self.init_method, data_values)
        position = {k: v[: self.num_chains] for k, v in buffer.items()}
        return ReplayState(buffer, position, problem.kernel.init(position),
                           init_positive(self, problem, key_pos, data_values, batch_size))

    def update(self, rng_key, problem, state, params, batch_values, batch_index=None):
        """Draw from the buffer, restart some, run, write back: (state, positive, negative, acceptance)."""
        ops, xp = problem.ops, problem.ops.xp
        key_pos, key_pick, key_re, key_init, key_neg = ops.split(rng_key, 5)
        positive, pos_aux = run_positive(self, problem, key_pos, state.positive_aux, params, batch_values,
                                         batch_index)
        like = ops.asarray(0.0, None)
        # distinct entries: the first num_chains of a uniformly random permutation
        idx = xp.argsort(ops.uniform(key_pick, (self.buffer_size,), like))[: self.num_chains]
        start = {k: v[idx] for k, v in state.buffer.items()}
        fresh = problem.init_position(key_init, self.num_chains, self.init_method, batch_values)
        restart = ops.uniform(key_re, (self.num_chains,), like) < self.reinit
        start = {k: xp.where(restart.reshape((-1,) + (1,) * (len(v.shape) - 1)), fresh[k], v)
                 for k, v in start.items()}
        position, aux, rate, _ = run_kernel(ops, problem.kernel, key_neg, start, state.aux,
                                            problem.logdensity_fn(params), self.num_steps)
        buffer = {k: ops.set_rows(v, idx, position[k]) for k, v in state.buffer.items()}
        return Phases(ReplayState(buffer, position, aux, pos_aux), positive, position, rate)
