"""What every estimator shares: checks of its settings and the positive phase.

The positive phase draws the latent sites given each batch. ``positive="base"`` starts
them from their base distributions at every update; ``positive="persistent"`` keeps one
latent chain per training example, continued each time its example is in a batch (the
positive-phase analogue of PCD: with continuous latents one transition per update then
suffices, as the chain carries over), ``positive_steps`` transitions each time.
"""

import numbers
from typing import Any, NamedTuple

import numpy as np

from .._registry import state_type

__all__ = ["check_int", "check_positive_args", "check_bool", "PersistentLatents", "init_positive", "run_positive"]

POSITIVE = ("base", "persistent")


@state_type
class PersistentLatents(NamedTuple):
    """Positive-phase state with ``positive="persistent"``.

    Attributes
    ----------
    latents : dict
        latent site -> sampler-space values, one row per training example.
    aux : Any
        The positive-phase sampler's adapted state (step sizes).
    """

    latents: Any
    aux: Any


def check_int(owner, name, value, minimum=1, allow_none=False):
    """``value`` as a Python int (numpy integers accepted), else a ValueError naming it."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not (isinstance(value, numbers.Integral) and value >= minimum):
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_args(owner, positive, positive_steps):
    """``(positive, positive_steps)`` checked, ``positive_steps`` as a Python int or None."""
    if positive not in POSITIVE:
        raise ValueError(f"{owner}: positive must be one of {POSITIVE}, got {positive!r}")
    return positive, check_int(owner, "positive_steps", positive_steps, allow_none=True)


def check_bool(owner, name, value):
    """``value`` as a Python bool, else a ValueError naming it."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: {name} must be True or False, got {value!r}")
    return bool(value)


def init_positive(estimator, problem, rng_key, data_values, batch_size):
    """The positive phase's initial state: the kernel's adapted state (``"base"``), or
    :class:`PersistentLatents` with one chain per training example drawn from the base."""
    if estimator.positive != "persistent" or not problem.latent_names:
        return problem.init_positive_aux(rng_key, batch_size)
    key_aux, key_lat = problem.ops.split(rng_key, 2)
    num_data = next(iter(data_values.values())).shape[0]
    start = problem.init_position(key_lat, num_data, "base")
    latents = {n: start[n] for n in problem.latent_names}
    return PersistentLatents(latents, problem.init_positive_aux(key_aux, batch_size))


def run_positive(estimator, problem, rng_key, state, params, batch_values, batch_index):
    """The positive-phase position (batch + latents) and the new positive-phase state."""
    num_steps = estimator.positive_steps or estimator.num_steps
    if not isinstance(state, PersistentLatents):
        return problem.positive(rng_key, state, params, batch_values, num_steps)
    if batch_index is None:
        raise ValueError("positive='persistent' needs the batch's example indices")
    start = {n: v[batch_index] for n, v in state.latents.items()}
    position, aux = problem.positive(rng_key, state.aux, params, batch_values, num_steps, start=start)
    latents = {n: problem.ops.set_rows(v, batch_index, position[n]) for n, v in state.latents.items()}
    return position, PersistentLatents(latents, aux)


def positive_repr(estimator):
    out = ""
    if estimator.positive != "base":
        out += f", positive={estimator.positive!r}"
    if estimator.positive_steps is not None:
        out += f", positive_steps={estimator.positive_steps}"
    if getattr(estimator, "rao_blackwell", False):
        out += ", rao_blackwell=True"
    return out
