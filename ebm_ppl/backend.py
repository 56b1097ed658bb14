"""The backend contract, the registry of backends, and detection from array types.

A backend is an importable module (``ebm_ppl_pyro``, ``ebm_ppl_numpyro``) that satisfies
:class:`Backend`: an ``ops`` object satisfying :class:`Ops` (random keys, gradients, loops
and the few array functions the algorithms need; everything else is array arithmetic that
torch and jax share through ``ops.xp``), ``compile_model`` (a model turned into the pure
functions of :class:`ModelInfo`), ``make_optimizer`` (the framework's optimizer as an
:class:`Optimizer` pair) and the parameter-store functions. Every member is documented
here once; ``tests/test_backend_contract.py`` checks both backends member by member.

The core never imports a framework: a backend module is imported only when it is used.
"""

import importlib
from typing import Any, Callable, NamedTuple, Optional, Protocol, runtime_checkable

from ._data_checks import check_data

__all__ = ["SiteInfo", "ModelInfo", "Optimizer", "Ops", "Backend", "Placement", "get_backend", "detect_backend",
           "register_backend", "BACKENDS"]

# backend name -> its package (imported when data of its kind first arrives)
BACKENDS = {}
# backend name -> the top-level modules of the array types it claims (read without importing them)
ARRAY_MODULES = {}


def register_backend(name, package, array_modules):
    """Declare a backend: ``name`` (what ``backend=`` takes), the ``package`` that
    implements the contract, and the top-level modules whose array types it claims for
    detection (``("torch",)``). Two backends may claim the same arrays (a second backend on
    JAX): such data then needs ``backend=``."""
    BACKENDS[name] = package
    ARRAY_MODULES[name] = tuple(array_modules)


register_backend("pyro", "ebm_ppl_pyro", ("torch",))
register_backend("numpyro", "ebm_ppl_numpyro", ("jax", "jaxlib"))


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
    one_hot : bool
        A one-hot site (Pyro's ``OneHotCategorical``): each value is a one-hot vector along
        the last axis of ``shape`` (K states; leading axes are independent groups), and
        ``values`` is None (its coordinates are not free: ``Gibbs`` and enumeration move
        or list the K states of each group).
    """

    name: str
    shape: tuple
    is_discrete: bool
    is_observed: bool
    values: Optional[tuple]
    transform: Any
    support: str
    dtype: Any
    one_hot: bool = False


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
        ``sample_base(rng_key, num_chains) -> values`` drawn jointly from the sites' base
        distributions, each site given the values drawn before it (the measure whose log
        density ``log_density_parts`` gives as ``log_base``; improper bases: uniform in
        (-2, 2) in unconstrained space).
    log_density_parts : callable
        ``log_density_parts(params, values) -> (log_density, log_base)``, both ``(num_chains,)``:
        log p̃ as ``log_density`` gives it, and the log-probability of the sample sites alone
        (the base measure, factors left out), from one run of the model.
    improper_sites : tuple
        Names of the sites whose base distribution is improper (e.g. ``ImproperUniform``):
        ``sample_base`` does not draw them from their base and ``log_base`` is not normalized.
    log_density_grad : callable
        ``log_density_grad(params, values, names, value=True) -> (log_density, {name: array})``:
        the per-row log density and the gradient of its sum over rows with respect to
        ``values[name]`` for ``name`` in ``names`` (values taken as floats): the gradient
        path of the samplers (Pyro: one captured graph of the forward and backward pass;
        NumPyro: ``jax.value_and_grad``). With ``value=False`` the caller needs the
        gradient alone and ``log_density`` may be None (Pyro then runs the backward pass alone).
    weighted_param_grad : callable
        ``weighted_param_grad(params, values, weights) -> (log_density, grads)``: the
        per-row log density and the gradient of Σ_rows weights · log_density with respect
        to ``params`` (the fit's surrogate; Pyro: one captured graph).
    param_constraints : dict, optional
        parameter name -> a text description of its constraint (``repr``), which
        ``resume=`` compares with the result's.
    covariates : dict, optional
        covariate name -> the data leaf the model was compiled with (conditional models,
        ``covariates=``): inputs that every ``values`` dict carries under their own names,
        one row per chain, and that no sampler moves; empty for a joint model.
    deterministic : callable
        ``deterministic(params, values) -> {name: array}``: the model's deterministic sites
        (``pyro.deterministic`` / ``numpy.deterministic``) computed from ``values`` (every
        site), one row per row of ``values``; ``{}`` when the model has none.
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
    log_density_grad: Optional[Callable] = None  # every backend supplies it (contract test)
    weighted_param_grad: Optional[Callable] = None  # every backend supplies it (contract test)
    param_constraints: Optional[dict] = None
    covariates: Optional[dict] = None
    log_prior: Optional[Callable] = None
    deterministic: Optional[Callable] = None


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
    ``check_state(state, params, num_updates=None)`` raises ``ValueError`` when a saved
    state does not fit this optimizer and these parameters, or its step counts are not
    counts (negative; on NumPyro, whose optimizer state starts afresh with each fit that
    does not resume, above ``num_updates``). ``init(params, state=...)`` takes only the state
    from ``state``: hyperparameters (learning rate, schedule) are the optimizer's own;
    ``init(params, state=..., replace_params=True)`` takes the parameters from ``params``
    where the state holds a copy of them (NumPyro's), so an edited ``FitState.params``
    is honoured (without it, a copy that differs from ``params`` is refused).
    ``params_of(opt_state)``, where the state holds that copy (NumPyro), returns it: a
    traced loop then carries the parameters once (two loop outputs of one value cost a
    copy of every parameter at every update); None where it does not (Pyro).
    """

    init: Callable
    update: Callable
    get_state: Callable
    kind: str = ""
    check: Callable = lambda params: None
    check_state: Callable = lambda state, params, num_updates=None: None
    params_of: Optional[Callable] = None


@runtime_checkable
class Placement(Protocol):
    """How a fit is split over devices (NumPyro: a mesh, one program over global arrays)
    or ranks (Pyro: ``torch.distributed``, each rank its own share); what
    ``Backend.make_placement`` returns (None: one device / process).

    A ``"ranks"`` placement also has the collectives its checkpoints and per-example
    chains use (:mod:`ebm_ppl.fit.ranks`; every rank calls them): ``gather(tree)`` (every
    rank's tree, in rank order), ``gather_rows(tree)`` (the ranks' leaves concatenated
    along axis 0), ``share_rows(tables, idx)`` (every rank's new rows ``idx`` of
    per-example tables, written into every rank's) and ``broadcast(tree)`` (rank 0's)."""

    #: ``"devices"`` or ``"ranks"`` (for messages).
    kind: str
    #: devices or ranks the fit is split over.
    num_shards: int
    #: this process's rank (0 on JAX devices).
    rank: int
    #: hashable identity, part of the compiled-update cache key.
    key: Any

    def local_estimator(self, estimator) -> Any:
        """The estimator this shard runs: ``estimator.local_share(num_shards)`` for ranks,
        the estimator itself for devices (one program over the global chains)."""

    def local_indices(self, idx) -> Any:
        """This shard's columns of the ``(updates, batch_size)`` minibatch indices."""

    def sampling_seed(self, rng_seed: int) -> int:
        """The seed of this shard's sampling stream (``rng_seed`` on rank 0 and devices)."""

    def mean(self, tree) -> Any:
        """The mean of ``tree`` over the shards (an all-reduce; the identity on devices)."""

    def place(self, params, opt_state, est_state, data_values) -> tuple:
        """The four placed where the fit runs (replicated, chains split)."""


@runtime_checkable
class Ops(Protocol):
    """What the algorithms call on a backend's ``ops`` object.

    Arrays are the framework's (``torch.Tensor`` / ``jax.Array``); a *tree* is nested dicts,
    tuples, lists and NamedTuples of arrays; a *key* is the framework's random state
    (a ``torch.Generator``, which PyTorch advances in place, or a JAX PRNG key).
    """

    #: ``"pyro"`` or ``"numpyro"``.
    name: str
    #: the array namespace (``torch`` / ``jax.numpy``) for plain arithmetic.
    xp: Any
    #: the integer dtype of indices.
    int_dtype: Any
    #: whether compiled updates are worth keeping across calls (NumPyro: yes; Pyro is eager).
    caches_compiled: bool
    #: whether a fit's update is one traced, compiled program (NumPyro): its arrays are values
    #: (a chunk of updates can be run again from the carry it started from) and what nobody
    #: reads is not computed. Pyro runs eagerly: every line runs, and optimizers step in place.
    traced: bool
    #: how chains and minibatches are split over devices / ranks (None: one device, one process).
    placement: Any

    # ---- more than one device
    def with_placement(self, placement) -> "Ops":
        """These ops for arrays split by ``placement`` (from ``Backend.make_placement``)."""

    def shard_rows(self, tree) -> Any:
        """Chains or a minibatch split along their first axis over the devices (a no-op on
        one device, and on PyTorch, where each rank already holds only its own rows)."""

    # ---- random keys
    def seed(self, rng_seed: int, like) -> Any:
        """A fresh key from an integer seed, on ``like``'s device."""

    def split(self, key, num: int = 2) -> tuple:
        """``num`` keys from ``key`` (Pyro: the same generator ``num`` times)."""

    def fork(self, key) -> Any:
        """An independent key seeded from ``key`` (a second stream)."""

    def select_key(self, pred, new, old) -> Any:
        """``new`` where ``pred`` holds, else ``old`` (inside compiled loops)."""

    def key_state(self, key) -> Any:
        """A copy of ``key``'s state that :meth:`key_from_state` restores (saved with a fit)."""

    def key_from_state(self, state, like) -> Any:
        """The key whose state is ``state``."""

    def uniform(self, key, shape: tuple, like) -> Any:
        """U(0, 1) draws of ``shape`` in ``like``'s floating dtype (the default float if integer)."""

    def normal(self, key, shape: tuple, like) -> Any:
        """N(0, 1) draws of ``shape`` in ``like``'s floating dtype."""

    def bernoulli_logits(self, key, logits) -> Any:
        """Booleans, True with probability sigmoid(``logits``), one uniform per entry."""

    def epoch_permutations(self, key, n: int, num_epochs: int) -> tuple:
        """``(key, numpy array (num_epochs, n))`` of random permutations of ``range(n)``."""

    # ---- arrays
    def asarray(self, value, like, int_: bool = False, bool_: bool = False) -> Any:
        """``value`` as an array of ``like``'s dtype and device (or index / boolean dtype)."""

    def from_numpy(self, x, dtype, like=None) -> Any:
        """The numpy array ``x`` as an array of ``dtype`` (on ``like``'s device)."""

    def zeros(self, shape: tuple, dtype, like=None) -> Any:
        """Zeros of ``shape`` and ``dtype`` (on ``like``'s device)."""

    def to_numpy(self, x) -> Any:
        """``x`` as a numpy array on the host (detached)."""

    def is_floating(self, x) -> bool:
        """Whether ``x`` has a floating dtype."""

    def astype(self, x, dtype) -> Any:
        """``x`` converted to ``dtype``."""

    def pick(self, x, idx) -> Any:
        """``x[n, idx[n]]`` for each row n."""

    def set_column(self, x, i, v) -> Any:
        """A copy of ``x`` with column ``i`` set to ``v``."""

    def set_rows(self, x, idx, v) -> Any:
        """A copy of ``x`` with rows ``idx`` (distinct integers) set to ``v``."""

    def logsumexp(self, x, axis: int = -1) -> Any:
        """log Σ exp(``x``) along ``axis`` (stable; -inf entries allowed)."""

    def nanmean_scalars(self, values) -> Any:
        """The mean of the non-NaN scalars ``values`` (NaN when all are NaN)."""

    def all_finite(self, tree) -> Any:
        """A boolean scalar: every entry of every array of ``tree`` is finite."""

    def first_leaf(self, tree) -> Any:
        """The first array of ``tree``."""

    def map_host(self, fn, tree) -> Any:
        """``fn`` applied on the host (numpy) to every array of ``tree``, results back as arrays."""

    def copy_tree(self, tree) -> Any:
        """An independent copy of ``tree`` (detached), safe from later in-place updates."""

    def stop_gradient(self, tree) -> Any:
        """``tree`` cut from the gradient computation."""

    # ---- transformations and loops
    def value_and_grad(self, fn: Callable, has_aux: bool = False, differentiable: bool = False) -> Callable:
        """``fn(dict of arrays) -> scalar`` (or ``(scalar, aux)``) turned into a function
        returning ``(value, grads)`` (or ``((value, aux), grads)``), grads a dict like the input.

        ``differentiable=True``: the value, aux and gradients stay differentiable, with
        respect to the input and to whatever ``fn`` closes over, so that a function of the
        gradient can be differentiated again (second-order derivatives: score matching's
        gradient of ∇ₓ log p̃ with respect to θ, Hessian-vector products). PyTorch: the
        gradient is taken with ``create_graph=True`` and an input already in a graph is kept
        in it; JAX: ``jax.value_and_grad``, whose results are always differentiable."""

    def jit(self, fn: Callable) -> Callable:
        """``fn`` compiled where the framework compiles (NumPyro), else ``fn``."""

    def no_grad(self) -> Any:
        """A context in which no gradient is recorded."""

    def chain_diagnostics(self, trace) -> tuple:
        """``(split R-hat, ESS summed over chains)`` of ``trace`` (chains, draws), by the
        framework's own diagnostics (``pyro.ops.stats`` / ``numpyro.diagnostics``)."""

    def sample_distribution(self, dist, key, num: int) -> Any:
        """``num`` draws of a framework distribution ``dist`` with the sampling stream ``key``
        (NumPyro: ``dist.sample(key, (num,))``; Pyro: from a seed drawn from ``key``)."""

    def quick_jit(self, fn: Callable) -> Callable:
        """``fn`` compiled quickly for a few calls at set-up (structure probes, samplers'
        checks, initial chains: NumPyro compiles with XLA's backend optimisations off,
        the same values), else ``fn``."""

    def compile_now(self) -> Any:
        """A context in which functions compiled lazily are compiled at their first call of
        a shape (Pyro captures a shape's graphs at its third call otherwise; a no-op where
        ``jit`` compiles at the first call anyway)."""

    def cond(self, pred, true_fn: Callable, false_fn: Callable, operand) -> Any:
        """``true_fn(operand)`` if ``pred`` else ``false_fn(operand)``."""

    def fori_loop(self, lower: int, upper: int, body: Callable, init) -> Any:
        """``carry = body(i, carry)`` for i in [lower, upper)."""

    def eval_shape(self, fn: Callable, *args) -> Any:
        """The structure of ``fn(*args)`` (abstractly where the framework can)."""

    def make_chunk_runner(self, step: Callable) -> Callable:
        """``run(carry, data_values, (idx, active)) -> (carry, stats)``: ``step`` over the
        active updates of a chunk, stopping at the first failed one (``carry.failed >= 0``)."""

    def make_sample_runner(self, kernel, logdensity: Callable, run_kernel: Callable) -> Callable:
        """``run(key, position, aux, num_steps) -> (position, aux)``: ``num_steps``
        transitions of ``kernel`` (compiled once where the framework compiles)."""


@runtime_checkable
class Backend(Protocol):
    """What a backend module exposes (``ebm_ppl_pyro``, ``ebm_ppl_numpyro``)."""

    ops: Ops

    def compile_model(self, model, data, model_args=(), model_kwargs=None, params=None, covariates=(),
                      trace_rows=None) -> ModelInfo:
        """Run ``model`` on ``data`` once and return its :class:`ModelInfo`; ``params``
        (constrained) replace the model's own parameter values (evaluation at given params);
        ``covariates`` names data leaves that are inputs, not sites (conditional models);
        ``trace_rows``: run it on the first ``trace_rows`` rows only, checking the values of
        every row in chunks (a fit's set-up, in memory O(batch): see ``ebm_ppl._rows``)."""

    def make_optimizer(self, optimizer=None) -> Optimizer:
        """The framework's optimizer (``None``: Adam(1e-2)) as an :class:`Optimizer`."""

    def as_data(self, data) -> Any:
        """``data`` (an array or a dict of arrays) checked and converted to the framework's arrays."""

    def restore_params(self, info: ModelInfo, saved_u) -> dict:
        """Unconstrained parameters of ``info`` set from a saved (resumed) state."""

    def store_params(self, info: ModelInfo, params_u) -> None:
        """Write fitted parameters where the framework's users look for them (Pyro: the
        param store and the modules; NumPyro: nowhere)."""

    def snapshot_params(self) -> Any:
        """A copy of the framework's parameter store (Pyro), so a rejected call can undo."""

    def restore_snapshot(self, snapshot) -> None:
        """Put back what :meth:`snapshot_params` copied."""

    def make_placement(self, devices) -> Any:
        """How a fit is split for ``devices=`` (NumPyro: a device mesh) or an initialized
        ``torch.distributed`` (Pyro: this rank's share); None for one device / process."""


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


def detect_backend(data, backend=None, argument="data"):
    """The backend name for ``data``: torch tensors -> "pyro", jax arrays -> "numpyro".
    Data that is not an array or a dict of arrays (a generator, a list of tensors, a
    ``meta`` tensor, complex values) is refused first, naming ``argument`` (see
    ``ebm_ppl._data_checks``)."""
    check_data(data, argument)
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not one of {sorted(BACKENDS)}")
        return backend
    kinds = set()
    for leaf in _leaves(data):
        module = type(leaf).__module__.split(".")[0]
        claims = [n for n, mods in ARRAY_MODULES.items() if module in mods]
        if len(claims) > 1:
            raise ValueError(f"{argument} of type {type(leaf).__name__} is claimed by backends {claims}: pass "
                             "backend= to choose one")
        kinds.add(claims[0] if claims else None)
    if len(kinds) == 1 and None not in kinds:
        return kinds.pop()
    if not kinds:
        raise ValueError("data is empty: pass at least one array")
    raise ValueError(
        "cannot tell the backend from data of type "
        f"{sorted({type(x).__name__ for x in _leaves(data)})}: pass torch tensors (Pyro), "
        "jax arrays (NumPyro), or backend='pyro' / backend='numpyro'"
    )
