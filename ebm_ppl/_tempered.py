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

from typing import NamedTuple

__all__ = ["Start", "BASE_START", "parts_fn", "tempered"]


class Start(NamedTuple):
    """The initial distribution p₀ of AIS: the sites' base distributions, with the binary
    observed sites in ``logits`` redrawn from a factorized base-rate distribution
    (Salakhutdinov & Murray 2008). See :func:`ebm_ppl.evaluation.ais.base_rate_start`.

    log p₀(x) = log base(x) + Σ_s [(x_s − lo_s) / (hi_s − lo_s)] · shift_s + const.
    """

    logits: dict  # site -> numpy logits of P(x_i = hi) under p₀
    shift: dict  # site -> numpy (logits − the base's own logits)
    const: float  # Σ softplus(base logits) − Σ softplus(logits)


BASE_START = Start({}, {}, 0.0)


def parts_fn(problem, params, start=BASE_START):
    """position -> (log p̃, log p₀) in sampler space (the Jacobians of continuous sites in both).

    p₀ is the sites' base measure, or with ``start`` a base-rate start
    (:func:`ebm_ppl.evaluation.ais.base_rate_start`) replacing binary observed sites' bases."""
    info, ops = problem.info, problem.ops
    shifts = {n: ops.from_numpy(d, problem.ops.asarray(0.0, None).dtype) for n, d in start.shift.items()}
    bounds = {n: tuple(float(v) for v in problem.sites[n].values) for n in start.shift}

    def parts(position):
        values, log_jac = problem.from_internal(position, with_jacobian=True)
        ld, lb = info.log_density_parts(params, values)
        for n, d in shifts.items():
            lo, hi = bounds[n]
            x = ops.astype(values[n], d.dtype)
            lb = lb + (((x - lo) / (hi - lo)).reshape((x.shape[0], -1)) * d).sum(-1)
        return ld + log_jac, lb + start.const + log_jac

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
