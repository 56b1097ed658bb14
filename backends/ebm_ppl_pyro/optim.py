"""``pyro.optim`` optimizers as the (init, update) pair the fit uses."""

import copy
import math
import warnings

import torch
import pyro
import pyro.optim
from pyro.optim.clipped_adam import ClippedAdam
from pyro.optim.lr_scheduler import PyroLRScheduler
from pyro.optim.optim import normalize_param_name
from pyro.params import module_from_param_with_module_name, user_param_name

from ebm_ppl.backend import Optimizer

from .ops import ops

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


# torch optimizers whose step updates each parameter from its own gradient and state alone
# and leaves its param_group as it was: one step over all parameters equals one step per
# parameter (ClippedAdam is left out: its step decays the group's lr in place)
_ELEMENTWISE = tuple(getattr(torch.optim, n) for n in ("Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adamax",
                                                       "NAdam", "RAdam", "Adadelta") if hasattr(torch.optim, n))


def _hyper(group):
    return {k: v for k, v in group.items() if k != "params"}


class _Merged:
    """One torch optimizer stepping all parameters at once (one ``step`` call instead of
    one per parameter), sharing the per-parameter optimizers' state dicts (the same dict
    objects, updated in place), so that ``PyroOptim.get_state`` and resuming see what
    Pyro's own per-parameter stepping would give, bit for bit. Built for a plain
    ``PyroOptim`` whose per-parameter optimizers are all of one elementwise type (see
    ``_ELEMENTWISE``) with equal hyperparameters, no gradient clipping and no hooks;
    :meth:`usable` re-checks that cheaply before every step.

    Before each step the parameters and state tensors are copied into buffers kept across
    updates (one ``torch._foreach_copy_``), so a step that makes a parameter non-finite is
    undone in place without allocating."""

    def __init__(self, opt_state, params):
        self.params = list(params)
        self.optims = [opt_state.optim_objs[p] for p in self.params]
        self.states = [o.state[p] for o, p in zip(self.optims, self.params)]
        self.hyper = _hyper(self.optims[0].param_groups[0])
        self.merged = type(self.optims[0])([{"params": self.params, **self.hyper}])
        for p, st in zip(self.params, self.states):
            self.merged.state[p] = st
        self.sizes = [len(st) for st in self.states]
        self.tensors = list(self.params) + [v for st in self.states for v in st.values() if torch.is_tensor(v)]
        self.others = [(st, k, v) for st in self.states for k, v in st.items() if not torch.is_tensor(v)]
        self.buffers = [torch.empty_like(t) for t in self.tensors]

    @staticmethod
    def possible(opt_state, params):
        if type(opt_state) is not pyro.optim.PyroOptim or not params:
            return False
        optims = [opt_state.optim_objs.get(p) for p in params]
        if any(o is None for o in optims) or any(opt_state.grad_clip.get(p) is not None for p in params):
            return False
        kind = type(optims[0])
        if kind not in _ELEMENTWISE or any(type(o) is not kind for o in optims):
            return False
        if not all(_alone(o, p) for o, p in zip(optims, params)):
            return False
        hyper = _hyper(optims[0].param_groups[0])
        return not hyper.get("differentiable", False) and all(_hyper(o.param_groups[0]) == hyper for o in optims[1:])

    def usable(self, opt_state, params):
        """Still the same parameters, optimizers, state dicts and hyperparameters."""
        if len(params) != len(self.params) or any(a is not b for a, b in zip(params, self.params)):
            return False
        objs = opt_state.optim_objs
        for p, o, st, n in zip(self.params, self.optims, self.states, self.sizes):
            if objs.get(p) is not o or o.state.get(p) is not st or len(st) != n or opt_state.grad_clip.get(p):
                return False
        return all(_hyper(o.param_groups[0]) == self.hyper for o in self.optims)

    def step(self, grads):
        """One step; False (and everything as before it) when a parameter is not finite after it."""
        with torch.no_grad():
            torch._foreach_copy_(self.buffers, self.tensors)
        others = [(st, k, copy.deepcopy(v)) for st, k, v in self.others]
        for p, g in zip(self.params, grads):
            p.grad = g
        with torch.no_grad():
            self.merged.step()  # torch's public step (no hooks are registered on this private optimizer)
        for p in self.params:
            p.grad = None
        if _all_finite(self.params):
            return True
        with torch.no_grad():
            torch._foreach_copy_(self.tensors, self.buffers)
        for st, k, v in others:
            st[k] = v
        return False


def _alone(optim, p):
    """``optim`` steps ``p`` alone, has stepped it (its state exists), has no step hooks, and
    no tensor-valued hyperparameters."""
    groups = optim.param_groups
    return (len(groups) == 1 and len(groups[0]["params"]) == 1 and groups[0]["params"][0] is p
            and bool(optim.state.get(p)) and not optim._optimizer_step_pre_hooks and not optim._optimizer_step_post_hooks
            and not any(torch.is_tensor(v) for k, v in groups[0].items() if k != "params"))


def _all_finite(tensors):
    """Whether every entry of ``tensors`` is finite."""
    return bool(ops.all_finite(list(tensors)))


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


def _count(value, what):
    """A saved step count as an int, checked to be an integer in [0, 2**53). Not bounded by
    the result's updates: a ``PyroOptim`` used again for a new fit on the same param store
    keeps stepping the torch optimizers it made, so its counts may exceed them."""
    try:
        count = float(value.item() if torch.is_tensor(value) and value.numel() == 1 else value)
    except (TypeError, ValueError, RuntimeError):
        count = float("nan")
    if not (math.isfinite(count) and 0 <= count < 2**53 and count == int(count)):
        raise ValueError(f"resume: the optimizer state's {what} is {value!r}, not a step count (an integer in "
                         "[0, 2**53))")
    return int(count)


def _check_counts(name, st, scheduled):
    """One parameter's saved state holds the state of one parameter, and its step counts
    (torch's ``step``, the scheduler's ``last_epoch``) are counts."""
    optim = st["optimizer"] if scheduled else st
    if (not isinstance(optim, dict) or not isinstance(optim.get("state"), dict) or not set(optim["state"]) <= {0}
            or not isinstance(optim["state"].get(0, {}), dict)):
        raise ValueError(f"resume: the optimizer state of {name!r} is not a one-parameter torch optimizer state")
    for key, value in optim["state"].get(0, {}).items():
        if key == "step":
            _count(value, f"step of {name!r}")
    if scheduled:
        if not isinstance(st["scheduler"], dict) or "last_epoch" not in st["scheduler"]:
            raise ValueError(f"resume: the scheduler state of {name!r} has no last_epoch")
        _count(st["scheduler"]["last_epoch"], f"scheduler's last_epoch of {name!r}")


_MAX_REPLAY = 10**6  # steps replayed one by one (a few seconds at most); beyond, closed forms


def _decays(optimizer):
    """Whether the torch optimizer changes its own learning rate at each step (ClippedAdam's ``lrd``)."""
    return isinstance(optimizer.pt_optim_constructor, type) and issubclass(optimizer.pt_optim_constructor, ClippedAdam)


def _replayable(optimizer, steps):
    """Whether :func:`_advance` can bring ``optimizer``'s schedule to ``steps``."""
    if steps <= _MAX_REPLAY or not isinstance(optimizer, PyroLRScheduler):
        return True
    return not _decays(optimizer) and hasattr(optimizer.pt_scheduler_constructor, "_get_closed_form_lr")


def _advance(fresh, torch_optim, steps, decays, scheduled):
    """Bring a fresh torch optimizer's groups (and its scheduler ``fresh``) to ``steps``
    steps: one step at a time, with the float arithmetic of the fit (bit for bit), up to
    :data:`_MAX_REPLAY` steps; beyond, in closed form (equal up to rounding)."""
    groups = torch_optim.param_groups
    if steps > _MAX_REPLAY:
        for group in groups if decays else ():
            group["lr"] = group["lr"] * group["lrd"] ** steps
        if scheduled:
            fresh.last_epoch, fresh._step_count = steps, steps + 1
            lrs = fresh._get_closed_form_lr()
            for group, lr in zip(groups, lrs):
                group["lr"] = lr
            fresh._last_lr = list(lrs)
        return
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose here
        warnings.simplefilter("ignore")
        for _ in range(steps):
            if decays:  # what ClippedAdam.step does to its group before each step
                for group in groups:
                    group["lr"] *= group["lrd"]
            if scheduled:
                fresh.step()


def _replay(optimizer, p, saved, cache):
    """``saved`` (one parameter's ``PyroOptim.get_state()`` entry) with the hyperparameters
    of the call's optimizer: its torch optimizer's ``param_groups`` (and scheduler) are
    made afresh from ``optimizer``'s arguments, as Pyro makes them, and brought to the
    saved step count by replaying what changes them (a scheduler's steps, ClippedAdam's
    learning-rate decay; :func:`_advance`), so an unchanged optimizer resumes bit for bit;
    only the per-parameter state (moments, step counts) comes from ``saved``."""
    scheduled = isinstance(optimizer, PyroLRScheduler)
    optim_state = saved["optimizer"] if scheduled else saved
    decays = _decays(optimizer)
    if scheduled:
        steps = int(saved["scheduler"]["last_epoch"])
    else:
        steps = int(float(optim_state["state"].get(0, {}).get("step", 0))) if decays else 0
    key = (repr(sorted(_optim_args(optimizer, p).items())), steps)
    if key not in cache:
        fresh = _fresh_optim(optimizer, p)  # a new torch optimizer (in a new scheduler) for p
        torch_optim = fresh.optimizer if scheduled else fresh
        _advance(fresh, torch_optim, steps, decays, scheduled)
        cache[key] = (torch_optim.state_dict()["param_groups"], fresh.state_dict() if scheduled else None)
    groups, scheduler = cache[key]
    optim = {"state": optim_state["state"], "param_groups": copy.deepcopy(groups)}
    return {"optimizer": optim, "scheduler": copy.deepcopy(scheduler)} if scheduled else optim


def _optim_args(optimizer, p):
    """The torch optimizer's arguments for parameter ``p``, as ``PyroOptim`` computes them
    (a dict, or a callable of the parameter's name), from its public attributes."""
    args = optimizer.pt_optim_args
    if not callable(args):
        return args
    name = pyro.get_param_store().param_name(p)
    if optimizer.pt_optim_args_argc == 1:
        return args(normalize_param_name(name))
    return args(module_from_param_with_module_name(name), user_param_name(name))


def _fresh_optim(optimizer, p):
    """A new torch optimizer for ``p`` (in a new scheduler for ``PyroLRScheduler``), made
    as Pyro makes one, from the wrapper's public constructor attributes."""
    optim = optimizer.pt_optim_constructor([p], **_optim_args(optimizer, p))
    if isinstance(optimizer, PyroLRScheduler):
        return optimizer.pt_scheduler_constructor(optim, **optimizer.kwargs)
    return optim


def _drop_unconsumed(optimizer, names):
    """Drop the states that ``optimizer.set_state`` was given for ``names`` and that Pyro has
    not yet loaded (it loads one when it first steps a parameter of that name): None is
    what Pyro then takes for "no saved state"."""
    optimizer.set_state({name: None for name in names})


def make_optimizer(optimizer=None):
    """Wrap a ``pyro.optim.PyroOptim`` (default ``pyro.optim.Adam({"lr": 1e-2})``).

    A ``PyroLRScheduler`` is stepped once after every parameter update. A step that
    makes a parameter non-finite is undone (parameters and optimizer state restored).
    Once Pyro has made its per-parameter optimizers (the first update), a plain
    ``PyroOptim`` of an elementwise torch optimizer steps all parameters in one torch
    step over the same states (:class:`_Merged`: the same results, bit for bit).
    """
    if optimizer is None:
        optimizer = pyro.optim.Adam({"lr": 1e-2})
    if not isinstance(optimizer, pyro.optim.PyroOptim):
        raise TypeError(
            "optimizer: the Pyro backend takes a pyro.optim.PyroOptim, e.g. "
            f"pyro.optim.Adam({{'lr': 0.01}}), got {type(optimizer).__name__}"
        )
    kind = _kind(optimizer)

    def init(params, state=None, replace_params=False):
        # the torch optimizers hold no copy of the parameters: replace_params changes nothing
        store = pyro.get_param_store()
        for p in [p for p in optimizer.optim_objs if store.param_name(p) is None]:  # from a cleared store
            del optimizer.optim_objs[p]
            optimizer.grad_clip.pop(p, None)
        if state is not None:  # resume: fresh torch optimizers, loaded with the saved state
            optimizer.optim_objs.clear()
            optimizer.grad_clip.clear()
            _drop_unconsumed(optimizer, set(store.keys()) | set(params))
            cache = {}
            own = {name: _replay(optimizer, params[name], st, cache) for name, st in state.items()}
            optimizer.set_state(copy.deepcopy(own))
        return optimizer

    merged = [None]  # the _Merged fast path, once the per-parameter optimizers exist

    def update(grads, opt_state, params, value=None):
        values = list(params.values())
        fast = merged[0]
        if fast is None or not fast.usable(opt_state, values):
            fast = merged[0] = _Merged(opt_state, values) if _Merged.possible(opt_state, values) else None
        if fast is not None:
            return params, opt_state, fast.step([grads[n] for n in params])
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

    def check_state(state, params, num_updates=None):
        """``state`` fits this optimizer; its step counts are counts (``num_updates`` does not
        bound them here, see :func:`_count`)."""
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
            _check_counts(name, st, isinstance(optimizer, PyroLRScheduler))
            if isinstance(optimizer, PyroLRScheduler) and not _replayable(optimizer, st["scheduler"]["last_epoch"]):
                raise ValueError(f"resume: the scheduler of {name!r} is at step {st['scheduler']['last_epoch']}, "
                                 f"more than the {_MAX_REPLAY} steps replayed one by one, and {kind} has no "
                                 "closed form to go further")

    return Optimizer(init, update, get_state, kind, check, check_state)
