"""``numpyro.optim`` optimizers and optax transformations as the (init, update) pair."""

import numpyro.optim

from ebm_ppl.backend import Optimizer

__all__ = ["make_optimizer"]


def make_optimizer(optimizer=None):
    """Wrap a ``numpyro.optim`` optimizer or an ``optax.GradientTransformation``
    (default ``numpyro.optim.Adam(1e-2)``); the update is pure and jittable."""
    if optimizer is None:
        optimizer = numpyro.optim.Adam(step_size=1e-2)
    if not isinstance(optimizer, numpyro.optim._NumPyroOptim):
        try:
            import optax
        except ImportError:  # pragma: no cover
            optax = None
        if optax is not None and isinstance(optimizer, optax.GradientTransformation):
            optimizer = numpyro.optim.optax_to_numpyro(optimizer)
        else:
            raise TypeError(
                "optimizer: the NumPyro backend takes a numpyro.optim optimizer or an "
                f"optax.GradientTransformation, got {type(optimizer).__name__}"
            )

    def init(params, state=None):
        return optimizer.init(params) if state is None else state

    def update(grads, opt_state, params, value=None):
        if getattr(optimizer, "update_with_value", False):
            opt_state = optimizer.update(grads, opt_state, value=value)
        else:
            opt_state = optimizer.update(grads, opt_state)
        return optimizer.get_params(opt_state), opt_state

    def get_state(opt_state):
        return opt_state

    return Optimizer(init, update, get_state)
