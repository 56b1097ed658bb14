"""The estimator contract: an estimator is an objective.

As optax's ``GradientTransformation`` is a pair of pure functions and NumPyro's ``SVI``
takes any loss, an estimator is :meth:`Estimator.init` plus :meth:`Estimator.step`, which
returns a :class:`Step`: the estimator's new state, its loss (a scalar to minimize, whose
gradient with respect to the parameters estimates minus the gradient of the objective the
estimator stands for), that gradient, its statistics for ``history`` and, through
:meth:`Estimator.negative_chains`, its chains. The fit loop adds the model's
parameter-only factors (counted once per data set), averages over devices or ranks, and
applies the optimizer; it knows nothing else about the estimator.

What the loop, checkpoints, placement and monitors need to know is declared here, with
defaults, and overridden by the estimators that differ: extra ``history`` names, support
for covariates, whether a sampler is used, which settings split over shards, and the
state's chains. Estimator classes enter :data:`REGISTRY` themselves (by subclassing), and
checkpoints rebuild estimators from it, never by importing a name read from a file.

The MCMC estimators (CD, PCD, PT, FPCD, ReplayBuffer) share :class:`Contrastive`: their
``update`` draws the two phases' positions and :func:`contrastive_objective` turns them
into the surrogate mean log p̃(negative) − mean log p̃(positive) (Goodfellow, Bengio &
Courville, *Deep Learning*, eq. 18.15).
"""

import copy
from typing import Any, NamedTuple

import numpy as np

from .._rao_blackwell import conditional_means

__all__ = ["Estimator", "Contrastive", "Phases", "Step", "REGISTRY", "contrastive_objective", "HISTORY"]

# The history entries of every estimator (an estimator without one records NaN).
HISTORY = ("loss", "positive_log_density", "negative_log_density", "acceptance_rate")

class Phases(NamedTuple):
    """What :meth:`Contrastive.update` returns (a plain tuple of the first four, five or six
    fields is accepted as well).

    Attributes
    ----------
    state : Any
        The estimator's new state.
    positive, negative : dict
        The two phases' positions (sampler space), one row per example / chain.
    acceptance_rate : scalar
        The sampler's mean acceptance rate (NaN for samplers without one).
    extras : tuple
        The values of the estimator's ``history_names``, in order.
    negative_log_density : array or None
        log p̃ of each negative row as the sampler computed it (a traced backend then
        does not compute it again), or None.
    """

    state: Any
    positive: Any
    negative: Any
    acceptance_rate: Any
    extras: tuple = ()
    negative_log_density: Any = None


# class name -> estimator class; filled by Estimator.__init_subclass__.
REGISTRY = {}


class Step(NamedTuple):
    """What :meth:`Estimator.step` returns.

    Attributes
    ----------
    state : Any
        The estimator's new state (chains, buffers, learned constants).
    loss : scalar
        The loss the update minimizes; its gradient is ``grads``.
    grads : dict
        Gradient of ``loss`` with respect to the unconstrained parameters.
    stats : dict
        name -> scalar, for ``history``: any of ``positive_log_density``,
        ``negative_log_density``, ``acceptance_rate`` and the estimator's
        ``history_names`` (a missing entry is recorded as NaN).
    """

    state: Any
    loss: Any
    grads: Any
    stats: dict


class Estimator:
    """Base class of ebm_ppl's estimators: the contract and its defaults.

    Subclasses implement :meth:`init` and :meth:`step` and override the declarations that
    differ from the defaults. A subclass enters :data:`REGISTRY` (unless it is private or sets
    ``abstract = True``, as base classes do) under its class name
    (ebm_ppl's own) or ``module:qualname`` (any other), which is how a checkpoint names it.
    """

    #: Extra ``history`` entries, in the order of :attr:`Step.stats` keys.
    history_names = ()
    #: Whether conditional models (``covariates=``) are supported.
    supports_covariates = False
    #: Whether the estimator runs the sampler (PL, RM, SM and NCE do not: then the
    #: positive-phase kernel of latent sites is not built; the sampler argument is still
    #: checked, and ``problem.kernel`` is built but never run).
    needs_sampler = True
    #: Rao-Blackwellized statistics of a binary latent layer (MCMC estimators).
    rao_blackwell = False
    #: The positive phase of latent sites (MCMC estimators): ``"base"`` or ``"persistent"``.
    positive = "base"
    #: Settings that count chains, split evenly over devices or ranks.
    shard_settings = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__name__ if cls.__module__.startswith("ebm_ppl.") else f"{cls.__module__}:{cls.__qualname__}"
        if not cls.__name__.startswith("_") and not cls.__dict__.get("abstract", False):
            REGISTRY[name] = cls

    @classmethod
    def registry_name(cls):
        """The name a checkpoint records for this class (a key of :data:`REGISTRY`)."""
        return cls.__name__ if cls.__module__.startswith("ebm_ppl.") else f"{cls.__module__}:{cls.__qualname__}"

    def check(self, problem, probe):
        """Refuse a model this estimator cannot fit (``NotImplementedError`` or
        ``ValueError`` naming the site), at set-up, before anything changes.

        ``probe()`` gives the structure probes' random parameters and states
        (:meth:`ebm_ppl._problem.Problem.probe`), for estimators that measure the model's
        structure (which latent layers can be summed out)."""

    def init(self, problem, rng_key, data_values, batch_size):
        """The estimator's initial state."""
        raise NotImplementedError(f"{type(self).__name__}.init")

    def step(self, rng_key, problem, state, params, batch_values, batch_index=None):
        """One update's objective: a :class:`Step`."""
        raise NotImplementedError(f"{type(self).__name__}.step")

    def negative_chains(self, state):
        """The chains (sampler space) a result reports and monitors read: dict, maybe empty."""
        return getattr(state, "position", {})

    def after_gradient(self, state, grads):
        """The state after the optimizer applied ``grads`` (FPCD's fast weights)."""
        return state

    def shard_sizes(self):
        """``{setting: value}`` of the settings that must split evenly over shards."""
        return {name: getattr(self, name) for name in self.shard_settings}

    def local_share(self, num_shards):
        """A copy with ``1 / num_shards`` of the chains (one rank of torch.distributed)."""
        local = copy.copy(self)
        for name, value in self.shard_sizes().items():
            setattr(local, name, value // num_shards)
        return local


# (num positive, num negative) -> the rows' weights in the surrogate (numpy; a constant of a fit)
_SURROGATE_WEIGHTS = {}


def _phase_means_objective(ops, info, params, both, num_pos, weights, negative_log_density=None):
    """:func:`contrastive_objective` in a traced program: the gradient is the weighted sum's
    over both phases' rows (as eager backends compute it; nothing else reads its forward
    value, which XLA then drops), and each phase's mean log p̃ is computed from its own
    rows, so XLA shares the positive phase's products with the sampler's (an RBM's v·W,
    computed once for h ~ p(h | v) and for log p̃); with ``negative_log_density`` given
    (the sampler's own value) the negative rows' log p̃ is not computed at all (for an
    energy linear in W, the gradient needs vᵀh, not v·W)."""
    xp = ops.xp
    _, grads = ops.value_and_grad(lambda p: (info.log_density(p, both) * weights).sum())(params)
    pos = xp.mean(info.log_density(params, {k: v[:num_pos] for k, v in both.items()}))
    if negative_log_density is not None:
        neg = xp.mean(negative_log_density)
    else:
        neg = xp.mean(info.log_density(params, {k: v[num_pos:] for k, v in both.items()}))
    return neg - pos, grads, pos, neg


def contrastive_objective(problem, params, positive, negative, negative_log_density=None):
    """The contrastive surrogate mean log p̃(negative) − mean log p̃(positive), from one
    run of the model on the rows of both phases (sampler space, already drawn).

    With ``problem.rao_blackwell`` set, the binary latent layer is replaced by its
    conditional mean in both phases (:mod:`ebm_ppl._rao_blackwell`).

    ``negative_log_density``, when given, is log p̃ of each negative row as the sampler
    computed it (see :func:`ebm_ppl._problem.run_kernel`); a traced backend then does not
    compute it again.

    Returns
    -------
    tuple
        ``(loss, grads, mean log p̃(positive), mean log p̃(negative))``.
    """
    ops, xp, info = problem.ops, problem.ops.xp, problem.info
    num_pos = next(iter(positive.values())).shape[0]
    num_neg = next(iter(negative.values())).shape[0]
    with ops.no_grad():
        both = {k: xp.concatenate([positive[k], negative[k]], axis=0) for k in positive}
        if problem.rao_blackwell is not None:  # E[h | rest] in place of the drawn h, both phases in one run
            both = conditional_means(problem, problem.rao_blackwell, ops.stop_gradient(params), both)
    both = problem.from_internal(ops.stop_gradient(both))
    if problem.rao_blackwell is not None:  # the statistics are at E[h | rest], not at the drawn h
        negative_log_density = None
    if (num_pos, num_neg) not in _SURROGATE_WEIGHTS:
        _SURROGATE_WEIGHTS[num_pos, num_neg] = np.concatenate(
            [np.full(num_pos, -1.0 / num_pos), np.full(num_neg, 1.0 / num_neg)])
    weights = ops.from_numpy(_SURROGATE_WEIGHTS[num_pos, num_neg], ops.asarray(0.0, None).dtype,
                             next(iter(both.values())))
    if ops.traced:
        return _phase_means_objective(ops, info, params, both, num_pos, weights, negative_log_density)
    ld, grads = info.weighted_param_grad(params, both, weights)
    pos, neg = xp.mean(ld[:num_pos]), xp.mean(ld[num_pos:])
    return neg - pos, grads, pos, neg


class Contrastive(Estimator):
    """An MCMC estimator: ``update`` draws the positive and negative phases' positions
    (a :class:`Phases`), and the objective is :func:`contrastive_objective`."""

    abstract = True  # a base class, not an estimator: not in REGISTRY

    def update(self, rng_key, problem, state, params, batch_values, batch_index=None):
        """The two phases' positions: a :class:`Phases` (state, positive position, negative
        position, acceptance rate, values of ``history_names``, log p̃ of the negative rows
        or None)."""
        raise NotImplementedError(f"{type(self).__name__}.update")

    def step(self, rng_key, problem, state, params, batch_values, batch_index=None):
        """The phases from :meth:`update`, the surrogate from :func:`contrastive_objective`."""
        ops = problem.ops
        with ops.no_grad():  # sampling needs no parameter gradients (MALA re-enables its own)
            out = self.update(rng_key, problem, state, ops.stop_gradient(params), batch_values,
                              batch_index=batch_index)
        out = Phases(*out)
        loss, grads, pos, neg = contrastive_objective(problem, params, out.positive, out.negative,
                                                      out.negative_log_density)
        stats = {"positive_log_density": pos, "negative_log_density": neg, "acceptance_rate": out.acceptance_rate}
        stats.update(zip(self.history_names, tuple(out.extras)))
        return Step(out.state, loss, grads, stats)
