"""One-hot sites (Pyro's ``OneHotCategorical``): their states, framework-free (numpy).

A one-hot site of shape ``(*groups, K)`` holds, in each of its ``G = prod(groups)`` groups,
one of the K unit vectors; its joint states are the ``K ** G`` choices, numbered in mixed
radix like :func:`ebm_ppl.evaluation.exact.states_at` numbers integer coordinates (the
last group runs fastest).
"""

import math

import numpy as np

__all__ = ["is_one_hot", "num_groups", "num_states", "states_at", "random_states"]


def is_one_hot(site):
    """Whether ``site`` (a :class:`~ebm_ppl.backend.SiteInfo`) is a one-hot site."""
    return bool(getattr(site, "one_hot", False))


def num_groups(site):
    """``(G, K)``: the number of one-hot groups of ``site`` and the states of each."""
    return math.prod(site.shape[:-1]), int(site.shape[-1])


def num_states(site):
    """The number of joint states of a one-hot site, ``K ** G``."""
    groups, k = num_groups(site)
    return k ** groups


def states_at(site, index):
    """``(states, rest)``: the states of ``site`` numbered ``index % K**G`` (int64 array), as
    an array of shape ``(len(index), *site.shape)``, and ``index // K**G`` for the sites before it."""
    groups, k = num_groups(site)
    index = np.asarray(index, dtype=np.int64)
    digits = np.empty((len(index), groups), dtype=np.int64)
    for j in reversed(range(groups)):
        digits[:, j] = index % k
        index = index // k
    return np.eye(k)[digits].reshape((-1,) + tuple(site.shape)), index


def random_states(rng, site, num_rows):
    """``num_rows`` uniform random states of ``site`` (numpy), shape ``(num_rows, *site.shape)``."""
    groups, k = num_groups(site)
    return np.eye(k)[rng.integers(k, size=(num_rows, groups))].reshape((num_rows,) + tuple(site.shape))
