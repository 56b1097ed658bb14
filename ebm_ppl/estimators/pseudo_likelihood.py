"""Pseudo-likelihood: Σ_d log p(x_d | x_−d), each conditional exact, no partition function.

References
----------
Besag, J. (1975). Statistical analysis of non-lattice data. *The Statistician* 24(3).
Goodfellow, I., Bengio, Y. & Courville, A. (2016). *Deep Learning*, §18.3.
Marlin, B., Swersky, K., Chen, B. & de Freitas, N. (2010). Inductive principles for
restricted Boltzmann machine learning. *AISTATS*.
"""

from ._coordinates import _CoordinateEstimator

__all__ = ["PseudoLikelihood"]


def _terms(ops, ld_x, ld_alt):
    """−log p(x_d | x_−d) per (coordinate, row) and its derivatives: the conditional is a
    softmax over the coordinate's values, so ∂/∂ld(variant) = its probability and
    ∂/∂ld(x) = −(1 − p(x_d | x_−d))."""
    xp = ops.xp
    both = xp.concatenate([xp.broadcast_to(ld_x[None, None], (1,) + tuple(ld_alt.shape[1:])), ld_alt], axis=0)
    log_norm = ops.logsumexp(both, axis=0)  # (m, R)
    prob_alt = xp.exp(ld_alt - log_norm[None])
    return log_norm - ld_x[None], prob_alt, -prob_alt.sum(0)


class PseudoLikelihood(_CoordinateEstimator):
    """Maximum pseudo-likelihood (Besag 1975): the loss is minus the mean over the batch of
    Σ_d log p(x_d | x_−d), over every coordinate d of the observed discrete sites.

    Each conditional is exact: the log density is evaluated at the K − 1 other values of
    the coordinate (every row, and a chunk of coordinates, in one call of the model, as
    :class:`~ebm_ppl.samplers.Gibbs` evaluates them) and p(x_d | x_−d) is a softmax over
    the K values. The partition function never appears, so no sampler runs (the
    ``sampler`` argument of the fit is still checked). The estimator is consistent, and
    for a fully visible model its objective is concave in the natural parameters of an
    exponential family (an Ising model); it is not the maximum-likelihood estimate, and
    models whose conditionals are near-deterministic fit their conditionals well but their
    joint poorly (Goodfellow et al. §18.3).

    The reported ``loss`` is the batch's negative mean pseudo-log-likelihood, in nats per
    example (base measures cancel in the conditionals); ``positive_log_density`` is the
    batch's mean log p̃; there are no chains (``result.chains == {}``) and no
    ``negative_log_density`` (NaN).

    Parameters
    ----------
    chunk_size : int, optional
        The most rows (alternative states of the batch's rows) one call of the model
        evaluates; at least every row and alternative of one coordinate is evaluated at
        once. None: as many coordinates as keep a call within 2**23 site values. Results
        do not depend on it beyond float rounding.

    Notes
    -----
    Latent sites: where the model's one latent site is a layer of binary units that can
    be summed out analytically (an RBM's hidden layer; measured as ``log_likelihood``
    measures it, with fractional values too), the conditionals are those of the free
    energy log p̃(v) = log Σ_h p̃(v, h), and the gradient uses ∇θ log p̃(v) =
    ∇θ log p̃(v, E[h | v]), exact for a model affine in h: how Marlin et al. (2010)
    trained RBMs by pseudo-likelihood. Any other latent site is refused (naming it), as
    are observed sites that are continuous, discrete without a finite support, or one-hot.

    Conditional models (``covariates=``): the objective is Σ_d log p(y_d | y_−d, x), the
    inputs x carried with each row.

    With ``devices=`` (NumPyro) the batch's rows split over the devices; under
    ``torch.distributed`` each rank computes its share of the batch and the gradients are
    averaged (batch shares are equal, so the mean is the batch's).

    Examples
    --------
    >>> ebm_ppl.PseudoLikelihood()
    PseudoLikelihood()
    >>> result = ebm_ppl.fit_unnormalized(ising, data, estimator=ebm_ppl.PseudoLikelihood(),
    ...                                   num_steps=500)  # doctest: +SKIP

    References
    ----------
    Besag, J. (1975). Statistical analysis of non-lattice data. *The Statistician* 24(3).
    Goodfellow, I., Bengio, Y. & Courville, A. (2016). *Deep Learning*, §18.3.
    Marlin, B., Swersky, K., Chen, B. & de Freitas, N. (2010). Inductive principles for
    restricted Boltzmann machine learning. *AISTATS*.
    """

    terms = staticmethod(_terms)
