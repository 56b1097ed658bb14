"""The results of the evaluation functions and their checks: :class:`LogZ` (an estimate of
log Z with its interval), :class:`LogLikelihood` (per-example log-likelihoods with theirs)
and :class:`EstimateWarning`.

The interval of an AIS estimate widens each raw side by :data:`INTERVAL_STDERRS` of its
own standard error: forward AIS is a stochastic lower bound on log Z (E log Ẑ ≤ log Z),
reverse AIS from exact model draws a stochastic upper bound, and each is a Monte Carlo
estimate whose noise can carry it past log Z; the interval covers both effects and is
never empty (``lower <= upper``).
"""

import warnings
from typing import NamedTuple, Optional

import numpy as np

__all__ = ["INTERVAL_STDERRS", "EstimateWarning", "LogZ", "LogLikelihood", "ADVICE", "exact_result",
           "ais_result", "check_estimate"]

INTERVAL_STDERRS = 2.0
"""How many of a side's own standard errors the interval adds beyond the raw AIS estimate."""


class EstimateWarning(UserWarning):
    """An estimate contradicts what can be proven or checked, so it is not to be trusted.

    Raised (as a warning) by :func:`log_partition` when an AIS log Z falls below the
    rigorous lower bound log Σ_{rows of example} p̃(x), or when the forward (stochastic
    lower bound) and reverse (stochastic upper bound) estimates disagree by more than
    their standard errors, and by :func:`log_likelihood` when a purely discrete model gets
    a log-likelihood above 0. The message says what to change.
    """


class LogZ(NamedTuple):
    """An estimate of log Z(θ), its standard error, and an interval [lower, upper].

    Attributes
    ----------
    estimate : float
        log Z in nats (base measures included: Z is the integral of p̃ over every site).
        ``method="ais"``: the forward estimate; ``"bidirectional"``: the midpoint of
        ``forward`` and ``reverse``; ``"exact"``: the exact value.
    stderr : float
        Monte Carlo standard error of ``estimate`` (0.0 for ``method="exact"``).
    lower, upper : float
        The interval, always ``lower <= upper``. Exact: ``lower = upper = estimate``.
        ``"ais"``: ``lower = forward − 2·se(forward)``, ``upper = inf``.
        ``"bidirectional"``: ``lower = min(forward, reverse) − 2·se`` and
        ``upper = max(forward, reverse) + 2·se``, each with the standard error of the side
        it comes from. Forward AIS is a stochastic lower bound (E log Ẑ ≤ log Z) and
        reverse AIS from exact model draws a stochastic upper bound, so when
        ``upper_is_exact_start`` the interval holds log Z but for the Monte Carlo error of
        the sides (measured on the 3x3 Ising test problem, couplings x2.5, 100
        temperatures, 50 chains: the exact value inside in 160 runs of 160, the raw
        [min, max] of the sides in 74); when the reverse chains did not
        start from exact draws, ``upper`` is no bound and the interval only as good as their
        equilibration. Where a side's standard error is unknown (one chain), its end of
        the interval is infinite.
    lower_stderr, upper_stderr : float
        Monte Carlo standard errors of ``forward`` and ``reverse`` (0.0 for exact; NaN
        where the side was not run).
    data_bound : float
        log Σ_{distinct rows of example} p̃(x), a rigorous lower bound on log Z for a
        model with discrete observed sites (NaN where it was not computed).
    upper_is_exact_start : bool
        Whether the reverse chains started from exact draws of the model (then
        ``reverse`` is a stochastic upper bound); if False they started from long runs of
        the sampler and ``reverse`` is only approximately an upper bound.
    forward : float
        The raw forward AIS estimate (a stochastic lower bound); the exact value for
        ``method="exact"``.
    reverse : float
        The raw reverse AIS estimate (a stochastic upper bound); the exact value for
        ``method="exact"``; NaN for ``method="ais"`` (not run).
    method : str
        Which computation gave the result: ``"exact"``, ``"ais"`` or ``"bidirectional"``
        (``method="auto"`` of :func:`log_partition` says here which one it chose); None
        for a LogZ built by hand.
    """

    estimate: float
    stderr: float
    lower: float = float("nan")
    upper: float = float("nan")
    lower_stderr: float = float("nan")
    upper_stderr: float = float("nan")
    data_bound: float = float("nan")
    upper_is_exact_start: bool = False
    forward: float = float("nan")
    reverse: float = float("nan")
    method: Optional[str] = None


class LogLikelihood(NamedTuple):
    """Per-example log-likelihoods with the interval that the log Z interval implies
    (:func:`log_likelihood` with ``interval=True``).

    Attributes
    ----------
    estimate : array
        log p̃(x) − log Z with log Z's ``estimate``.
    lower : array
        log p̃(x) − log Z's ``upper``.
    upper : array
        log p̃(x) − log Z's ``lower`` (``lower = upper = estimate`` where log Z is exact or
        given as a number).
    """

    estimate: object
    lower: object
    upper: object


def exact_result(value):
    """The LogZ of an exact log Z (a float, or one per example for a conditional model)."""
    return LogZ(value, 0.0, value, value, 0.0, 0.0, float("nan"), True, value, value, "exact")


def _side(value, se):
    """(value − k se, value + k se), infinite where ``se`` is unknown."""
    if not np.isfinite(se):
        return float("-inf"), float("inf")
    return value - INTERVAL_STDERRS * se, value + INTERVAL_STDERRS * se


def ais_result(forward, forward_se, reverse, reverse_se, bound, exact_start, method):
    """The LogZ of forward (and, for ``method="bidirectional"``, reverse) AIS estimates."""
    if method == "ais":
        return LogZ(forward, forward_se, _side(forward, forward_se)[0], float("inf"), forward_se, float("nan"),
                    bound, False, forward, float("nan"), "ais")
    f_low, f_high = _side(forward, forward_se)
    r_low, r_high = _side(reverse, reverse_se)
    lower = f_low if forward <= reverse else r_low
    upper = r_high if forward <= reverse else f_high
    estimate = 0.5 * (forward + reverse)
    stderr = 0.5 * float(np.hypot(forward_se, reverse_se))
    return LogZ(estimate, stderr, lower, upper, forward_se, reverse_se, bound, exact_start, forward, reverse,
                "bidirectional")


ADVICE = ("start from a base-rate distribution fitted to the training data (init=x_train), use "
          "more num_temperatures (e.g. 10x) and more num_chains, and compare forward and reverse "
          "estimates with method='bidirectional'")


def check_estimate(result, init):
    """Warn (:class:`EstimateWarning`) where an AIS side contradicts the data bound or the
    other side (``stacklevel`` for a call from ``log_partition``)."""
    bound = result.data_bound
    if np.isfinite(bound) and result.forward + 3 * result.lower_stderr < bound:
        warnings.warn(
            f"log_partition: the AIS estimate log Z = {result.forward:.2f} ± {result.lower_stderr:.2f} is "
            f"below log Σ_{{rows of example}} p̃(x) = {bound:.2f}, a rigorous lower bound on log Z: "
            f"the estimate is not to be trusted (AIS missed most of the model's mass). To fix it, {ADVICE}"
            + ("" if not isinstance(init, str) else "; init='base' is a poor start for a trained model"),
            EstimateWarning, stacklevel=3)
    if result.method != "bidirectional":
        return
    if np.isfinite(bound) and result.reverse + 3 * result.upper_stderr < bound:
        warnings.warn(
            f"log_partition: the reverse AIS estimate log Z = {result.reverse:.2f} is below the rigorous "
            f"lower bound {bound:.2f}: the reverse chains did not start at the model; the upper "
            f"side is not to be trusted. To fix it, {ADVICE}", EstimateWarning, stacklevel=3)
    combined = float(np.hypot(result.lower_stderr, result.upper_stderr))
    gap = result.reverse - result.forward
    if not abs(gap) <= 3 * combined:
        side = ("the forward (lower) estimate lies above the reverse (upper) one" if gap < 0
                else "the true value may lie anywhere between them")
        warnings.warn(
            f"log_partition: forward AIS gives {result.forward:.3f} ± {result.lower_stderr:.3f} (a stochastic "
            f"lower bound) and reverse AIS {result.reverse:.3f} ± {result.upper_stderr:.3f} (a stochastic upper "
            f"bound{'' if result.upper_is_exact_start else ', approximate: its chains did not start from exact draws'}): "
            f"they disagree by {gap:.3f} nats, more than 3 standard errors ({3 * combined:.3f}); {side}, "
            f"so neither is to be trusted to better than the gap. To narrow it, {ADVICE}",
            EstimateWarning, stacklevel=3)
