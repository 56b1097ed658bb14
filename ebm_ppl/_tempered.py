"""The geometric path between the base measure and the model, shared by AIS and PT.

    log p̃_β(x) = log p₀(x) + β (log p̃(x) − log p₀(x)),   β ∈ [0, 1],

where p₀ is the base measure (the log-probabilities of the sample sites, factors left
out). β = 0 is the base, β = 1 the model. Annealed importance sampling
(:mod:`ebm_ppl.evaluation.ais`) walks the path with one β at a time; parallel tempering
(:class:`ebm_ppl.PT`) holds replicas at every β of a ladder at once, one β per chain.

References
----------
Neal (2001), Annealed importance sampling. Desjardins, Courville, Bengio, Vincent &
Delalleau (2010), Tempered Markov chain Monte Carlo for training of restricted Boltzmann
machines.
"""

__all__ = ["parts_fn", "tempered"]


def parts_fn(problem, params):
    """position -> (log p̃, log p₀) in sampler space (the Jacobians of continuous sites in both)."""
    info = problem.info

    def parts(position):
        values, log_jac = problem.from_internal(position, with_jacobian=True)
        ld, lb = info.log_density_parts(params, values)
        return ld + log_jac, lb + log_jac

    return parts


def tempered(parts, beta, xp=None):
    """The log density at inverse temperature ``beta`` along the path.

    ``beta`` is a scalar or one β per chain (shape ``(num_chains,)``); in the second case a
    sampler that evaluates tiled copies of the chains (Gibbs: ``m * num_chains`` rows, copy
    after copy) gets β repeated to match (``xp`` is then the array namespace).
    """

    def logdensity(position):
        ld, lb = parts(position)
        b = beta
        if xp is not None and ld.shape[0] != beta.shape[0]:
            b = xp.concatenate([beta] * (ld.shape[0] // beta.shape[0]), axis=0)
        return lb + b * (ld - lb)

    return logdensity
