"""Noise-contrastive estimation: logistic regression of the data against noise, log Z learned.

References
----------
Gutmann & Hyvärinen (2010), Noise-contrastive estimation: a new estimation principle for
unnormalized statistical models (AISTATS). Gutmann & Hyvärinen (2012), Noise-contrastive
estimation of unnormalized statistical models, with applications to natural image
statistics (JMLR 13). Goodfellow, Bengio & Courville, *Deep Learning*, §18.6.
"""

import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from .._registry import state_type
from ..samplers._numerics import Target
from .._problem import PROBE_SEED
from ..evaluation.analytic import sum_out, summable_sites
from .base import Estimator, Step

__all__ = ["NCE", "NCEState"]

# Safeguarded Newton iterations of the profile in log Z (each a few reductions over the rows).
_PROFILE_ITERS = 40


@state_type
class NCEState(NamedTuple):
    """State of :class:`NCE` between updates.

    Attributes
    ----------
    log_z : scalar array
        The learned log-normalizer of the last update (log_partition's convention: the base
        measures included); the next update's profile starts from it.
    """

    log_z: Any


class NCE(Estimator):
    """Noise-contrastive estimation (Gutmann & Hyvärinen 2010, 2012; Goodfellow et al. §18.6).

    Each update draws ``M`` noise rows from a distribution q for the batch's ``B`` rows and
    fits a logistic regression telling data from noise with the log-odds
    G(x) − log ν, G(x) = log p̃θ(x) − log Z − log q(x), ν = ``noise_ratio``; log Z is one
    more learned scalar. The loss, per data row, is

        −[ mean_data log σ(G − log ν) + ν · mean_noise log σ(−(G − log ν)) ],

    whose minimum over θ and log Z is at p_θ = p_data with log Z the log-normalizer of p̃θ
    (for any ν > 0, with q positive wherever the data are). The learned log Z is the
    log-normalizer only as far as the model can match the data: NCE normalizes the model
    through its fit (consistency assumes p_data in the model family; a misspecified model
    keeps a bias in log Z that more data and noise do not remove). ``M = max(1, round(ν · B))``
    (half rounds to even); when ν · B is not an integer the noise mean still estimates the
    noise expectation without bias and the loss keeps ν itself, so the objective is the
    one of ratio ν, estimated from ``M`` rows. The noise is redrawn at every update from
    the update's key (a resumed fit draws what the uninterrupted one draws).

    log Z is profiled, not stepped: for the current θ and the update's rows the loss is
    strictly convex in log Z (its second derivative is a sum of σ(·)σ(−·) terms), and each
    update minimizes it exactly (safeguarded Newton, from the last update's value) before
    the gradient in θ is taken. By the envelope theorem the θ-gradient of the profiled
    loss at the minimizing log Z is the joint gradient there, so this is joint
    optimization of (θ, log Z) with log Z always at its optimum: no second learning rate
    to tune, and ``history["log_z"]`` is at every update the NCE estimate of log Z(θ) for
    that update's rows. (With small batches the profile of each minibatch carries an
    O(1 / (B + M)) bias into the gradient, as any ratio of sample means does; the full
    batch, or larger batches and ν, make it negligible.)

    The gradient in θ is Σ_rows (∂loss/∂ log p̃(row)) ∇θ log p̃(row) with the weights
    −σ(log Z − a_i) / B on data rows and ν σ(b_j − log Z) / M on noise rows (a, b: G + log Z
    − log ν of each row), computed without gradient and applied in one
    ``weighted_param_grad`` call over data and noise rows.

    Parameters
    ----------
    noise : None, distribution, object or dict, optional
        ``None`` (default): the model's own base measure, the distributions of its observed
        sample sites (``x ~ Bernoulli(0.5)`` in the Ising model), drawn as the PCD
        ``init="base"`` chains are; then G = log p̃ − log Z − log base, the model's factors
        minus log Z. Refused (``ValueError`` naming the sites) where a base is improper
        (``ImproperUniform``), and (``NotImplementedError``) where it depends on the
        parameters (the noise must be fixed). Otherwise the noise distribution over the
        observed sites, on the fit's framework:

        - a Pyro (torch) / NumPyro distribution, for a model with one observed site, whose
          ``batch_shape + event_shape`` is the site's per-example shape (log-probabilities
          are summed over the batch dimensions: independent coordinates);
        - any object with ``sample`` and ``log_prob`` following the framework's
          distribution convention: NumPyro ``sample(key, (n,))`` with a JAX PRNG key,
          Pyro ``sample((n,))`` drawing from torch's global generator (ebm_ppl seeds it
          from the update's key inside ``torch.random.fork_rng``: the draws are
          reproducible and the caller's global stream is untouched), returning
          ``(n, *site shape)``; ``log_prob(x)`` returning ``(n,)`` (or ``(n, ...)``, summed);
        - a dict observed site name -> one of those, naming every observed site: the
          sites' noises are independent and log q is the sum of their ``log_prob``.

        ``log_prob`` is a normalized log density of the site's values (constrained space,
        the same reference measure as the model: counting for discrete sites), so that the
        learned log Z is log_partition's. The noise is checked when the fit starts, before
        anything changes (a trial draw: shapes, values in a discrete site's support,
        finite log-probabilities; ``ValueError`` naming ``noise``). A fit with a given
        noise object resumes exactly in the same process (``resume=result``); the object
        itself cannot be written by :func:`ebm_ppl.save` (``TypeError`` naming
        ``estimator settings['noise']``; with ``checkpoint_every`` the first checkpoint
        raises it), unlike ``noise=None``.
    noise_ratio : float
        ν, noise rows per data row (> 0, finite). Larger ν lowers the variance of the
        estimate towards that of maximum likelihood (Gutmann & Hyvärinen 2012, §2.4) at the
        cost of ν · B more model evaluations per update.

    Notes
    -----
    Latent sites: a layer of binary latent units on which log p̃ is affine (an RBM's hidden
    layer, measured as ``log_likelihood`` measures it) is summed out analytically: NCE
    then works on the free energy log p̃(v) = log Σ_h p̃(v, h), with the gradient
    ∇θ log p̃(v) = ∇θ log p̃(v, E[h | v]); with ``noise=None`` the noise is the observed
    sites' marginal base measure (h's base summed out too). Other latent sites (more than
    one latent site, continuous ones) are refused (``NotImplementedError`` naming them).
    Conditional models (``covariates=``) are refused. Under ``torch.distributed`` NCE is
    refused (each rank would profile log Z on its own rows); NumPyro ``devices=`` runs the
    same update as one device.

    ``history["log_z"]`` records the learned log Z per update, in :func:`ebm_ppl.log_partition`'s
    convention (log of ∫ p̃, the sites' base measures included), at the parameters
    before the update; ``positive_log_density`` and ``negative_log_density`` are the mean
    log p̃ of the data and of the noise rows; there are no chains (``result.chains == {}``).

    Examples
    --------
    >>> ebm_ppl.NCE(noise_ratio=4)
    NCE(noise_ratio=4.0)
    """

    needs_sampler = False
    history_names = ("log_z",)
    supports_covariates = False

    def __init__(self, noise=None, noise_ratio=1.0):
        self.noise = _check_noise(noise)
        self.noise_ratio = _check_ratio(noise_ratio)

    def __repr__(self):
        noise = "" if self.noise is None else f"noise={self.noise!r}, "
        return f"NCE({noise}noise_ratio={self.noise_ratio!r})"

    def num_noise(self, batch_size):
        """Noise rows drawn for a batch of ``batch_size`` rows: ``max(1, round(ν · batch_size))``."""
        return max(1, int(round(self.noise_ratio * batch_size)))

    def check(self, problem, probe):
        """Refuse what NCE cannot fit, before anything changes: torch.distributed, latent
        sites other than one summable binary layer, an improper or θ-dependent base with
        ``noise=None``, a given noise that does not fit the observed sites."""
        if getattr(problem.ops.placement, "kind", None) == "ranks":
            raise NotImplementedError("NCE under torch.distributed: log Z is profiled over the whole batch and its "
                                      "noise; run NCE on one process")
        _check_latent(problem, probe)
        if self.noise is None:
            _check_base(problem, probe)
        else:
            _check_given_noise(problem, self.noise)

    def init(self, problem, rng_key, data_values, batch_size):
        like = next(iter(data_values.values()))
        return NCEState(problem.ops.astype(problem.ops.asarray(0.0, like), problem.ops.asarray(0.0, None).dtype))

    def negative_chains(self, state):
        return {}

    def step(self, rng_key, problem, state, params, batch_values, batch_index=None):
        """One update: draw noise, profile log Z, weight the rows, one weighted gradient."""
        ops, xp = problem.ops, problem.ops.xp
        num_data = int(next(iter(batch_values.values())).shape[0])
        num_noise = self.num_noise(num_data)
        with ops.no_grad():
            noise = self._draw(problem, rng_key, num_noise)
            rows = {k: xp.concatenate([batch_values[k], noise[k]], axis=0) for k in batch_values}
            ld, log_q, grad_rows = self._log_densities(problem, ops.stop_gradient(params), rows)
            g = ld - log_q - math.log(self.noise_ratio)
            a, b = g[:num_data], g[num_data:]
            start = ops.astype(state.log_z, g.dtype)
            log_z = _profile_log_z(ops, a, b, self.noise_ratio, start)
            loss = -(xp.mean(_log_sigmoid(xp, a - log_z)) + self.noise_ratio * xp.mean(_log_sigmoid(xp, log_z - b)))
            weights = xp.concatenate([-_sigmoid(xp, log_z - a) / num_data,
                                      self.noise_ratio * _sigmoid(xp, b - log_z) / num_noise])
        _, grads = problem.info.weighted_param_grad(params, grad_rows, ops.stop_gradient(weights))
        stats = {"positive_log_density": xp.mean(ld[:num_data]), "negative_log_density": xp.mean(ld[num_data:]),
                 "log_z": log_z}
        return Step(NCEState(ops.astype(log_z, state.log_z.dtype)), loss, grads, stats)

    def _draw(self, problem, rng_key, num_noise):
        """The update's noise rows (constrained values of the observed sites)."""
        ops = problem.ops
        observed = [n for n, s in problem.sites.items() if s.is_observed]
        if self.noise is None:
            drawn = problem.info.sample_base(rng_key, num_noise)
            noise = {n: drawn[n] for n in observed}
        else:
            given = self.noise if isinstance(self.noise, dict) else {observed[0]: self.noise}
            keys = ops.split(rng_key, len(observed))
            noise = {n: ops.astype(_sample(ops, given[n], key, num_noise), problem.sites[n].dtype)
                     for n, key in zip(observed, keys)}
        shards = getattr(ops.placement, "num_shards", 1) if ops.placement is not None else 1
        return ops.shard_rows(noise) if num_noise % shards == 0 else noise

    def _log_densities(self, problem, params, rows):
        """``(log p̃, log q, rows for the gradient)`` at ``rows`` (observed sites; a binary
        latent layer summed out, the gradient rows then carry its conditional mean)."""
        info, xp = problem.info, problem.ops.xp
        if not problem.latent_names:
            if self.noise is None:
                ld, log_q = info.log_density_parts(params, rows)
                return ld, log_q, rows
            return info.log_density(params, rows), _given_log_prob(problem, self.noise, rows), rows
        name = problem.latent_names[0]
        lo, hi = (float(v) for v in problem.sites[name].values)
        ld, logits, values = _free_energy(problem, params, rows, name, lo, hi)
        if self.noise is None:
            log_q = sum_out(problem.ops, values, name, lo, hi, _base_fn(problem, params))[0]
        else:
            log_q = _given_log_prob(problem, self.noise, rows)
        prob = xp.exp(-xp.logaddexp(logits * 0, -logits))  # sigmoid, stable for large |logits|
        return ld, log_q, {**values, name: lo + (hi - lo) * prob}


# ---- the profile in log Z

def _sigmoid(xp, z):
    return 0.5 * (1.0 + xp.tanh(0.5 * z))


def _log_sigmoid(xp, z):
    return -xp.logaddexp(z * 0, -z)


def _profile_log_z(ops, a, b, nu, start):
    """argmin_c −[mean log σ(a − c) + ν mean log σ(c − b)]: the root of the increasing
    f(c) = mean σ(c − a) − ν mean σ(b − c) (from −ν to 1), by Newton's method from
    ``start`` kept inside a bracket that every iteration shrinks (a bisection where the
    Newton step leaves it or would not halve it). The bracket [min − pad, max + pad],
    pad = 1 + |log ν|, holds the root: f < 0 below it and f > 0 above it."""
    xp = ops.xp
    pad = 1.0 + abs(math.log(nu))
    both = xp.concatenate([a, b])
    finite = xp.isfinite(both)
    lo = xp.min(xp.where(finite, both, both * 0 + np.inf)) - pad
    hi = xp.max(xp.where(finite, both, both * 0 - np.inf)) + pad
    c = xp.minimum(xp.maximum(start, lo), hi)

    def body(i, carry):
        c, lo, hi, _ = carry
        s_data, s_noise = _sigmoid(xp, c - a), _sigmoid(xp, b - c)
        f = xp.mean(s_data) - nu * xp.mean(s_noise)
        slope = xp.mean(s_data * (1.0 - s_data)) + nu * xp.mean(s_noise * (1.0 - s_noise))
        width = hi - lo
        lo, hi = xp.where(f <= 0, c, lo), xp.where(f >= 0, c, hi)
        new = c - f / slope
        newton = (new >= lo) & (new <= hi) & (xp.abs(new - c) <= 0.5 * width)
        new = xp.where(newton, new, 0.5 * (lo + hi))
        return new, lo, hi, xp.abs(new - c)

    carry = (c, lo, hi, hi - lo)
    if ops.caches_compiled:  # compiled (JAX): a fixed number of iterations
        return ops.fori_loop(0, _PROFILE_ITERS, body, carry)[0]
    for i in range(_PROFILE_ITERS):  # eager (PyTorch): until the step is at float resolution
        carry = body(i, carry)
        if float(carry[3]) <= 4 * np.finfo(ops.to_numpy(carry[0]).dtype).eps * (1.0 + abs(float(carry[0]))):
            break
    return carry[0]


# ---- log densities

def _free_energy(problem, params, rows, name, lo, hi):
    """``(log Σ_h p̃(v, h), logits of h | v, values)`` in constrained space (no Jacobian)."""
    info, ops = problem.info, problem.ops
    first = next(iter(rows.values()))
    site = problem.sites[name]
    values = {**rows, name: ops.zeros((first.shape[0],) + tuple(site.shape), ops.asarray(0.0, None).dtype, first)}

    log_density = Target(lambda values: info.log_density(params, values),
                         lambda values, names, value=True: info.log_density_grad(params, values, names, value=value))
    ld, logits = sum_out(ops, values, name, lo, hi, log_density)
    return ld, logits, values


def _base_fn(problem, params):
    """log base(values) per row (constrained values): the sample sites' log-probabilities."""
    return lambda values: problem.info.log_density_parts(params, values)[1]


def _given_log_prob(problem, noise, rows):
    """log q of ``rows`` under the given noise: the sum over the observed sites."""
    observed = [n for n, s in problem.sites.items() if s.is_observed]
    given = noise if isinstance(noise, dict) else {observed[0]: noise}
    total = 0.0
    for name in observed:
        lp = given[name].log_prob(rows[name])
        total = total + lp.reshape((lp.shape[0], -1)).sum(-1)
    return total


def _sample(ops, dist, key, num):
    """``num`` draws of ``dist`` with the framework's calling convention (see :class:`NCE`)."""
    return ops.sample_distribution(dist, key, num)


# ---- checks

def _is_noise(x):
    return callable(getattr(x, "sample", None)) and callable(getattr(x, "log_prob", None))


def _check_noise(noise):
    if noise is None or _is_noise(noise):
        return noise
    if isinstance(noise, dict) and noise and all(isinstance(k, str) and _is_noise(v) for k, v in noise.items()):
        return dict(noise)
    raise ValueError("NCE: noise must be None (the model's base measure), a Pyro/NumPyro distribution or an object "
                     "with sample and log_prob, or a dict observed site name -> one of those, got "
                     f"{noise!r}")


def _check_ratio(noise_ratio):
    if isinstance(noise_ratio, (bool, np.bool_)) or not isinstance(noise_ratio, numbers.Real) \
            or not math.isfinite(float(noise_ratio)) or float(noise_ratio) <= 0:
        raise ValueError(f"NCE: noise_ratio must be a finite number > 0, got {noise_ratio!r}")
    return float(noise_ratio)


def _check_latent(problem, probe):
    """At most one latent site, a binary layer that sums out as log_likelihood sums it out."""
    latent = list(problem.latent_names)
    if not latent:
        return
    summable = summable_sites(problem, problem.info.init_params, probe(), names=latent, fractional=True)
    refused = [n for n in latent if n not in summable[:1]]
    if len(latent) == 1 and not refused:
        return
    desc = ", ".join(f"{n!r} (support {problem.sites[n].support})" for n in (refused or latent))
    raise NotImplementedError(
        f"NCE with latent site(s) {desc}: NCE needs log p̃ of the observed sites alone, which it has where one "
        "latent site is a layer of binary units, conditionally independent given the rest, on which log p̃ is "
        "affine (summed out analytically, as log_likelihood does); marginalize the other latent sites in the "
        "model, or fit it with an MCMC estimator (PCD)")


def _check_base(problem, probe):
    """``noise=None``: every site's base proper, the same at every θ (and, with a latent
    layer, summable so that the observed sites' marginal base is exact)."""
    info, ops = problem.info, problem.ops
    improper = [n for n in info.improper_sites]
    if improper:
        raise ValueError(f"NCE(noise=None) draws its noise from the model's base measure, but site(s) {improper} "
                         "have an improper base distribution (e.g. ImproperUniform): pass noise=, a proper "
                         "distribution over the observed sites")
    probes = probe()
    with ops.no_grad():
        for p, position in zip(probes.params, probes.positions):
            values = problem.from_internal(position)
            at_p = ops.to_numpy(info.log_density_parts(p, values)[1]).astype(np.float64)
            at_init = ops.to_numpy(info.log_density_parts(info.init_params, values)[1]).astype(np.float64)
            if not np.allclose(at_p, at_init, rtol=1e-5, atol=1e-5 * (1 + np.abs(at_init).max())):
                raise NotImplementedError(
                    "NCE(noise=None): the base measure (the sample sites' own distributions) depends on the "
                    "parameters, and NCE's noise must be fixed: pass noise=, a fixed distribution over the "
                    "observed sites")
    latent = list(problem.latent_names)
    if latent and not summable_sites(problem, info.init_params, probes, names=latent, tag="nce_log_base",
                                     logdensity_of=lambda p: (lambda pos: _base_fn(problem, p)(
                                         problem.from_internal(pos)))):
        raise NotImplementedError(
            f"NCE(noise=None) with latent site {latent[0]!r}: its base distribution is not a product of "
            "independent two-valued coordinates, so the observed sites' marginal base is not summed out exactly: "
            "pass noise=, a distribution over the observed sites")


def _check_given_noise(problem, noise):
    """A trial draw of 2 rows from a fixed key: one distribution per observed site, the
    framework's arrays of the site's shape, values in a discrete site's support, finite
    log-probabilities of shape (2,)."""
    ops = problem.ops
    observed = [n for n, s in problem.sites.items() if s.is_observed]
    if isinstance(noise, dict):
        if sorted(noise) != sorted(observed):
            raise ValueError(f"NCE: noise names the sites {sorted(noise)}, but the model's observed sites are "
                             f"{sorted(observed)}: give one noise distribution for each")
    elif len(observed) > 1:
        raise ValueError(f"NCE: the model has {len(observed)} observed sites {observed}: pass noise as a dict "
                         "site name -> distribution")
    given = noise if isinstance(noise, dict) else {observed[0]: noise}
    like = ops.first_leaf(problem.info.init_params) if problem.info.init_params else ops.asarray(0.0, None)
    for name in observed:
        site = problem.sites[name]
        try:
            with ops.no_grad():
                x = _sample(ops, given[name], ops.seed(PROBE_SEED, like), 2)
                lp = given[name].log_prob(x)
            x_np, lp_np = ops.to_numpy(x), ops.to_numpy(lp)
        except Exception as e:
            raise ValueError(f"NCE: noise for site {name!r} cannot be drawn on the {ops.name} backend "
                             f"({type(e).__name__}: {e}); see NCE's docstring for what noise takes") from e
        _check_draw(name, site, x_np, lp_np)


def _check_draw(name, site, x, lp):
    where = f"NCE: noise for site {name!r}"
    if tuple(x.shape) != (2,) + tuple(site.shape):
        raise ValueError(f"{where}: 2 draws have shape {tuple(x.shape)}, expected {(2,) + tuple(site.shape)} "
                         f"(the draws, then the site's shape {tuple(site.shape)})")
    if lp.ndim < 1 or lp.shape[0] != 2:
        raise ValueError(f"{where}: log_prob of 2 draws has shape {tuple(lp.shape)}, expected (2,)")
    if site.is_discrete and site.values is not None and not np.isin(x, np.asarray(site.values)).all():
        raise ValueError(f"{where}: draws {np.unique(x)[:8].tolist()} outside the site's support {site.support}")
    if not np.isfinite(lp.astype(np.float64)).all():
        raise ValueError(f"{where}: log_prob of its own draws is not finite")
