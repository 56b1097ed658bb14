"""Numerics every sampler shares: argument checks, categorical draws, the per-chain log
density and its gradient, the Metropolis-Hastings accept/reject and step-size adaptation.

Written once over the backend's ``ops`` (see :mod:`ebm_ppl.backend`); imports nothing else
from the package, so every kernel module (and the core) can use it without cycles.
"""

import math
import numbers

__all__ = ["Target", "check_number", "nan_acceptance", "categorical", "per_chain_sum", "logdensity_and_grad",
           "differentiate", "mh_accept", "select_rows", "adapt_log_step"]


def check_number(owner, name, value, low=0.0, low_inclusive=False, high=None, high_inclusive=False):
    """``float(value)`` when it is a real number in the range, else ``ValueError`` naming
    ``owner`` and the argument ``name`` (NaN and infinities are rejected)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v >= low if low_inclusive else v > low) if low is not None else True
        if ok and high is not None:
            ok = v <= high if high_inclusive else v < high
    if not ok:
        lo = "" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        raise ValueError(f"{owner}: {name} must be a finite number in {lo}, {hi}, got {value!r}")
    return float(value)


def nan_acceptance(ops, position):
    """The acceptance rate of a kernel that has none (Gibbs, unadjusted Langevin)."""
    like = next(iter(position.values()))
    dtype_like = like if ops.is_floating(like) else ops.asarray(0.0, None)
    return ops.asarray(float("nan"), dtype_like)


def categorical(ops, rng_key, logits):
    """One draw per row of ``logits`` (..., K) by the Gumbel-max trick."""
    xp = ops.xp
    u = ops.uniform(rng_key, tuple(logits.shape), logits)
    u = xp.clip(u, 1e-30, 1.0)
    return xp.argmax(logits - xp.log(-xp.log(u)), axis=-1)


class Target:
    """What a kernel samples from: ``target(position)`` is log p̃ per chain; where the
    backend has a faster way to its gradient (Pyro's captured graphs, ``log_density_grad``),
    ``value_and_grad(position, names, value=True) -> (log p̃ or None, {name: gradient})``,
    else None (the gradient is then taken by differentiating ``log_density``)."""

    __slots__ = ("log_density", "value_and_grad")

    def __init__(self, log_density, value_and_grad=None):
        self.log_density, self.value_and_grad = log_density, value_and_grad

    def __call__(self, position):
        return self.log_density(position)


def per_chain_sum(ops, tree):
    """Sum every array of ``tree`` over all axes but the first (chains)."""
    total = 0.0
    for v in tree.values():
        total = total + v.reshape((v.shape[0], -1)).sum(-1)
    return total


def logdensity_and_grad(ops, position, names, logdensity_fn, value=True):
    """Per-chain log density and its gradient with respect to the sites ``names``.

    ``value=False``: the caller uses the gradient alone, and the log density may come back
    as None (Pyro's captured gradient graph then skips the forward pass)."""
    if isinstance(logdensity_fn, Target) and logdensity_fn.value_and_grad is not None:
        return logdensity_fn.value_and_grad(position, list(names), value=value)  # the backend's faster path
    return differentiate(ops, logdensity_fn, position, names)


def differentiate(ops, logdensity_fn, position, names):
    """:func:`logdensity_and_grad` by differentiating ``logdensity_fn`` (no fast path)."""
    moved = {n: position[n] for n in names}

    def total(sub):
        ld = logdensity_fn(dict(position, **sub))
        return ld.sum(), ld

    (_, ld), grad = ops.value_and_grad(total, has_aux=True)(moved)
    return ld, grad


def mh_accept(ops, rng_key, log_alpha, like):
    """One Metropolis-Hastings decision per chain: ``(accept, rate)``.

    ``log_alpha`` (num_chains,) is the log acceptance ratio; a non-finite ratio (a proposal
    whose density or gradient overflowed) is rejected. ``rate`` is the mean acceptance
    probability min(1, α) over chains, the statistic step sizes are adapted on."""
    xp = ops.xp
    log_alpha = xp.where(xp.isfinite(log_alpha), log_alpha, -float("inf"))
    accept = xp.log(ops.uniform(rng_key, tuple(like.shape), like)) < log_alpha
    return accept, xp.mean(xp.exp(xp.clip(log_alpha, None, 0.0)))


def select_rows(ops, accept, proposal, position, names):
    """``position`` with the rows (chains) where ``accept`` holds taken from ``proposal``."""
    xp = ops.xp
    new = dict(position)
    for n in names:
        new[n] = xp.where(accept.reshape((-1,) + (1,) * (len(position[n].shape) - 1)), proposal[n], position[n])
    return new


def adapt_log_step(ops, log_step_size, rate, target_accept, adapt_rate):
    """One Robbins-Monro step of log ε toward ``target_accept`` (Andrieu & Thoms 2008), in
    log ε's own dtype (a float64 acceptance rate, as JAX's x64 mode gives for float32
    chains, would otherwise change the dtype of a loop's carry)."""
    new = log_step_size + adapt_rate * (rate - target_accept)
    return new if new.dtype == log_step_size.dtype else ops.astype(new, log_step_size.dtype)
