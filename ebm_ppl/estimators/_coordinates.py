"""Objectives built on single-coordinate changes of the observed discrete sites.

Pseudo-likelihood (Besag 1975) and ratio matching (Hyvärinen 2007) compare, for every
row x of a batch and every coordinate d of its observed discrete sites, the log density
at x with the log densities at the variants of x that differ from it in coordinate d
alone (the K − 1 other values of a K-valued coordinate). Both are functions
L(ld(x), ld(variants)) of log densities at rows that do not depend on θ, so their exact
gradient is Σ_rows (∂L/∂ld_row) ∇θ ld_row: the weights ∂L/∂ld are computed first (no
gradient), then one ``weighted_param_grad`` call per chunk of variants gives the
parameter gradient, on the backends' fast path (Goodfellow, Bengio & Courville, *Deep
Learning*, §18.3 and eq. 18.26).

The variants are evaluated in chunks of coordinates (every row and every alternative
value of a coordinate in one call of the model, as :class:`~ebm_ppl.samplers.Gibbs`
evaluates a coordinate's alternatives for all chains at once); the chunks run in one
``ops.fori_loop`` with a fixed shape, so a compiled update holds one copy of the model.

A latent site that is a layer of binary units summed out analytically
(:func:`~ebm_ppl.evaluation.analytic.sum_out`, as ``log_likelihood`` sums it out) makes
ld the free energy of the visible sites, log p̃(v) = log Σ_h p̃(v, h); its gradient is
E[∇θ log p̃(v, h) | v] = ∇θ log p̃(v, E[h | v]) where log p̃ is affine in h (checked with
fractional values of h, as the Rao-Blackwellized gradients of :mod:`ebm_ppl._rao_blackwell`
are), so ``weighted_param_grad`` runs at rows with h at its conditional mean. This is how
Marlin et al. (2010) trained RBMs by pseudo-likelihood and ratio matching.
"""

import math

import numpy as np

from .._one_hot import is_one_hot
from ..evaluation.analytic import sum_out, summable_sites
from ._common import check_int
from .base import Estimator, Step

__all__ = ["coordinate_sites", "summed_latent", "latent_plan", "coordinate_objective", "MAX_ELEMENTS"]

#: Site values (rows x per-row values of every site) per model call when ``chunk_size`` is None.
MAX_ELEMENTS = 2**23


def coordinate_sites(problem, owner, binary=False):
    """The observed sites, each discrete with a finite support (two values if ``binary``);
    otherwise ``NotImplementedError`` naming the site and its support."""
    sites = [s for s in problem.sites.values() if s.is_observed]
    for site in sites:
        if is_one_hot(site):
            raise NotImplementedError(f"{owner}: observed site {site.name!r} is one-hot ({site.support}); its "
                                      "coordinates are not free (one-hot groups are not supported)")
        if not site.is_discrete or site.values is None:
            kind = "continuous" if not site.is_discrete else "discrete with an infinite support"
            raise NotImplementedError(f"{owner}: observed site {site.name!r} has support {site.support} ({kind}); "
                                      f"{owner} needs discrete sites with a finite support")
        if binary and len(site.values) != 2:
            raise NotImplementedError(
                f"{owner}: observed site {site.name!r} has {len(site.values)} values ({site.support}); ratio "
                "matching flips binary coordinates (use PseudoLikelihood for sites with more values)")
    return [s for s in sites if len(s.values) > 1]  # a one-valued site's conditionals are 1


def summed_latent(problem, probe, owner):
    """``None`` for a model without latent sites, else ``(name, lo, hi)`` of its one latent
    site when it is a layer of binary units that can be summed out analytically and on
    which log p̃ is affine (fractional values included); otherwise ``NotImplementedError``
    naming the latent sites."""
    latent = list(problem.latent_names)
    if not latent:
        return None
    if len(latent) > 1:
        raise NotImplementedError(f"{owner}: the model has latent sites {latent}; only one latent site, a layer of "
                                  "binary units summed out analytically (an RBM's hidden layer), is supported")
    name = latent[0]
    if not summable_sites(problem, problem.info.init_params, probe(), names=[name], fractional=True):
        site = problem.sites[name]
        raise NotImplementedError(
            f"{owner}: latent site {name!r} ({site.support}) cannot be summed out: {owner} needs every latent site "
            "to be a layer of binary units, conditionally independent given the observed sites, on which log p̃ is "
            "affine (checked at random parameters and states, with fractional values too)")
    lo, hi = (float(v) for v in problem.sites[name].values)
    return name, lo, hi


def latent_plan(problem):
    """``(name, lo, hi)`` of the latent site to sum out, or None: what :func:`summed_latent`
    established when the fit was set up (it refuses every other latent structure)."""
    if not problem.latent_names:
        return None
    name = problem.latent_names[0]
    lo, hi = (float(v) for v in problem.sites[name].values)
    return name, lo, hi


def _marginal(problem, params, values, summed):
    """Per-row log p̃ of the observed values (the latent layer summed out) and the rows at
    which ∇θ of it is taken (the latent layer at its conditional mean)."""
    logdensity = problem.logdensity_fn(params)
    if summed is None:
        return logdensity(values), values
    ops, xp = problem.ops, problem.ops.xp
    name, lo, hi = summed
    site = problem.sites[name]
    like = next(iter(values.values()))
    placeholder = ops.zeros((like.shape[0],) + tuple(site.shape), site.dtype, like)
    ld, logits = sum_out(ops, {**values, name: placeholder}, name, lo, hi, logdensity)
    prob = xp.exp(-xp.logaddexp(logits * 0, -logits))  # sigmoid, stable for large |logits|
    return ld, {**values, name: lo + (hi - lo) * prob}


def _tree_add(a, b):
    if isinstance(a, dict):
        return {k: _tree_add(v, b[k]) for k, v in a.items()}
    if isinstance(a, (list, tuple)):
        return type(a)(*(_tree_add(x, y) for x, y in zip(a, b))) if hasattr(a, "_fields") else type(a)(
            _tree_add(x, y) for x, y in zip(a, b))
    return a + b


def _tree_zeros(a):
    if isinstance(a, dict):
        return {k: _tree_zeros(v) for k, v in a.items()}
    if isinstance(a, (list, tuple)):
        return type(a)(*(_tree_zeros(x) for x in a)) if hasattr(a, "_fields") else type(a)(
            _tree_zeros(x) for x in a)
    return a * 0


def _elements_per_row(values):
    return sum(math.prod(v.shape[1:]) for v in values.values())


def _chunk_coords(problem, site, num_rows, values, summed, chunk_size):
    """Coordinates of ``site`` per model call: every row and alternative of each."""
    per_coord = (len(site.values) - 1) * num_rows
    if chunk_size is None:
        per_row = _elements_per_row(values) + (math.prod(problem.sites[summed[0]].shape) if summed else 0)
        chunk_size = MAX_ELEMENTS // max(1, per_row)
    num_coords = math.prod(site.shape)
    return max(1, min(num_coords, chunk_size // per_coord))


def _variants(problem, values, site, flat, cur, idx):
    """``values`` tiled (K − 1) x m times, site ``site`` changed in coordinate ``idx[j]``
    to each of the K − 1 values it does not hold: rows ordered (alternative, j, row)."""
    ops, xp = problem.ops, problem.ops.xp
    num_rows, num_coords = flat.shape
    num_values, m = len(site.values), idx.shape[0]
    choices = ops.asarray(list(site.values), flat)
    offsets = ops.asarray(list(range(1, num_values)), flat, int_=True)
    alt = choices[(cur[:, idx].T[None] + offsets[:, None, None]) % num_values]  # (K-1, m, R)
    mask = ops.asarray(np.arange(num_coords), flat, int_=True)[None, :] == idx[:, None]  # (m, D)
    changed = xp.where(mask[None, :, None, :], alt[..., None], flat[None, None])  # (K-1, m, R, D)
    tiles = (num_values - 1) * m
    out = {}
    for name, v in values.items():
        if name == site.name:
            out[name] = changed.reshape((tiles * num_rows,) + tuple(v.shape[1:]))
        else:
            out[name] = xp.broadcast_to(v[None], (tiles,) + tuple(v.shape)).reshape(
                (tiles * num_rows,) + tuple(v.shape[1:]))
    return out


def _site_loop(problem, params, values, ld_x, summed, site, terms_fn, chunk_size):
    """``(grads, Σ loss terms, per-row weight of the batch rows)`` over the coordinates of
    ``site``, in chunks of a fixed number of coordinates (one ``fori_loop``)."""
    ops, xp, info = problem.ops, problem.ops.xp, problem.info
    x = values[site.name]
    num_rows, num_values = x.shape[0], len(site.values)
    flat = x.reshape((num_rows, -1))
    num_coords = flat.shape[1]
    choices = ops.asarray(list(site.values), flat)
    cur = xp.argmax(ops.astype(flat[..., None] == choices, ld_x.dtype), axis=-1)  # (R, D) value indices
    m = _chunk_coords(problem, site, num_rows, values, summed, chunk_size)
    arange = ops.asarray(np.arange(m), flat, int_=True)
    stopped = ops.stop_gradient(params)

    def body(i, carry):
        grads, loss, w_x = carry
        coord = i * m + arange
        valid = ops.astype(coord < num_coords, ld_x.dtype)  # the last chunk's surplus is masked out
        idx = xp.clip(coord, 0, num_coords - 1)
        with ops.no_grad():
            ld_alt, rows = _marginal(problem, stopped, _variants(problem, values, site, flat, cur, idx), summed)
        ld_alt = ld_alt.reshape((num_values - 1, m, num_rows))
        terms, w_alt, w_cur = terms_fn(ops, ld_x, ld_alt)
        w_alt = ops.stop_gradient(w_alt * valid[None, :, None] / num_rows)
        _, g = info.weighted_param_grad(params, rows, w_alt.reshape((-1,)))
        loss = loss + (terms * valid[:, None]).sum()
        w_x = w_x + (w_cur * valid[:, None]).sum(0)
        return _tree_add(grads, g), loss, w_x

    init = (_tree_zeros(stopped), ld_x.sum() * 0, ld_x * 0)
    return ops.fori_loop(0, -(-num_coords // m), body, init)


def coordinate_objective(problem, params, batch_values, summed, sites, terms_fn, chunk_size=None):
    """The mean over rows of Σ_coordinates of a term of each coordinate's variants.

    ``terms_fn(ops, ld_x, ld_alt)`` takes the rows' log densities ``(R,)`` and their
    variants' ``(K − 1, m, R)`` (m coordinates) and returns ``(terms, w_alt, w_x)``: each
    (coordinate, row)'s loss term ``(m, R)`` and its derivatives with respect to ``ld_alt``
    ``(K − 1, m, R)`` and to ``ld_x`` ``(m, R)``.

    Returns
    -------
    tuple
        ``(loss, grads, mean log p̃ of the batch)``: the loss averaged over rows, its
        gradient with respect to the unconstrained parameters.
    """
    ops, xp, info = problem.ops, problem.ops.xp, problem.info
    num_rows = next(iter(batch_values.values())).shape[0]
    with ops.no_grad():
        ld_x, rows_x = _marginal(problem, ops.stop_gradient(params), batch_values, summed)
    grads, loss, w_x = None, ld_x.sum() * 0, ld_x * 0
    for site in sites:
        g, site_loss, site_w = _site_loop(problem, params, batch_values, ld_x, summed, site, terms_fn, chunk_size)
        grads = g if grads is None else _tree_add(grads, g)
        loss, w_x = loss + site_loss, w_x + site_w
    _, g = info.weighted_param_grad(params, rows_x, ops.stop_gradient(w_x / num_rows))
    grads = g if grads is None else _tree_add(grads, g)
    return ops.stop_gradient(loss / num_rows), grads, xp.mean(ld_x)


class _CoordinateEstimator(Estimator):
    """What pseudo-likelihood and ratio matching share: no sampler, no chains, covariates
    supported, an optional ``chunk_size``, the same refusals (``binary``: every observed
    site must have two values), and a step that is :func:`coordinate_objective` with the
    subclass's ``terms`` (the per-coordinate loss terms and their weights)."""

    needs_sampler = False
    supports_covariates = True
    #: every observed site must be binary (ratio matching)
    binary = False

    def __init__(self, chunk_size=None):
        self.chunk_size = check_int(type(self).__name__, "chunk_size", chunk_size, allow_none=True)

    def __repr__(self):
        name = type(self).__name__
        return f"{name}()" if self.chunk_size is None else f"{name}(chunk_size={self.chunk_size})"

    def check(self, problem, probe):
        """Refuse observed sites without a finite discrete support (or, with ``binary``, not
        binary) and latent sites that cannot be summed out (``NotImplementedError`` naming
        the site)."""
        coordinate_sites(problem, type(self).__name__, binary=self.binary)
        summed_latent(problem, probe, type(self).__name__)

    def init(self, problem, rng_key, data_values, batch_size):
        """No state: ``()``."""
        return ()

    def terms(self, ops, ld_x, ld_alt):
        """The loss terms of one coordinate (see :func:`coordinate_objective`)."""
        raise NotImplementedError(f"{type(self).__name__}.terms")

    def step(self, rng_key, problem, state, params, batch_values, batch_index=None):
        """The batch's objective and its exact gradient."""
        sites = coordinate_sites(problem, type(self).__name__, binary=self.binary)
        loss, grads, pos = coordinate_objective(problem, params, batch_values, latent_plan(problem), sites,
                                                self.terms, self.chunk_size)
        return Step(state, loss, grads, {"positive_log_density": pos})

    def negative_chains(self, state):
        """No chains: ``{}``."""
        return {}
