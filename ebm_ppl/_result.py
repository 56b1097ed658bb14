"""What a fit returns (:class:`FitResult`) and what ``resume=`` continues (:class:`FitState`)."""

from typing import Any, NamedTuple

__all__ = ["FitState", "FitResult"]


class FitState(NamedTuple):
    """Everything ``resume=`` needs to continue a fit exactly where it stopped.

    Attributes
    ----------
    params : dict
        Unconstrained parameters (copies).
    optimizer_state : Any
        The optimizer's state (Pyro: ``PyroOptim.get_state()``; NumPyro: its pytree).
    estimator_state : Any
        Chains (sampler space) and the sampler's adapted step sizes.
    rng_key : Any
        The key of the sampling stream (Pyro: a ``torch.Generator`` state).
    data_key : Any
        The key of the minibatch-shuffling stream.
    num_updates : int
        Parameter updates done so far (in [0, 2**53)).
    estimator : Any
        The estimator object that produced ``estimator_state``.
    epoch_perm : numpy.ndarray or None
        The current epoch's permutation of the examples, 0..N-1 (None before the first
        update).
    epoch_offset : int
        How many examples of ``epoch_perm`` the updates so far have used (0..N; 0 when
        ``epoch_perm`` is None): a resumed fit continues the epoch there, so any split of
        N updates equals one call of N. ``resume=`` and :func:`ebm_ppl.load` refuse values
        outside these ranges (see ``ebm_ppl._validate``).
    signature : dict or None
        The model's parameters (shapes, constraints), sites (shapes, supports) and the
        optimizer's kind, which ``resume=`` checks against the model it is given.
    """

    params: Any
    optimizer_state: Any
    estimator_state: Any
    rng_key: Any
    data_key: Any
    num_updates: int
    estimator: Any
    epoch_perm: Any = None
    epoch_offset: int = 0
    signature: Any = None


class FitResult(NamedTuple):
    """What :func:`fit_unnormalized` returns.

    Attributes
    ----------
    params : dict
        name -> array (``torch.Tensor`` / ``jax.Array``), constrained values. On Pyro they
        are also left in ``pyro.get_param_store()``.
    history : dict
        name -> 1-D ``numpy.ndarray`` with one entry per update: ``loss`` (the surrogate
        mean log p̃(negative) − mean log p̃(positive), whose gradient is the estimator; it
        is *not* the negative log-likelihood), ``positive_log_density``,
        ``negative_log_density`` and ``acceptance_rate`` (NaN where the sampler has none).
    chains : dict
        site name -> array: the negative-phase chain state at the end (constrained values).
    state : FitState
        What ``resume=`` needs.
    backend : str
        ``"pyro"`` or ``"numpyro"``.
    """

    params: dict
    history: dict
    chains: dict
    state: FitState
    backend: str
