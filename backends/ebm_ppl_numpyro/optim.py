"""``numpyro.optim`` optimizers and optax transformations as the (init, update) pair."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.optim

from ebm_ppl._tree import describe
from ebm_ppl.backend import Optimizer

from .ops import all_finite, quick_jit

__all__ = ["make_optimizer"]


def _kind(optimizer, is_optax):
    if is_optax:
        return "optax.GradientTransformation"
    return f"numpyro.optim.{type(optimizer).__name__}"


def _own_hyperparams(fresh, saved):
    """``saved`` with the hyperparameters of ``fresh`` wherever optax keeps them in the
    state (``inject_hyperparams``): they come from the call's optimizer, not the file
    (schedules are evaluated from the saved step counts at each update)."""
    try:
        import optax
    except ImportError:  # pragma: no cover
        return saved
    kinds = tuple(k for k in (getattr(optax, "InjectHyperparamsState", None),
                              getattr(optax, "InjectStatefulHyperparamsState", None)) if k is not None)

    def is_hyper(x):
        return isinstance(x, kinds)

    def own(f, s):
        return s._replace(hyperparams=f.hyperparams) if is_hyper(f) else s

    return jax.tree_util.tree_map(own, fresh, saved, is_leaf=is_hyper)


def _check_counts(fresh_leaves, saved_leaves, num_updates, kind):
    """Integer scalars that a fresh state starts at 0 (step counts: NumPyro's ``i``, optax's
    ``count``) lie in [0, num_updates] in a saved state."""
    top = float("inf") if num_updates is None else num_updates
    for i, (f, s) in enumerate(zip(fresh_leaves, saved_leaves)):
        f = np.asarray(f)
        if f.ndim == 0 and f.dtype.kind == "i" and int(f) == 0:
            count = int(np.asarray(s))
            if not 0 <= count <= top:
                raise ValueError(f"resume: the result's optimizer state ({kind}) holds a step count of {count} "
                                 f"(leaf {i}), not a count in [0, {top}] (the updates done)")


def _param_positions(optimizer, state):
    """Where each parameter leaf sits among the leaves of an optimizer state: every leaf
    is replaced by its position, and ``get_params`` picks the parameters' positions out."""
    leaves, tree = jax.tree_util.tree_flatten(state)
    marked = jax.tree_util.tree_unflatten(tree, [jnp.full(jnp.shape(x), i, jnp.float32) for i, x in enumerate(leaves)])
    return [int(jnp.ravel(x)[0]) for x in jax.tree_util.tree_leaves(optimizer.get_params(marked))]


def _is_numpyro_optim(optimizer):
    """A ``numpyro.optim`` optimizer (by its public interface: ``init``, ``update``,
    ``get_params``; an optax transformation has no ``get_params``)."""
    return all(callable(getattr(optimizer, n, None)) for n in ("init", "update", "get_params"))


def _probe(optimizer, raw_update):
    """``params -> (all finite, any above 0)`` of one step from zero parameters with unit
    gradients: one quickly compiled call (not one small compilation per operation)."""

    @quick_jit
    def probe_step(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        ones = jax.tree_util.tree_map(jnp.ones_like, params)
        new = optimizer.get_params(raw_update(ones, optimizer.init(zeros), jnp.asarray(0.0)))
        leaves = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(new)]
        if not leaves:
            return jnp.asarray(True), jnp.asarray(False)
        return (jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])),
                jnp.any(jnp.stack([jnp.any(x > 0) for x in leaves])))

    return probe_step


def _as_numpyro_optim(optimizer):
    """``(numpyro.optim optimizer, given as optax?)`` for what ``make_optimizer`` takes."""
    if optimizer is None:
        return numpyro.optim.Adam(step_size=1e-2), False
    if _is_numpyro_optim(optimizer):
        return optimizer, False
    try:
        import optax
    except ImportError:  # pragma: no cover
        optax = None
    if optax is not None and isinstance(optimizer, optax.GradientTransformation):
        return numpyro.optim.optax_to_numpyro(optimizer), True
    raise TypeError("optimizer: the NumPyro backend takes a numpyro.optim optimizer or an "
                    f"optax.GradientTransformation, got {type(optimizer).__name__}")


def make_optimizer(optimizer=None):
    """Wrap a ``numpyro.optim`` optimizer or an ``optax.GradientTransformation``
    (default ``numpyro.optim.Adam(1e-2)``); the update is pure and jittable."""
    optimizer, is_optax = _as_numpyro_optim(optimizer)
    kind = _kind(optimizer, is_optax)

    fresh_state = quick_jit(optimizer.init)  # one quickly compiled call at set-up (eager: one per operation)
    positions = {}  # optimizer-state structure -> where the parameter leaves sit in it

    def init(params, state=None, replace_params=False):
        """A fresh state, or the saved leaves (``get_state``) put back into the tree of a
        fresh state (its structure holds a ``PyTreeDef``, which is not data to save).

        The optimizer's state holds its own copy of the parameters: ``resume=`` refuses a
        state whose copy is not ``params``; with ``replace_params=True`` (Trainer.update,
        where the caller may have edited ``state.params``) ``params`` replace the copy."""
        fresh = fresh_state(params)
        if state is None:
            return fresh
        saved = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(fresh), list(state))
        if replace_params:  # Trainer.update, every update: the positions are found once per structure
            tree, leaves = jax.tree_util.tree_structure(fresh), list(state)
            if tree not in positions:
                positions[tree] = _param_positions(optimizer, fresh)
            for where, value in zip(positions[tree], jax.tree_util.tree_leaves(params)):
                leaves[where] = value
            return _own_hyperparams(fresh, jax.tree_util.tree_unflatten(tree, leaves))
        inside = jax.tree_util.tree_leaves(optimizer.get_params(saved))
        if any(not bool(jnp.array_equal(a, b)) for a, b in zip(inside, jax.tree_util.tree_leaves(params))):
            raise ValueError("resume: the parameters held in the result's optimizer state are not "
                             "state.params (an inconsistent state)")
        return _own_hyperparams(fresh, saved)

    def raw_update(grads, opt_state, value):
        if getattr(optimizer, "update_with_value", False):
            return optimizer.update(grads, opt_state, value=value)
        return optimizer.update(grads, opt_state)

    def update(grads, opt_state, params, value=None):
        new_state = raw_update(grads, opt_state, value)
        new_params = optimizer.get_params(new_state)
        return new_params, new_state, all_finite(new_params)

    def get_state(opt_state):
        """The state's leaves, a list of arrays (``init(params, state=...)`` rebuilds it)."""
        return list(jax.tree_util.tree_leaves(opt_state))

    _probe_step = _probe(optimizer, raw_update)

    def check(params):
        """A probe step from zero parameters with unit gradients must be finite and must not
        go up the gradient (a negative or NaN learning rate), before any update is made."""
        finite, up = (bool(x) for x in _probe_step(params))
        if not finite:
            raise ValueError("optimizer: its first step gives non-finite parameters (a learning rate that is "
                             "NaN or inf?)")
        if up:
            raise ValueError("optimizer: its first step goes up the gradient (a negative learning rate?)")

    def check_state(state, params, num_updates=None):
        if not isinstance(state, (list, tuple)):
            raise ValueError(f"resume: the result's optimizer state is not a NumPyro optimizer state ({kind})")
        fresh_leaves = list(jax.tree_util.tree_leaves(optimizer.init(params)))
        fresh, saved = describe(fresh_leaves), describe(list(state))
        if fresh != saved:
            diff = next(((a, b) for a, b in zip(saved, fresh) if a != b), None)
            where = f": at {diff[0][0] or 'the top'} the result has {diff[0][1]}, this optimizer {diff[1][1]}" if diff else ""
            raise ValueError(f"resume: the result's optimizer state does not fit the optimizer given ({kind}){where}")
        _check_counts(fresh_leaves, list(state), num_updates, kind)

    return Optimizer(init, update, get_state, kind, check, check_state, params_of=optimizer.get_params)
