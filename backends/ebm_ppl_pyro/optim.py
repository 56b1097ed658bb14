"""``pyro.optim`` optimizers as the (init, update) pair the fit uses."""

import copy
import math

import torch
import pyro
import pyro.optim
from pyro.optim.lr_scheduler import PyroLRScheduler

from ebm_ppl.backend import Optimizer

__all__ = ["make_optimizer"]


def _kind(optimizer):
    if isinstance(optimizer, PyroLRScheduler):
        inner = optimizer.pt_optim_constructor
        return f"pyro.optim.{optimizer.pt_scheduler_constructor.__name__}({getattr(inner, '__name__', inner)})"
    return f"pyro.optim.PyroOptim({optimizer.pt_optim_constructor.__name__})"


def _torch_optimizers(opt_state):
    """param tensor -> its torch optimizer (inside a scheduler for PyroLRScheduler)."""
    out = {}
    for p, obj in opt_state.optim_objs.items():
        out[p] = obj.optimizer if isinstance(opt_state, PyroLRScheduler) else obj
    return out


def _backup(opt_state, params):
    """Copies of what an in-place step changes: parameter values and optimizer states."""
    values = {n: p.detach().clone() for n, p in params.items()}
    states = {}
    for p, optim in _torch_optimizers(opt_state).items():
        states[p] = {k: {n: v.clone() if torch.is_tensor(v) else copy.deepcopy(v) for n, v in st.items()}
                     for k, st in optim.state.items()}
    return values, states, set(opt_state.optim_objs)


def _restore(backup, opt_state, params):
    values, states, known = backup
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(values[n])
    for p in [p for p in opt_state.optim_objs if p not in known]:  # made by this step: made again next time
        del opt_state.optim_objs[p]
        opt_state.grad_clip.pop(p, None)
    for p, optim in _torch_optimizers(opt_state).items():
        optim.state.clear()
        optim.state.update(states[p])


def _check_lr(optimizer):
    args = optimizer.pt_optim_args
    if isinstance(args, dict) and "lr" in args:
        lr = args["lr"]
        try:
            bad = not math.isfinite(float(lr)) or float(lr) < 0
        except (TypeError, ValueError):
            bad = False  # a tensor or schedule: torch checks it
        if bad:
            raise ValueError(f"optimizer: learning rate lr={lr!r} must be a finite number >= 0")


def make_optimizer(optimizer=None):
    """Wrap a ``pyro.optim.PyroOptim`` (default ``pyro.optim.Adam({"lr": 1e-2})``).

    A ``PyroLRScheduler`` is stepped once after every parameter update. A step that
    makes a parameter non-finite is undone (parameters and optimizer state restored).
    """
    if optimizer is None:
        optimizer = pyro.optim.Adam({"lr": 1e-2})
    if not isinstance(optimizer, pyro.optim.PyroOptim):
        raise TypeError(
            "optimizer: the Pyro backend takes a pyro.optim.PyroOptim, e.g. "
            f"pyro.optim.Adam({{'lr': 0.01}}), got {type(optimizer).__name__}"
        )
    kind = _kind(optimizer)

    def init(params, state=None):
        store = pyro.get_param_store()
        for p in [p for p in optimizer.optim_objs if store.param_name(p) is None]:  # from a cleared store
            del optimizer.optim_objs[p]
            optimizer.grad_clip.pop(p, None)
        if state is not None:  # resume: fresh torch optimizers, loaded with the saved state
            optimizer.optim_objs.clear()
            optimizer.grad_clip.clear()
            optimizer._state_waiting_to_be_consumed.clear()
            optimizer.set_state(copy.deepcopy(state))
        return optimizer

    def update(grads, opt_state, params, value=None):
        backup = _backup(opt_state, params)
        for name, p in params.items():
            p.grad = grads[name]
        opt_state(list(params.values()))
        for p in params.values():
            p.grad = None
        if not all(bool(torch.isfinite(p).all()) for p in params.values()):
            _restore(backup, opt_state, params)
            return params, opt_state, False
        if isinstance(opt_state, PyroLRScheduler):
            opt_state.step()
        return params, opt_state, True

    def get_state(opt_state):
        return {k: v for k, v in copy.deepcopy(opt_state.get_state()).items() if k is not None}

    def check(params):
        _check_lr(optimizer)

    def check_state(state, params):
        if not isinstance(state, dict) or any(not isinstance(v, dict) for v in state.values()):
            raise ValueError(f"resume: the result's optimizer state is not a Pyro optimizer state ({kind})")
        unknown = sorted(set(state) - set(params))
        if unknown:
            raise ValueError(f"resume: the result's optimizer state has parameters {unknown} that the model has not")
        keys = {"optimizer", "scheduler"} if isinstance(optimizer, PyroLRScheduler) else {"state", "param_groups"}
        for name, st in state.items():
            if set(st) != keys:
                raise ValueError(f"resume: the result's optimizer state of {name!r} has {sorted(st)}, but the "
                                 f"optimizer given ({kind}) keeps {sorted(keys)}: pass an optimizer of the same kind")

    return Optimizer(init, update, get_state, kind, check, check_state)
