"""``pyro.optim`` optimizers as the (init, update) pair the fit uses."""

import copy

import pyro.optim
from pyro.optim.lr_scheduler import PyroLRScheduler

from ebm_ppl.backend import Optimizer

__all__ = ["make_optimizer"]


def make_optimizer(optimizer=None):
    """Wrap a ``pyro.optim.PyroOptim`` (default ``pyro.optim.Adam({"lr": 1e-2})``).

    A ``PyroLRScheduler`` is stepped once after every parameter update.
    """
    if optimizer is None:
        optimizer = pyro.optim.Adam({"lr": 1e-2})
    if not isinstance(optimizer, pyro.optim.PyroOptim):
        raise TypeError(
            "optimizer: the Pyro backend takes a pyro.optim.PyroOptim, e.g. "
            f"pyro.optim.Adam({{'lr': 0.01}}), got {type(optimizer).__name__}"
        )

    def init(params, state=None):
        if state is not None:  # resume: fresh torch optimizers, loaded with the saved state
            optimizer.optim_objs.clear()
            optimizer.grad_clip.clear()
            optimizer._state_waiting_to_be_consumed.clear()
            optimizer.set_state(copy.deepcopy(state))
        return optimizer

    def update(grads, opt_state, params, value=None):
        for name, p in params.items():
            p.grad = grads[name]
        opt_state(list(params.values()))
        for p in params.values():
            p.grad = None
        if isinstance(opt_state, PyroLRScheduler):
            opt_state.step()
        return params, opt_state

    def get_state(opt_state):
        return copy.deepcopy(opt_state.get_state())

    return Optimizer(init, update, get_state)
