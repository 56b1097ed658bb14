"""The backend contract, the registry of backends, and detection from array types.

A backend is an importable module (``ebm_ppl_pyro``, ``ebm_ppl_numpyro``) that exposes

``ops``
    an object with the random keys, gradients, loops and the few array functions the
    algorithms need (``backends/ebm_ppl_*/ops.py``: ``TorchOps``, ``JaxOps``; everything
    else is plain array arithmetic, shared by torch and jax).
``compile_model(model, data, model_args, model_kwargs, params=None) -> ModelInfo``
    traces the model once and returns pure functions of arrays.
``make_optimizer(optimizer) -> Optimizer``
    wraps the framework's native optimizer in the ``init`` / ``update`` pair the fit uses.

The core never imports a framework: a backend module is imported only when it is used.
"""

import importlib
from typing import Any, Callable, NamedTuple, Optional

__all__ = ["SiteInfo", "ModelInfo", "Optimizer", "get_backend", "detect_backend", "BACKENDS"]

BACKENDS = {"pyro": "ebm_ppl_pyro", "numpyro": "ebm_ppl_numpyro"}


class SiteInfo(NamedTuple):
    """What the samplers need to know about one sample site.

    Attributes
    ----------
    name : str
    shape : tuple
        Per-example (event) shape of the site's value.
    is_discrete : bool
    is_observed : bool
        Observed sites take their values from the data in the positive phase.
    values : tuple or None
        The finite support of a discrete site (e.g. ``(0., 1.)``), else None.
    transform : object or None
        Bijection from unconstrained space to the support of a continuous site.
    support : str
        Human-readable support, for error messages.
    dtype : object
        The dtype of the site's values.
    """

    name: str
    shape: tuple
    is_discrete: bool
    is_observed: bool
    values: Optional[tuple]
    transform: Any
    support: str
    dtype: Any


class ModelInfo(NamedTuple):
    """A model turned into pure functions of arrays (built once per fit).

    Attributes
    ----------
    sites : dict
        site name -> :class:`SiteInfo`, observed sites first, in model order.
    log_density : callable
        ``log_density(params, values) -> (num_chains,)`` log p̃ of each chain, where
        ``params`` are unconstrained parameters and ``values`` maps every site to an array
        of shape ``(num_chains, *site.shape)`` in constrained space.
    init_params : dict
        Unconstrained initial parameters.
    constrain : callable
        Unconstrained parameter dict -> constrained parameter dict.
    unconstrain : callable
        Constrained parameter dict -> unconstrained parameter dict.
    data_to_values : callable
        A data batch (array or dict) -> ``{observed site: array}``.
    values_to_data : callable
        The inverse of ``data_to_values``.
    sample_base : callable
        ``sample_base(rng_key, num_chains) -> values`` drawn from the sites' base
        distributions (improper bases: uniform in (-2, 2) in unconstrained space).
    log_density_parts : callable
        ``log_density_parts(params, values) -> (log_density, log_base)``, both ``(num_chains,)``:
        log p̃ as ``log_density`` gives it, and the log-probability of the sample sites alone
        (the base measure, factors left out), from one run of the model.
    improper_sites : tuple
        Names of the sites whose base distribution is improper (e.g. ``ImproperUniform``):
        ``sample_base`` does not draw them from their base and ``log_base`` is not normalized.
    log_density_grad : callable, optional
        ``log_density_grad(params, values, names) -> (log_density, {name: array})``: the
        per-row log density and the gradient of its sum over rows with respect to
        ``values[name]`` for ``name`` in ``names`` (values taken as floats), where the
        backend has a faster way than differentiating ``log_density`` at each call (Pyro:
        one traced graph of the forward and backward pass).
    weighted_param_grad : callable, optional
        ``weighted_param_grad(params, values, weights) -> (log_density, grads)``: the
        per-row log density and the gradient of Σ_rows weights · log_density with respect
        to ``params``, where the backend has a faster way (Pyro: one traced graph).
    param_constraints : dict, optional
        parameter name -> a text description of its constraint (``repr``), which
        ``resume=`` compares with the result's.
    log_prior : callable, optional
        ``log_prior(params) -> scalar``: the sum of the model's parameter-only factors
        (factors outside the data plate that depend on no site: a penalty or log prior on
        θ), which ``log_density`` leaves out; None when the model has none. The fit adds it
        once per data set (penalized maximum likelihood / MAP).
    """

    sites: dict
    log_density: Callable
    init_params: dict
    constrain: Callable
    unconstrain: Callable
    data_to_values: Callable
    values_to_data: Callable
    sample_base: Callable
    log_density_parts: Optional[Callable] = None
    improper_sites: tuple = ()
    log_density_grad: Optional[Callable] = None
    weighted_param_grad: Optional[Callable] = None
    param_constraints: Optional[dict] = None
    log_prior: Optional[Callable] = None


class Optimizer(NamedTuple):
    """A backend-native optimizer as a pure pair (optax-style).

    ``init(params) -> opt_state`` and
    ``update(grads, opt_state, params, value) -> (params, opt_state, finite)`` where
    ``params`` and ``grads`` are dicts of unconstrained arrays, ``grads`` is the gradient
    of the loss to be minimized and ``value`` the loss; ``finite`` says whether the new
    parameters are all finite (when it is False the caller keeps the old parameters and
    state; Pyro's update, which steps in place, has already put them back).
    ``get_state(opt_state)`` returns something that ``init(params, state=...)`` accepts to
    resume. ``kind`` names the optimizer (``resume=`` checks it); ``check(params)`` raises
    ``ValueError`` naming the learning rate when it is negative or not finite;
    ``check_state(state, params)`` raises ``ValueError`` when a saved state does not fit
    this optimizer and these parameters.
    """

    init: Callable
    update: Callable
    get_state: Callable
    kind: str = ""
    check: Callable = lambda params: None
    check_state: Callable = lambda state, params: None


def get_backend(name):
    """Import and return the backend module called ``name`` ("pyro" or "numpyro")."""
    if name not in BACKENDS:
        raise ValueError(f"backend={name!r} is not one of {sorted(BACKENDS)}")
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"backend {name!r} needs its framework: pip install 'ebm_ppl[{name}]' ({e})"
        ) from e


def _leaves(data):
    if isinstance(data, dict):
        for v in data.values():
            yield from _leaves(v)
    else:
        yield data


def detect_backend(data, backend=None):
    """The backend name for ``data``: torch tensors -> "pyro", jax arrays -> "numpyro"."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not one of {sorted(BACKENDS)}")
        return backend
    kinds = set()
    for leaf in _leaves(data):
        module = type(leaf).__module__.split(".")[0]
        if module == "torch":
            kinds.add("pyro")
        elif module in ("jax", "jaxlib"):
            kinds.add("numpyro")
        else:
            kinds.add(None)
    if len(kinds) == 1 and None not in kinds:
        return kinds.pop()
    if not kinds:
        raise ValueError("data is empty: pass at least one array")
    raise ValueError(
        "cannot tell the backend from data of type "
        f"{sorted({type(x).__name__ for x in _leaves(data)})}: pass torch tensors (Pyro), "
        "jax arrays (NumPyro), or backend='pyro' / backend='numpyro'"
    )
