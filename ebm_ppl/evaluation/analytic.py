"""Summing a layer of binary units out analytically (an RBM's free energy).

A discrete site s with two values {lo, hi} whose coordinates are conditionally independent
given the other sites, and on which the model's code is affine, has

    log p̃(x_s, rest) = log p̃(x_s = lo, rest) + (x_s − lo) · g(rest),   g = ∂ log p̃ / ∂x_s,

so that

    log Σ_{x_s} p̃(x_s, rest) = log p̃(lo, rest) + Σ_i softplus((hi − lo) g_i(rest))

(for an RBM's hidden layer: the free energy, a softplus per hidden unit), and x_s given
the rest is a product of Bernoullis with logits (hi − lo) g. One gradient of Σ_rows log p̃
gives both, for any number of coordinates.

Whether a site has this form is *measured*, as ``"auto"`` measures blocks
(:mod:`ebm_ppl.samplers.structure`): at random parameters (the structure probes) and at
the caller's parameters, at random states, the identity above must hold to float
rounding. Conditional independence and affinity are then both established: on binary
values a function is a multilinear polynomial, and any interaction between coordinates of
s, or any non-affine expression of x_s in the code, leaves a non-zero remainder at random
states (a structure that cancels at every probe is as unlikely here as for ``"auto"``).
"""

import numpy as np

from ..samplers._numerics import logdensity_and_grad

__all__ = ["summable_sites", "sum_out", "sample_site"]


def _float(ops, x):
    return ops.astype(x, ops.asarray(0.0, None).dtype)


def sum_out(ops, position, name, lo, hi, logdensity_fn):
    """Per-row ``(log Σ_{x_name} p̃, logits)`` with site ``name`` summed out analytically.

    ``position`` holds every site (the value of ``name`` is ignored); ``logits`` is
    (hi − lo) ∂ log p̃ / ∂x_name, shape ``(rows, *site shape)``: x_name given the rest is
    ``hi`` with probability sigmoid(logits), independently per coordinate.
    """
    xp = ops.xp
    low = position[name] * 0 + lo
    at_low = {**position, name: _float(ops, low)}
    ld, grads = logdensity_and_grad(ops, at_low, [name], logdensity_fn)
    logits = (hi - lo) * grads[name]
    soft = xp.logaddexp(logits * 0, logits)
    return ld + soft.reshape((soft.shape[0], -1)).sum(-1), logits


def sample_site(ops, rng_key, logits, lo, hi, dtype):
    """x = hi with probability sigmoid(logits), else lo (independently per entry)."""
    xp = ops.xp
    return ops.astype(xp.where(ops.bernoulli_logits(rng_key, logits), hi, lo), dtype)


def _remainder(ops, logdensity_fn, position, name, lo, hi):  # noqa: D401
    """log p̃(x) − [log p̃(x_name = lo) + (x_name − lo) · g] at each row, and |log p̃|."""
    xp = ops.xp
    x = _float(ops, position[name])
    low = x * 0 + lo
    at_low = {**position, name: low}
    ld0, grads = logdensity_and_grad(ops, at_low, [name], logdensity_fn)
    ld = logdensity_fn({**position, name: x})
    lin = ((x - lo) * grads[name]).reshape((x.shape[0], -1)).sum(-1)
    return ld - ld0 - lin, xp.abs(ld)


def summable_sites(problem, params, probes, names=None, logdensity_of=None, tag="log_density", fractional=False):
    """The sites (of ``names``, default all) that :func:`sum_out` handles exactly.

    Checked at every structure probe (random parameters and states) and at ``params``
    itself with the probes' states; a site must be discrete with two values (its values are
    taken as floats). Returns a list of names, largest site first. Results are memoized in
    ``probes.memo`` for the probes' parameters. ``logdensity_of(params)`` is the function
    checked (default ``problem.logdensity_fn``; ``tag`` names it in the memo).

    ``fractional=True`` also checks the identity with the site at random values strictly
    between ``lo`` and ``hi`` (log p̃ affine in the site on the segment, not only at its two
    values: what evaluating the model at the site's conditional mean needs, as the
    Rao-Blackwellized gradients of the estimators do). A model written as, say, ``h ** 2``
    agrees with ``h`` at 0 and 1 but not in between.
    """
    logdensity_of = logdensity_of or problem.logdensity_fn
    ops = problem.ops
    names = list(problem.sites) if names is None else list(names)
    out = []
    for name in names:
        site = problem.sites[name]
        if not site.is_discrete or site.values is None or len(site.values) != 2:
            continue
        lo, hi = (float(v) for v in site.values)
        key = ("summable", tag, name, fractional)
        positions = probes.positions + (_fractional(ops, probes.positions, name, lo, hi) if fractional else [])
        try:
            fn = ops.jit(lambda p, pos, name=name, lo=lo, hi=hi: _remainder(
                ops, logdensity_of(p), pos, name, lo, hi))
            ok = probes.memo.get(key, None)
            if ok is None:
                pairs = zip(probes.params * (2 if fractional else 1), positions)
                ok = all(_small(ops, fn(p, pos)) for p, pos in pairs)
                probes.memo[key] = ok
            ok = ok and all(_small(ops, fn(params, pos)) for pos in positions)
        except Exception:  # e.g. a model that indexes with the site's values: no gradient
            ok = False
        if ok:
            out.append(name)
    return sorted(out, key=lambda n: -int(np.prod(problem.sites[n].shape, dtype=int)))


def _fractional(ops, positions, name, lo, hi):
    """``positions`` with site ``name`` at uniform values in (lo, hi) (floats; fixed seed)."""
    rng = np.random.default_rng(7)
    out = []
    for pos in positions:
        x = _float(ops, pos[name])
        u = rng.uniform(0.05, 0.95, size=tuple(x.shape))
        out.append({**pos, name: ops.from_numpy(lo + (hi - lo) * u, x.dtype, x)})
    return out


def _small(ops, pair):
    rem, size = (ops.to_numpy(a).astype(np.float64) for a in pair)
    tol = 1e-4 * (1.0 + size.max())  # float32 rounding of sums of hundreds of terms
    return bool(np.all(np.isfinite(rem)) and np.all(np.abs(rem) <= tol))
