"""Parallel tempering (replica exchange) for the negative phase.

``num_temperatures`` groups of ``num_chains`` replicas run at inverse temperatures
β₀ < β₁ < … < β_{K−1} = 1 along the geometric path from the base measure p₀ (β = 0) to
the model (β = 1), the path annealed importance sampling walks
(:mod:`ebm_ppl._tempered`):

    log p̃_β(x) = log p₀(x) + β h(x),   h(x) = log p̃(x) − log p₀(x).

Every transition moves all replicas with the sampler, each under its own β; replicas at
β = 0 are redrawn exactly from the base (an independent draw is a valid transition there,
and the base is where the hot end mixes perfectly). A round of swaps between neighbouring
temperatures follows every ``swap_every`` transitions, alternately the pairs (0, 1),
(2, 3), … and (1, 2), (3, 4), … (deterministic even-odd scheme); replica c at β_k and
replica c at β_{k+1} exchange states with the exact Metropolis probability

    min(1, exp((β_{k+1} − β_k) (h(x_k) − h(x_{k+1})))),

which keeps the product of the tempered distributions invariant. The replicas at β = 1 are
the negative phase. ``history["swap_rate"]`` records the mean swap probability per update.

References
----------
Swendsen & Wang (1986), Replica Monte Carlo simulation of spin-glasses. Geyer (1991),
Markov chain Monte Carlo maximum likelihood. Desjardins, Courville, Bengio, Vincent &
Delalleau (2010), Tempered Markov chain Monte Carlo for training of restricted Boltzmann
machines. Okabe et al. (2001) / Syed et al. (2022) for the even-odd swap scheme.
"""

from typing import Any, NamedTuple

import numpy as np

from .._tempered import parts_fn, tempered
from .._registry import state_type
from .base import Contrastive, Phases
from ._common import check_bool, check_int, check_positive_args, init_positive, positive_repr, run_positive

__all__ = ["PT", "PTState"]


@state_type
class PTState(NamedTuple):
    """State of :class:`PT` between updates.

    Attributes
    ----------
    replicas : dict
        Every replica (sampler space), ``num_temperatures * num_chains`` rows, temperature
        by temperature (rows ``k * num_chains ... (k + 1) * num_chains - 1`` at β_k).
    aux : Any
        The sampler's adapted state (shared by all temperatures).
    positive_aux : Any
        The positive-phase state (see :class:`~ebm_ppl.estimators.CDState`).
    num_transitions : array
        Transitions made so far (an integer scalar): it decides when swaps happen and
        which pairs are tried.
    """

    replicas: Any
    aux: Any
    positive_aux: Any
    num_transitions: Any


def _check_betas(betas):
    b = np.asarray(betas, dtype=np.float64)
    if (b.ndim != 1 or b.size < 2 or not np.all(np.isfinite(b)) or b[0] < 0 or b[-1] != 1.0
            or np.any(np.diff(b) <= 0)):
        raise ValueError(f"PT: betas must be a strictly increasing sequence of at least 2 inverse "
                         f"temperatures in [0, 1] ending at 1.0, got {betas!r}")
    return tuple(float(v) for v in b)


class PT(Contrastive):
    """Parallel tempering: replicas along the path base → model, the β = 1 ones the
    negative phase.

    Parameters
    ----------
    num_chains : int
        Replicas per temperature (the negative phase has ``num_chains`` chains).
    num_temperatures : int
        Number of inverse temperatures K >= 2 (ignored when ``betas`` is given).
    betas : sequence of float, optional
        Inverse temperatures, strictly increasing, in [0, 1], ending at 1. Default:
        ``linspace(0, 1, num_temperatures)``. A ladder that starts at β = 0 needs a proper
        base distribution on every site (else start it above 0).
    num_steps : int
        Sampler transitions per parameter update (each moves every replica).
    swap_every : int
        A round of neighbour swaps after every ``swap_every`` transitions.
    positive, positive_steps, rao_blackwell
        The positive phase of latent sites, and Rao-Blackwellized gradients (see
        :class:`~ebm_ppl.CD`).

    Examples
    --------
    >>> ebm_ppl.PT(num_chains=100, num_temperatures=5)
    PT(num_chains=100, betas=(0.0, 0.25, 0.5, 0.75, 1.0), num_steps=1, swap_every=1)
    """

    history_names = ("swap_rate",)
    shard_settings = ("num_chains",)

    def __init__(self, num_chains=100, num_temperatures=10, betas=None, num_steps=1, swap_every=1,
                 positive="base", positive_steps=None, rao_blackwell=False):
        check_int("PT", "num_chains", num_chains)
        check_int("PT", "num_temperatures", num_temperatures, minimum=2)
        check_int("PT", "num_steps", num_steps)
        check_int("PT", "swap_every", swap_every)
        positive, positive_steps = check_positive_args("PT", positive, positive_steps)
        if betas is None:
            betas = np.linspace(0.0, 1.0, num_temperatures)
        elif isinstance(betas, str):
            raise ValueError(f"PT: betas must be a sequence of inverse temperatures, got {betas!r}")
        self.num_chains = int(num_chains)
        self.betas = _check_betas(betas)
        self.num_temperatures = len(self.betas)
        self.num_steps = int(num_steps)
        self.swap_every = int(swap_every)
        self.positive = positive
        self.positive_steps = positive_steps
        self.rao_blackwell = check_bool("PT", "rao_blackwell", rao_blackwell)

    def __repr__(self):
        betas = tuple(round(b, 6) for b in self.betas)
        return (f"PT(num_chains={self.num_chains}, betas={betas}, num_steps={self.num_steps}, "
                f"swap_every={self.swap_every}{positive_repr(self)})")

    def init(self, problem, rng_key, data_values, batch_size):
        ops = problem.ops
        if problem.info.log_density_parts is None:  # pragma: no cover - both backends have it
            raise NotImplementedError("PT: this backend does not separate the base measure from the factors")
        if self.betas[0] == 0.0 and problem.info.improper_sites:
            raise ValueError(
                f"PT: the ladder starts at beta=0 (the base measure) but the base distribution of "
                f"site(s) {list(problem.info.improper_sites)} is improper (e.g. ImproperUniform); give "
                "those sites a proper distribution or pass betas starting above 0")
        key_neg, key_pos = ops.split(rng_key, 2)
        replicas = problem.init_position(key_neg, self.num_chains * self.num_temperatures, "base")
        zero = ops.asarray(0, None, int_=True)
        return PTState(replicas, problem.kernel.init(replicas),
                       init_positive(self, problem, key_pos, data_values, batch_size), zero)

    def negative_chains(self, state):
        """The replicas at β = 1 (the negative phase)."""
        start = (self.num_temperatures - 1) * self.num_chains
        return {k: v[start:] for k, v in state.replicas.items()}

    def update(self, rng_key, problem, state, params, batch_values, batch_index=None):
        """Move and swap the replicas: (state, positive, negative, acceptance, (swap rate,))."""
        ops, xp = problem.ops, problem.ops.xp
        key_pos, key_neg = ops.split(rng_key, 2)
        positive, pos_aux = run_positive(self, problem, key_pos, state.positive_aux, params, batch_values,
                                         batch_index)
        parts = parts_fn(problem, params)
        like = ops.first_leaf(params) if ops.is_floating(ops.first_leaf(params)) else ops.asarray(0.0, None)
        betas = ops.from_numpy(np.asarray(self.betas), like.dtype, like)
        beta_rows = ops.from_numpy(np.repeat(self.betas, self.num_chains), like.dtype, like)
        logdensity = tempered(parts, beta_rows, xp)
        C, K = self.num_chains, self.num_temperatures
        hot = self.betas[0] == 0.0

        def body(i, carry):
            position, aux, n, key, rate_sum, swap_sum, swap_count = carry
            key, k_move, k_base, k_swap = ops.split(key, 4)
            position, aux, rate = problem.kernel.step(k_move, position, aux, logdensity)
            if hot:  # β = 0: an exact draw from the base
                fresh = problem.to_internal(problem.info.sample_base(k_base, C))
                position = {k: xp.concatenate([fresh[k], v[C:]], axis=0) for k, v in position.items()}
            n = n + 1
            do_swap = (n % self.swap_every) == 0
            swapped, prob = _swap_round(ops, k_swap, position, parts, betas, C, K, (n // self.swap_every) % 2)
            position = ops.cond(do_swap, lambda _: swapped, lambda _: position, None)
            swap_sum = swap_sum + xp.where(do_swap, prob, 0.0 * prob)
            swap_count = swap_count + xp.where(do_swap, 1.0, 0.0)
            return position, aux, n, key, rate_sum + rate, swap_sum, swap_count

        zero = ops.asarray(0.0, like)
        carry = (state.replicas, state.aux, state.num_transitions, key_neg, zero, zero, zero)
        replicas, aux, n, _, rate_sum, swap_sum, swap_count = ops.fori_loop(0, self.num_steps, body, carry)
        swap_rate = xp.where(swap_count > 0, swap_sum / xp.where(swap_count > 0, swap_count, 1.0),
                             float("nan") + zero)
        new = PTState(replicas, aux, pos_aux, n)
        return Phases(new, positive, self.negative_chains(new), rate_sum / self.num_steps, (swap_rate,))


def _swap_round(ops, rng_key, position, parts, betas, C, K, parity):
    """One round of neighbour swaps (pairs (k, k+1) with k ≡ parity mod 2): the new position
    and the mean swap probability of the pairs tried."""
    xp = ops.xp
    ld, lb = parts(position)
    h = (ld - lb).reshape((K, C))
    dbeta = (betas[1:] - betas[:-1]).reshape((K - 1, 1))
    log_a = dbeta * (h[:-1] - h[1:])  # (K-1, C): pair (k, k+1)
    log_a = xp.where(xp.isfinite(log_a), log_a, -float("inf"))
    u = ops.uniform(rng_key, (K - 1, C), log_a)
    pair_parity = ops.asarray(np.arange(K - 1) % 2, None, int_=True)
    tried = (pair_parity == parity).reshape((K - 1, 1))
    accept = (xp.log(u) < log_a) & tried
    none = accept[:1] & False
    up = xp.concatenate([accept, none], axis=0)  # row k goes to k + 1
    down = xp.concatenate([none, accept], axis=0)  # row k goes to k - 1
    rows = ops.asarray(np.arange(K * C).reshape((K, C)), None, int_=True)
    source = xp.where(up, rows + C, xp.where(down, rows - C, rows)).reshape((-1,))
    new = {k: v[source] for k, v in position.items()}
    prob = xp.exp(xp.clip(log_a, None, 0.0))
    tried_f = ops.astype(tried, prob.dtype) * (prob * 0 + 1)
    return new, xp.sum(prob * tried_f) / xp.sum(tried_f)
