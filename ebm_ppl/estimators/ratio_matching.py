"""Ratio matching: Σ_d σ(log p̃(f(x, d)) − log p̃(x))² for binary coordinates, no partition function.

References
----------
Hyvärinen, A. (2007). Some extensions of score matching. *Computational Statistics & Data
Analysis* 51(5).
Goodfellow, I., Bengio, Y. & Courville, A. (2016). *Deep Learning*, §18.4, eq. 18.26.
Marlin, B., Swersky, K., Chen, B. & de Freitas, N. (2010). Inductive principles for
restricted Boltzmann machine learning. *AISTATS*.
"""

from ._coordinates import _CoordinateEstimator

__all__ = ["RatioMatching"]


def _terms(ops, ld_x, ld_alt):
    """(1 / (1 + p̃(x) / p̃(f(x, d))))² = σ(δ)², δ = ld(f(x, d)) − ld(x), per (coordinate,
    row), and its derivatives: dσ(δ)²/dδ = 2 σ(δ)² (1 − σ(δ)), with sign − for ld(x)."""
    xp = ops.xp
    delta = ld_alt[0] - ld_x[None]  # (m, R): one alternative per binary coordinate
    sig = xp.exp(-xp.logaddexp(delta * 0, -delta))  # σ(δ), stable for large |δ|
    slope = 2 * sig * sig * (1 - sig)
    return sig * sig, slope[None], -slope


class RatioMatching(_CoordinateEstimator):
    """Ratio matching (Hyvärinen 2007): minimizes the mean over the batch of
    Σ_d (1 / (1 + p̃(x) / p̃(f(x, d))))², f(x, d) being x with binary coordinate d
    flipped, over every coordinate of the observed sites (Goodfellow et al. eq. 18.26).

    Only ratios p̃(x) / p̃(f(x, d)) enter, so the partition function never appears and no
    sampler runs (the ``sampler`` argument of the fit is still checked). The flipped
    states of every row (and a chunk of coordinates) are evaluated in one call of the
    model. The estimator is consistent for binary data; like pseudo-likelihood it is not
    the maximum-likelihood estimate. Marlin et al. (2010) found it, on RBMs, behind
    pseudo-likelihood and stochastic maximum likelihood in log-likelihood but good at
    denoising.

    The reported ``loss`` is the objective above (mean over the batch, summed over
    coordinates; 0 is its infimum); ``positive_log_density`` is the batch's mean log p̃;
    there are no chains (``result.chains == {}``) and no ``negative_log_density`` (NaN).

    Parameters
    ----------
    chunk_size : int, optional
        The most rows (flipped states of the batch's rows) one call of the model
        evaluates; at least every row of one coordinate is evaluated at once. None: as
        many coordinates as keep a call within 2**23 site values.

    Notes
    -----
    Every observed site must be binary (two values); a site with more values, a
    continuous one and a one-hot one are refused, naming the site. Latent sites: where the
    model's one latent site is a layer of binary units that can be summed out analytically
    (an RBM's hidden layer), the ratios are those of the free energy
    log p̃(v) = log Σ_h p̃(v, h), and the gradient uses ∇θ log p̃(v) = ∇θ log p̃(v, E[h | v]),
    exact for a model affine in h (Marlin et al. 2010); any other latent site is refused.
    Conditional models (``covariates=``): the inputs are carried with each row.

    Examples
    --------
    >>> ebm_ppl.RatioMatching()
    RatioMatching()
    >>> result = ebm_ppl.fit_unnormalized(ising, data, estimator=ebm_ppl.RatioMatching(),
    ...                                   num_steps=500)  # doctest: +SKIP

    References
    ----------
    Hyvärinen, A. (2007). Some extensions of score matching. *Computational Statistics &
    Data Analysis* 51(5).
    Goodfellow, I., Bengio, Y. & Courville, A. (2016). *Deep Learning*, §18.4, eq. 18.26.
    Marlin, B., Swersky, K., Chen, B. & de Freitas, N. (2010). Inductive principles for
    restricted Boltzmann machine learning. *AISTATS*.
    """

    binary = True
    terms = staticmethod(_terms)
