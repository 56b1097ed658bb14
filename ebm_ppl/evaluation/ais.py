"""Annealed importance sampling (AIS) for log Z, written once over the backend ops.

The chains start at p₀, the sites' base distributions (the product of the sample sites'
own distributions, normalized) or that with the binary observed sites redrawn from a
factorized base-rate distribution fitted to data (:func:`base_rate_start`), and anneal
along the geometric path

    log f_β(x) = (1 − β) log p₀(x) + β log p̃(x) = log p₀(x) + β (log p̃(x) − log p₀(x)),

with one transition of the chosen sampler leaving f_β invariant at each intermediate
temperature. Each chain's log weight is Σ_t (β_t − β_{t−1}) (log p̃ − log p₀)(x_{t−1}), so
Z = E[w] (Z₀ = 1) and log Ẑ = log mean w. The standard error of log Ẑ is the delta-method
one, sd(w) / (√n mean(w)), computed from the weights scaled by their maximum.

Reverse AIS runs the same path from β = 1 to 0, started at model samples: its mean
weight estimates 1/Z, so −log of it is a stochastic upper bound on log Z (Grosse et al.
2015; Burda et al. 2015). A latent binary layer that is conditionally independent given
the rest is summed out of every f_β analytically and redrawn exactly before each
transition (Rao-Blackwellized weights, as Salakhutdinov & Murray 2008 do for an RBM).

On NumPyro the annealing loop is one jitted ``fori_loop`` called with the bounds of each
chunk of temperatures (at most :data:`NUM_CHUNKS`, so that a progress bar can move; the
random stream is carried from chunk to chunk, so the result does not depend on the
chunking); on PyTorch it is a plain loop under ``torch.no_grad``.

References
----------
Neal, R. M. (2001). Annealed importance sampling. *Statistics and Computing* 11, 125–139.
Salakhutdinov, R. & Murray, I. (2008). On the quantitative analysis of deep belief
networks. *ICML*.
Grosse, R., Ghahramani, Z. & Adams, R. P. (2015). Sandwiching the marginal likelihood
using bidirectional Monte Carlo. arXiv:1511.02543.
Burda, Y., Grosse, R. & Salakhutdinov, R. (2015). Accurate and conservative estimates of
MRF log-likelihood using reverse annealing. *AISTATS*.
Grosse, R., Maddison, C. & Salakhutdinov, R. (2013). Annealing between distributions by
averaging moments. *NIPS* (the sigmoid schedule).
"""

import numpy as np

from .._progress import tqdm  # the notebook bar only where ipywidgets is installed (no IProgress warning)
from .._tempered import BASE_START, Start
from .._tempered import parts_fn as _parts_fn
from .._tempered import tempered as _tempered

__all__ = ["SCHEDULES", "Start", "BASE_START", "base_rate_start", "sample_start", "rb_config", "temperature_schedule",
           "ais_log_weights", "equilibrate", "log_mean_exp_with_stderr", "chunks", "NUM_CHUNKS",
           "annealing_bar", "PROGRESS_DELAY_S"]

SCHEDULES = ("sigmoid", "linear", "geometric")
NUM_CHUNKS = 50
"""The annealing loop runs in at most this many chunks of temperatures (progress bar updates)."""


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


def base_rate_start(problem, params, data_values, like, pseudo_count=1.0):
    """A factorized Bernoulli start fitted to ``data_values`` (observed site -> array).

    P(x_i = hi) = (count of hi + pseudo_count) / (N + 2 pseudo_count) for each coordinate
    of each observed site; every observed site must be binary, and its base distribution a
    product over coordinates (checked: single-coordinate changes of log base must add up
    at random states). Latent sites keep their base distributions.
    """
    ops = problem.ops
    logits, shift, const = {}, {}, 0.0
    rng = np.random.default_rng(0)
    for name, x in data_values.items():
        site = problem.sites[name]
        if not site.is_discrete or site.values is None or len(site.values) != 2:
            raise NotImplementedError(
                f"log_partition(init=<data>): site {name!r} (support {site.support}) is not binary; "
                "a base-rate start is implemented for binary observed sites only; use init='base'")
        lo, hi = (float(v) for v in site.values)
        ones = (np.asarray(ops.to_numpy(x), np.float64).reshape((x.shape[0], -1)) - lo) / (hi - lo)
        p = (ones.sum(0) + pseudo_count) / (ones.shape[0] + 2 * pseudo_count)
        a = np.log(p) - np.log1p(-p)
        ell = _base_logits(problem, params, name, lo, hi, like, rng)
        logits[name], shift[name] = a, a - ell
        const += float(np.logaddexp(0, ell).sum() - np.logaddexp(0, a).sum())
    return Start(logits, shift, const)


def _base_logits(problem, params, name, lo, hi, like, rng, num_contexts=3):
    """The logits of a binary site's base distribution, one per coordinate, from single
    coordinate changes of log base; checked to be a product over coordinates, and the
    same whatever the other sites' values (``num_contexts`` joint draws of them from the
    base): a start that replaces the site's base by a product of Bernoullis of its own must
    leave the rest of the base measure as it was."""
    ops, info = problem.ops, problem.info
    site = info.sites[name]
    size = int(np.prod(site.shape, dtype=int))
    others = info.sample_base(ops.seed(0, like), num_contexts)
    rows = np.full((size + 1 + 4, size), lo)
    rows[1:size + 1][np.arange(size), np.arange(size)] = hi
    rows[size + 1:] = np.where(rng.random((4, size)) < 0.5, hi, lo)
    n = rows.shape[0]
    context = ops.asarray(np.repeat(np.arange(num_contexts), n), None, int_=True)  # each draw for n rows
    values = {k: v[context] for k, v in others.items()}
    values[name] = ops.from_numpy(np.tile(rows, (num_contexts, 1)).reshape((-1,) + tuple(site.shape)), site.dtype,
                                  like)
    with ops.no_grad():
        lb = np.asarray(ops.to_numpy(info.log_density_parts(params, values)[1]), np.float64).reshape((num_contexts, n))
    ell = lb[:, 1:size + 1] - lb[:, :1]
    predicted = lb[:, :1] + ell @ ((rows[size + 1:] - lo) / (hi - lo)).T  # (contexts, 4 random rows)
    if not np.allclose(predicted, lb[:, size + 1:], rtol=1e-4, atol=1e-3 * (1 + np.abs(lb[:, :1]).max())):
        raise NotImplementedError(
            f"log_partition(init=<data>): the base distribution of site {name!r} is not a product "
            "over its coordinates, so a factorized base-rate start cannot replace it; use init='base'")
    if not np.allclose(ell, ell[:1], rtol=1e-4, atol=1e-3 * (1 + np.abs(ell).max())):
        raise NotImplementedError(
            f"log_partition(init=<data>): the base distribution of site {name!r} depends on the values of "
            "other sites, so a factorized base-rate start cannot replace it; use init='base'")
    return ell[0]


def sample_start(problem, rng_key, num_chains, start=BASE_START):
    """Sampler-space positions drawn from p₀."""
    ops, info = problem.ops, problem.info
    key_base, key_rate = ops.split(rng_key, 2)
    values = info.sample_base(key_base, num_chains)
    keys = ops.split(key_rate, max(1, len(start.logits)))
    for key, (n, a) in zip(keys, start.logits.items()):
        site = info.sites[n]
        lo, hi = (float(v) for v in site.values)
        like = ops.asarray(0.0, None)
        logits = ops.from_numpy(np.tile(a, (num_chains, 1)), like.dtype) * (values[n][:1].reshape((1, -1)) * 0 + 1)
        draw = ops.xp.where(ops.bernoulli_logits(key, logits), hi, lo)
        values[n] = ops.astype(draw, values[n].dtype).reshape((num_chains,) + tuple(site.shape))
    return ops.shard_rows(problem.to_internal(values))  # split over devices= (a no-op otherwise)


def _marginal_parts(ops, parts, summed, lo, hi):
    """position -> (log p̃, log p₀, g) at x_summed = lo, with g = (hi − lo) ∂ log p̃ / ∂x_summed
    (the summed site's coordinates are affine and independent given the rest: see
    :mod:`ebm_ppl.evaluation.analytic`)."""

    def mparts(position):
        x = position[summed]
        low = {**position, summed: ops.astype(x * 0 + lo, ops.asarray(0.0, None).dtype)}

        def total(sub):
            ld, lb = parts({**low, **sub})
            return ld.sum(), (ld, lb)

        (_, (ld, lb)), grads = ops.value_and_grad(total, has_aux=True)({summed: low[summed]})
        return ld, lb, (hi - lo) * grads[summed]

    return mparts


def _annealing_steps(problem, kernel, params, start, rb, betas):
    """``(increment, body)`` of the annealing loop at ``params`` (see :func:`_make_annealer`)."""
    ops = problem.ops
    xp = ops.xp
    parts = _parts_fn(problem, params, start)
    if rb is None:
        def increment(position, b_new, b_old):
            ld, lb = parts(position)
            return (b_new - b_old) * (ld - lb), position
    else:
        summed, lo, hi, gb = rb
        mparts = _marginal_parts(ops, parts, summed, lo, hi)

        def soft(z):
            return xp.logaddexp(z * 0, z).reshape((z.shape[0], -1)).sum(-1)

        def increment(position, b_new, b_old):
            ld, lb, gd = mparts(position)
            new = b_new * (ld - lb) + soft(gb + b_new * (gd - gb))
            old = b_old * (ld - lb) + soft(gb + b_old * (gd - gb))
            return new - old, (gd, position)

    def body(t, carry):
        position, aux, key, log_w = carry
        inc, extra = increment(position, betas[t], betas[t - 1])
        log_w = log_w + inc
        key, sub, sub_h = ops.split(key, 3)
        if rb is not None:
            gd, _ = extra
            logits = gb + betas[t] * (gd - gb)
            x = sample_site_value(ops, sub_h, logits, lo, hi, position[summed].dtype)
            position = {**position, summed: x}
        position, aux, _ = kernel.step(sub, position, aux, _tempered(parts, betas[t]))
        return position, aux, key, log_w

    return increment, body


def _make_annealer(problem, kernel, start, rb):
    """``(begin, advance, finish)``, the annealing loop in pieces that can run in chunks of
    temperatures (to update a progress bar) with the same random stream as in one piece:

    - ``begin(params, position, betas) -> log_w0`` (zeros of the chains' shape);
    - ``advance(params, carry, betas, lo, hi) -> carry``: steps ``lo`` to ``hi − 1`` of
      ``carry = (position, aux, key, log_w)``;
    - ``finish(params, position, log_w, betas) -> log weights`` (the last increment, no
      transition at the end).

    ``betas`` may run from 0 to 1 (forward AIS) or from 1 to 0 (reverse AIS): either way
    the log weight is Σ_t log f_{β_t}(x_{t−1}) − log f_{β_{t−1}}(x_{t−1}), with one
    transition leaving f_{β_t} invariant between steps. With ``rb = (site, lo, hi, gb)``
    that site is summed out of every f_β (Rao-Blackwellized weights, as Salakhutdinov &
    Murray 2008 sum out an RBM's hidden units) and redrawn exactly from f_β(site | rest)
    before each transition; ``gb`` is the logits of p₀ for that site.
    """
    ops = problem.ops

    def begin(params, position, betas):
        increment, _ = _annealing_steps(problem, kernel, params, start, rb, betas)
        return increment(position, betas[0], betas[0])[0]

    def advance(params, carry, betas, lo, hi):
        _, body = _annealing_steps(problem, kernel, params, start, rb, betas)
        return ops.fori_loop(lo, hi, body, carry)

    def finish(params, position, log_w, betas):
        increment, _ = _annealing_steps(problem, kernel, params, start, rb, betas)
        k = betas.shape[0] - 1
        return log_w + increment(position, betas[k], betas[k - 1])[0]

    return begin, advance, finish


def sample_site_value(ops, rng_key, logits, lo, hi, dtype):
    return ops.astype(ops.xp.where(ops.bernoulli_logits(rng_key, logits), hi, lo), dtype)


def rb_config(problem, params, summed, start, like):
    """``(site, lo, hi, gb)`` for :func:`_make_annealer`: gb, the logits of p₀ for the summed
    site (its base logits); ``NotImplementedError`` where the site's base is not a product
    over its coordinates or depends on other sites' values (one gb would not fit every row)."""
    ops = problem.ops
    site = problem.sites[summed]
    lo, hi = (float(v) for v in site.values)
    rng = np.random.default_rng(1)
    ell = _base_logits(problem, params, summed, lo, hi, like, rng)
    gb = ops.from_numpy(ell[None, :], ops.asarray(0.0, None).dtype).reshape((1,) + tuple(site.shape))
    return summed, lo, hi, gb


def chunks(lo, hi, num_chunks=None):
    """``(start, stop)`` pairs splitting ``range(lo, hi)`` into at most ``num_chunks``
    (default :data:`NUM_CHUNKS`) runs."""
    size = max(1, -(-(hi - lo) // (num_chunks or NUM_CHUNKS)))
    return [(a, min(a + size, hi)) for a in range(lo, hi, size)]


def ais_log_weights(problem, kernel, rng_key, params, betas, num_chains, start=BASE_START, rb=None,
                    position=None, progress=None):
    """The AIS log weights of ``num_chains`` chains (numpy float64, shape ``(num_chains,)``).

    ``params`` are unconstrained; ``betas`` is a float64 numpy schedule from 0 to 1 (forward:
    chains start at p₀, drawn here) or from 1 to 0 (reverse: pass ``position``, the chains'
    starting states, ideally exact draws from p̃ / Z). ``start`` is p₀ (:class:`Start`);
    ``rb`` a summed-out site (:func:`rb_config`) or None. The K − 1 transitions run in at
    most :data:`NUM_CHUNKS` chunks (one compiled loop called with each chunk's bounds: the
    result does not depend on the chunking), ``progress(n)`` called after each with its
    number of steps (K in all).
    """
    ops, info = problem.ops, problem.info
    if info.improper_sites:
        raise ValueError(
            f"log_partition(method='ais'): the base distribution of site(s) {list(info.improper_sites)} "
            "is improper (e.g. ImproperUniform), so AIS has no normalized distribution to start "
            "from; give those sites a proper distribution in the model (the factors stay as they are)"
        )
    progress = progress or (lambda n: None)
    key_init, key_run = ops.split(rng_key, 2)
    num_steps = len(betas) - 1
    with ops.no_grad():
        if position is None:
            position = sample_start(problem, key_init, num_chains, start)
        aux = kernel.init(position)
        like = ops.stop_gradient(_parts_fn(problem, params, start)(position)[0])
        betas_arr = ops.from_numpy(betas, like.dtype, like)
        begin, advance, finish = (ops.jit(f) for f in _make_annealer(problem, kernel, start, rb))
        carry = (position, aux, key_run, begin(params, position, betas_arr))
        for lo, hi in chunks(1, num_steps):
            carry = advance(params, carry, betas_arr, lo, hi)
            progress(hi - lo)
        log_w = finish(params, carry[0], carry[3], betas_arr)
        log_w = np.asarray(ops.to_numpy(log_w), dtype=np.float64)
    progress(1)
    return log_w


def equilibrate(problem, kernel, rng_key, params, position, num_steps, rb=None, progress=None):
    """``num_steps`` transitions at β = 1 (the summed site redrawn exactly first): the
    approximate model samples that reverse AIS starts from when exact ones are out of reach
    (in chunks, ``progress(n)`` called after each, as in :func:`ais_log_weights`)."""
    ops = problem.ops
    progress = progress or (lambda n: None)

    def advance(params, carry, lo, hi):
        parts = _parts_fn(problem, params)
        target = _tempered(parts, 1.0)

        def body(i, carry):
            position, aux, key = carry
            key, sub, sub_h = ops.split(key, 3)
            if rb is not None:
                summed, lo_value, hi_value, _ = rb
                _, _, gd = _marginal_parts(ops, parts, summed, lo_value, hi_value)(position)
                position = {**position, summed: sample_site_value(ops, sub_h, gd, lo_value, hi_value,
                                                                  position[summed].dtype)}
            position, aux, _ = kernel.step(sub, position, aux, target)
            return position, aux, key

        return ops.fori_loop(lo, hi, body, carry)

    with ops.no_grad():
        run = ops.jit(advance)
        carry = (position, kernel.init(position), rng_key)
        for lo, hi in chunks(0, num_steps):
            carry = run(params, carry, lo, hi)
            progress(hi - lo)
        return carry[0]


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


PROGRESS_DELAY_S = 5.0
"""``progress_bar=None``: the bar appears once the annealing has run this many seconds."""


def annealing_bar(progress_bar, total):
    """The tqdm bar of an AIS run of ``total`` steps: ``progress_bar`` True shows it, False
    hides it, None shows it once the run has lasted :data:`PROGRESS_DELAY_S` seconds."""
    if progress_bar not in (None, True, False):
        raise ValueError(f"progress_bar must be None, True or False, got {progress_bar!r}")
    return tqdm(total=total, disable=progress_bar is False, delay=0.0 if progress_bar else PROGRESS_DELAY_S,
                desc="log_partition (AIS)", unit="step", leave=False)
