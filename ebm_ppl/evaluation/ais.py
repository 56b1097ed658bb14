"""Annealed importance sampling (AIS) for log Z, written once over the backend ops.

The chains start at the sites' base distributions p₀ (the product of the sample sites'
own distributions, normalized) and anneal along the geometric path

    log f_β(x) = (1 − β) log p₀(x) + β log p̃(x) = log p₀(x) + β (log p̃(x) − log p₀(x)),

with one transition of the chosen sampler leaving f_β invariant at each intermediate
temperature. Each chain's log weight is Σ_t (β_t − β_{t−1}) (log p̃ − log p₀)(x_{t−1}), so
Z = E[w] (Z₀ = 1) and log Ẑ = log mean w. The standard error of log Ẑ is the delta-method
one, sd(w) / (√n mean(w)), computed from the weights scaled by their maximum.

On NumPyro the whole annealing loop is one jitted ``fori_loop``; on PyTorch it is a plain
loop under ``torch.no_grad``.

References
----------
Neal, R. M. (2001). Annealed importance sampling. *Statistics and Computing* 11, 125–139.
Salakhutdinov, R. & Murray, I. (2008). On the quantitative analysis of deep belief
networks. *ICML*.
Grosse, R., Maddison, C. & Salakhutdinov, R. (2013). Annealing between distributions by
averaging moments. *NIPS* (the sigmoid schedule).
"""

import numpy as np

from .._tempered import parts_fn as _parts_fn
from .._tempered import tempered as _tempered

__all__ = ["SCHEDULES", "temperature_schedule", "ais_log_weights", "log_mean_exp_with_stderr"]

SCHEDULES = ("sigmoid", "linear", "geometric")


def temperature_schedule(schedule, num_temperatures):
    """Inverse temperatures β₀ = 0 < … < β_K = 1 as a float64 array of length K + 1.

    ``schedule`` is ``"sigmoid"`` (Grosse et al. 2013, δ = 4: dense at both ends),
    ``"linear"``, ``"geometric"`` (ratios constant from 1e-4 to 1, dense near β = 0), or an
    explicit increasing sequence from 0 to 1 (then ``num_temperatures`` is ignored).
    """
    if not isinstance(schedule, str):
        betas = np.asarray(schedule, dtype=np.float64)
        if (betas.ndim != 1 or betas.size < 2 or betas[0] != 0.0 or betas[-1] != 1.0
                or np.any(np.diff(betas) < 0)):
            raise ValueError("schedule: an explicit schedule must be a 1-D nondecreasing sequence "
                             "of inverse temperatures from 0.0 to 1.0")
        return betas
    k = num_temperatures
    if schedule == "linear":
        return np.linspace(0.0, 1.0, k + 1)
    if schedule == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-4.0 * (2.0 * np.arange(k + 1) / k - 1.0)))
        return (s - s[0]) / (s[-1] - s[0])
    if schedule == "geometric":
        return np.concatenate([[0.0], np.geomspace(1e-4, 1.0, k)]) if k > 1 else np.array([0.0, 1.0])
    raise ValueError(f"schedule={schedule!r} is not one of {SCHEDULES} or an array of inverse temperatures")


def _make_annealer(problem, kernel, num_steps):
    """``run(params, rng_key, position, aux, betas) -> log weights`` (num_steps = K)."""
    ops = problem.ops

    def run(params, rng_key, position, aux, betas):
        parts = _parts_fn(problem, params)

        def body(t, carry):
            position, aux, key, log_w = carry
            ld, lb = parts(position)
            log_w = log_w + (betas[t] - betas[t - 1]) * (ld - lb)
            key, sub = ops.split(key, 2)
            position, aux, _ = kernel.step(sub, position, aux, _tempered(parts, betas[t]))
            return position, aux, key, log_w

        ld, lb = parts(position)
        carry = (position, aux, rng_key, 0.0 * ld)
        position, aux, _, log_w = ops.fori_loop(1, num_steps, body, carry)
        ld, lb = parts(position)  # the last step needs no transition at β_K = 1
        return log_w + (betas[num_steps] - betas[num_steps - 1]) * (ld - lb)

    return run


def ais_log_weights(problem, kernel, rng_key, params, betas, num_chains):
    """The AIS log weights of ``num_chains`` chains (numpy float64, shape ``(num_chains,)``).

    ``params`` are unconstrained; ``betas`` is a float64 numpy schedule from 0 to 1.
    """
    ops, info = problem.ops, problem.info
    if info.improper_sites:
        raise ValueError(
            f"log_partition(method='ais'): the base distribution of site(s) {list(info.improper_sites)} "
            "is improper (e.g. ImproperUniform), so AIS has no normalized distribution to start "
            "from; give those sites a proper distribution in the model (the factors stay as they are)"
        )
    key_init, key_run = ops.split(rng_key, 2)
    with ops.no_grad():
        position = problem.to_internal(info.sample_base(key_init, num_chains))
        aux = kernel.init(position)
        like = ops.stop_gradient(_parts_fn(problem, params)(position)[0])
        betas_arr = ops.from_numpy(betas, like.dtype, like)
        run = ops.jit(_make_annealer(problem, kernel, len(betas) - 1))
        log_w = run(params, key_run, position, aux, betas_arr)
    return np.asarray(ops.to_numpy(log_w), dtype=np.float64)


def log_mean_exp_with_stderr(log_w):
    """log mean w and its delta-method standard error sd(w) / (√n mean(w))."""
    log_w = np.asarray(log_w, dtype=np.float64)
    if not np.all(np.isfinite(log_w)):
        raise FloatingPointError(
            f"AIS produced {int(np.sum(~np.isfinite(log_w)))} non-finite log weights out of {log_w.size}"
        )
    m = log_w.max()
    w = np.exp(log_w - m)
    estimate = float(m + np.log(w.mean()))
    n = w.size
    stderr = float(w.std(ddof=1) / (np.sqrt(n) * w.mean())) if n > 1 else float("nan")
    return estimate, stderr
