"""Rao-Blackwellized gradients: a layer of binary latent units replaced by its conditional mean.

For a latent site h of binary units (values {lo, hi}), conditionally independent given the
other sites x, on which log p̃ is affine, ∇θ log p̃(x, h) is affine in h too, so

    E[∇θ log p̃(x, h) | x] = ∇θ log p̃(x, E[h | x]),   E[h | x] = lo + (hi − lo) σ(logits),

with the logits of :func:`~ebm_ppl.evaluation.analytic.sum_out` (one gradient of log p̃
with respect to h). Using the conditional mean in place of a draw keeps each phase's
expected gradient and removes the variance of the draw: the "mean-field" statistics of
Hinton (2010), *A practical guide to training restricted Boltzmann machines*, §3, and of
scikit-learn's ``BernoulliRBM``. The structure (binary, conditionally independent, affine
on the whole segment [lo, hi]) is measured at the structure probes, as ``"auto"`` measures
blocks (:func:`~ebm_ppl.evaluation.analytic.summable_sites` with ``fractional=True``).
"""

from .evaluation.analytic import sum_out, summable_sites

__all__ = ["rao_blackwell_site", "conditional_means"]


def rao_blackwell_site(problem, estimator, probe):
    """``(name, lo, hi)`` of the latent site the estimator's gradients average over, or None
    when ``estimator.rao_blackwell`` is off; raises ``ValueError`` when it is on and no latent
    site qualifies (naming the latent sites and why)."""
    if not getattr(estimator, "rao_blackwell", False):
        return None
    owner = type(estimator).__name__
    latent = list(problem.latent_names)
    if not latent:
        raise ValueError(f"{owner}(rao_blackwell=True): the model has no latent site to average over (every "
                         "sample site is observed)")
    names = summable_sites(problem, problem.info.init_params, probe(), names=latent, fractional=True)
    if not names:
        raise ValueError(
            f"{owner}(rao_blackwell=True): no latent site of the model is a layer of binary units, conditionally "
            f"independent given the other sites, on which log p̃ is affine (checked at random parameters and "
            f"states, with fractional values too): latent sites {latent}. Use rao_blackwell=False")
    site = problem.sites[names[0]]
    lo, hi = (float(v) for v in site.values)
    return names[0], lo, hi


def conditional_means(problem, site, params, position):
    """``position`` (sampler space) with ``site = (name, lo, hi)`` at E[h | rest]."""
    name, lo, hi = site
    xp = problem.ops.xp
    _, logits = sum_out(problem.ops, position, name, lo, hi, problem.logdensity_fn(params))
    prob = xp.exp(-xp.logaddexp(logits * 0, -logits))  # sigmoid, stable for large |logits|
    return {**position, name: lo + (hi - lo) * prob}
