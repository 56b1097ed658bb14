"""Score matching: fitting ∇ₓ log p̃ to the data, with no partition function and no sampler.

The score ∇ₓ log p(x) = ∇ₓ log p̃(x) does not depend on Z(θ), and the Fisher divergence
½ E‖∇ₓ log p̃(x) − ∇ₓ log p_data(x)‖² is, up to a constant, Hyvärinen's objective
E[½‖∇ₓ log p̃(x)‖² + tr ∇²ₓ log p̃(x)] (integration by parts; Goodfellow, Bengio &
Courville, *Deep Learning*, §18.4). Its θ-gradient is a gradient of a function of
∇ₓ log p̃: second-order automatic differentiation, through the backend's
``ops.value_and_grad(..., differentiable=True)`` (JAX transformations of the pure log
density; PyTorch autograd with ``create_graph=True`` through the model run).

References
----------
Hyvärinen (2005), Estimation of non-normalized statistical models by score matching.
Song, Garg, Shi & Ermon (2019), Sliced score matching: a scalable approach to density and
score estimation.
Vincent (2011), A connection between score matching and denoising autoencoders.
"""

import numpy as np

from ..samplers._numerics import check_number, per_chain_sum
from ._common import check_int, check_positive_args, positive_repr
from .base import Estimator, Step

__all__ = ["ScoreMatching"]

METHODS = ("exact", "sliced", "denoising")


class ScoreMatching(Estimator):
    """Score matching (Hyvärinen 2005) and its sliced (Song et al. 2019) and denoising
    (Vincent 2011) forms, for models whose sites are all observed, continuous, with real
    support.

    Each update minimizes the mean over the batch's rows of, with s(x) = ∇ₓ log p̃(x) over
    every coordinate of the observed sites:

    - ``"exact"``: ½‖s(x)‖² + tr ∇ₓ s(x). Its minimizer is consistent for the data
      distribution in the model family (for a Gaussian energy, the sample mean and the
      inverse of the sample covariance). The trace takes D Hessian-vector products with
      the coordinate vectors (D the number of coordinates), computed at once on D copies of
      the batch: an update costs about D gradient evaluations, fine for the small D this is
      used with; prefer ``"sliced"`` when D is large.
    - ``"sliced"``: ½‖s(x)‖² + vᵀ ∇ₓ s(x) v, averaged over ``num_projections`` directions
      v ~ N(0, I) drawn for every row and update (the variance-reduced form SSM-VR of Song
      et al., exact in expectation since E[(vᵀs)²] = ‖s‖²): an unbiased estimate of the
      exact objective at the cost of ``num_projections`` Hessian-vector products.
    - ``"denoising"``: ½‖s(x̃) + (x̃ − x) / σ²‖² at x̃ = x + σε, ε ~ N(0, I) drawn for every
      row and update, σ = ``noise_scale``: no second derivative in x. Its minimizer is the
      model of the data convolved with N(0, σ²I), not of the data (for a Gaussian energy the
      precision (S + σ²I)⁻¹, S the sample covariance): a small σ is close to the data and
      noisier to fit.

    The loss in ``history["loss"]`` is this objective (not a log-likelihood), and
    ``history["positive_log_density"]`` the batch's mean log p̃ (at the clean rows); no
    chains are kept (``result.chains`` is empty). Random directions and noise are drawn from
    the update's key, so a resumed fit continues exactly.

    Parameters
    ----------
    method : {"exact", "sliced", "denoising"}
    noise_scale : float
        σ of ``"denoising"`` (> 0; checked whatever the method).
    num_projections : int
        Random directions per row and update of ``"sliced"`` (>= 1).
    positive, positive_steps
        Every estimator's options for latent sites (checked as theirs are); score matching
        refuses latent sites, so they change nothing here.

    Notes
    -----
    Sites: every site must be observed (a latent site is refused, naming it: p̃(x) would be
    a marginal over it) and continuous with real support (``constraints.real`` /
    ``real_vector``, e.g. an ``ImproperUniform`` or ``Normal`` base); a discrete site or one
    with another support (positive, an interval) is refused at set-up, naming the site and
    its support (score matching in unconstrained coordinates would fit another density,
    the data's image with its Jacobian). Conditional models (``covariates=``) are
    supported: the score of p̃(y | x) with respect to y does not involve Z(x), so the
    objective is the same, each row's inputs held fixed.

    Examples
    --------
    >>> ebm_ppl.ScoreMatching(method="sliced", num_projections=4)
    ScoreMatching(method='sliced', num_projections=4)
    """

    needs_sampler = False
    supports_covariates = True

    def __init__(self, method="exact", noise_scale=0.1, num_projections=1, positive="base", positive_steps=None):
        if not isinstance(method, str) or method not in METHODS:
            raise ValueError(f"ScoreMatching: method must be one of {METHODS}, got {method!r}")
        self.method = method
        self.noise_scale = check_number("ScoreMatching", "noise_scale", noise_scale)
        self.num_projections = check_int("ScoreMatching", "num_projections", num_projections)
        self.positive, self.positive_steps = check_positive_args("ScoreMatching", positive, positive_steps)

    def __repr__(self):
        extra = {"sliced": f", num_projections={self.num_projections}",
                 "denoising": f", noise_scale={self.noise_scale:g}"}.get(self.method, "")
        return f"ScoreMatching(method={self.method!r}{extra}{positive_repr(self)})"

    def check(self, problem, probe):
        """Refuse latent sites, discrete sites and supports other than the real line,
        naming the site (``NotImplementedError``), before anything changes."""
        for name, site in problem.sites.items():
            if not site.is_observed:
                raise NotImplementedError(
                    f"ScoreMatching: latent site {name!r}: score matching needs every site observed (the score of "
                    "a marginal over latent sites is not computed); fit this model with PCD or CD")
            if site.is_discrete:
                raise NotImplementedError(
                    f"ScoreMatching: site {name!r} is discrete (support {site.support}): score matching needs "
                    "continuous sites with real support; fit this model with PCD or CD")
            if not (site.transform is None or getattr(site.transform, "is_identity", False)):
                raise NotImplementedError(
                    f"ScoreMatching: site {name!r} has support {site.support}, not the real line: score matching "
                    "needs continuous sites with real support (constraints.real / real_vector)")

    def init(self, problem, rng_key, data_values, batch_size):
        """No state: ``()``."""
        return ()

    def negative_chains(self, state):
        """No chains: ``{}``."""
        return {}

    def step(self, rng_key, problem, state, params, batch_values, batch_index=None):
        """The mean objective over the batch and its θ-gradient (see the class docstring)."""
        ops = problem.ops
        names = tuple(problem.sites)
        num_rows = next(iter(batch_values.values())).shape[0]
        rows_fn, clean = {"exact": _exact_rows, "sliced": _sliced_rows, "denoising": _denoising_rows}[self.method](
            self, problem, rng_key, batch_values, names, num_rows)

        def objective(p):
            rows, ld = rows_fn(p)
            return ops.xp.mean(rows), ld

        (loss, ld), grads = ops.value_and_grad(objective, has_aux=True)(params)
        if clean:  # the denoising rows' log density is at x̃: the batch's own, without gradient
            with ops.no_grad():
                ld = problem.info.log_density(ops.stop_gradient(params), batch_values)
        return Step(state, loss, grads, {"positive_log_density": ops.xp.mean(ld)})


def _score(problem, params, values, names):
    """(log p̃ per row, {site: ∇ₓ log p̃}), both differentiable with respect to ``params``
    and to ``values`` (rows are independent: the gradient of the sum is each row's)."""
    info = problem.info

    def total(u):
        ld = info.log_density(params, {**values, **u})
        return ld.sum(), ld

    (_, ld), grads = problem.ops.value_and_grad(total, has_aux=True, differentiable=True)(
        {n: values[n] for n in names})
    return ld, grads


def _projected_rows(problem, params, values, names, directions):
    """(log p̃, ½‖s‖², vᵀ ∇ₓ s v) per row, v = ``directions`` (site -> array like the values):
    one gradient of s · v, differentiable with respect to ``params``."""
    def projected(u):
        ld, s = _score(problem, params, {**values, **u}, names)
        return sum((s[n] * directions[n]).sum() for n in names), (ld, s)

    (_, (ld, s)), g = problem.ops.value_and_grad(projected, has_aux=True, differentiable=True)(
        {n: values[n] for n in names})
    ops = problem.ops
    half_sq = 0.5 * per_chain_sum(ops, {n: s[n] ** 2 for n in names})
    return ld, half_sq, per_chain_sum(ops, {n: g[n] * directions[n] for n in names})


def _tiled(xp, values, copies):
    return values if copies == 1 else {k: xp.concatenate([v] * copies, axis=0) for k, v in values.items()}


def _exact_rows(est, problem, rng_key, values, names, num_rows):
    """Hyvärinen's rows: the Hessian's trace from the D coordinate vectors, one per copy of the rows."""
    ops, xp = problem.ops, problem.ops.xp
    shapes = {n: tuple(problem.sites[n].shape) for n in names}
    sizes = [int(np.prod(shapes[n], dtype=np.int64)) for n in names]
    dim = sum(sizes)
    like = values[names[0]]
    # row j * num_rows + r of the tiled batch takes the direction e_j
    basis = ops.from_numpy(np.eye(dim), like.dtype, like)[:, None, :] + ops.zeros((1, num_rows, 1), like.dtype, like)
    basis = basis.reshape((dim * num_rows, dim))
    offsets = np.cumsum([0] + sizes)
    directions = {n: basis[:, offsets[i]:offsets[i + 1]].reshape((dim * num_rows,) + shapes[n])
                  for i, n in enumerate(names)}
    tiled = _tiled(xp, values, dim)

    def rows(p):
        ld, half_sq, vhv = _projected_rows(problem, p, tiled, names, directions)
        return half_sq[:num_rows] + vhv.reshape((dim, num_rows)).sum(0), ld[:num_rows]

    return rows, False


def _sliced_rows(est, problem, rng_key, values, names, num_rows):
    """SSM-VR's rows: ``num_projections`` Gaussian directions per row, one per copy of the rows."""
    ops, xp = problem.ops, problem.ops.xp
    copies = est.num_projections
    tiled = _tiled(xp, values, copies)
    keys = ops.split(rng_key, len(names))
    directions = {n: ops.normal(k, tuple(tiled[n].shape), tiled[n]) for n, k in zip(names, keys)}

    def rows(p):
        ld, half_sq, vhv = _projected_rows(problem, p, tiled, names, directions)
        return (half_sq + vhv).reshape((copies, num_rows)).mean(0), ld[:num_rows]

    return rows, False


def _denoising_rows(est, problem, rng_key, values, names, num_rows):
    """Vincent's rows: ½‖s(x̃) + ε/σ‖² at x̃ = x + σε (so (x̃ − x)/σ² = ε/σ)."""
    ops = problem.ops
    sigma = est.noise_scale
    keys = ops.split(rng_key, len(names))
    eps = {n: ops.normal(k, tuple(values[n].shape), values[n]) for n, k in zip(names, keys)}
    noisy = {**values, **{n: values[n] + sigma * eps[n] for n in names}}

    def rows(p):
        ld, s = _score(problem, p, noisy, names)
        return 0.5 * per_chain_sum(ops, {n: (s[n] + eps[n] / sigma) ** 2 for n in names}), ld

    return rows, True
