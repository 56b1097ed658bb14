"""Pyro's param store: parameters restored from saved values, snapshots of the store and
their restoration after a rejected call."""

import torch
import pyro


def restore_params(info, saved_u):
    """Copy saved unconstrained values into the param store's tensors (in place)."""
    out = {}
    with torch.no_grad():
        for name, u in info.init_params.items():
            u.copy_(saved_u[name])
            out[name] = u
    return out


def store_params(info, params_u):
    """Pyro's parameters already live in the param store; nothing to do."""
    return None


def store_state():
    """The param store's ``get_state()``: {"params": name -> unconstrained tensor,
    "constraints": name -> constraint} (shallow copies of the store's own dicts).

    ``get_state`` removes the ``unconstrained`` weak reference that the store attaches to a
    parameter it hands out (to let the tensors be pickled); it is put back here, so that
    a tensor a caller got from ``pyro.param`` before still answers ``.unconstrained()``."""
    store = pyro.get_param_store()
    refs = {name: vars(t).get("unconstrained") for name, t in store.named_parameters()}
    state = store.get_state()
    for name, t in state["params"].items():
        if refs.get(name) is not None:
            t.unconstrained = refs[name]
    return state


def stored_unconstrained(name):
    """The param store's unconstrained tensor of ``name`` (None when it holds no such parameter)."""
    store = pyro.get_param_store()
    return store.get_param(name).unconstrained() if name in store else None


def snapshot_params():
    """The param store's names, constraints and (copies of the) unconstrained values."""
    state = store_state()
    return {name: (t, t.detach().clone(), state["constraints"].get(name)) for name, t in state["params"].items()}


def restore_snapshot(snapshot):
    """Put the param store back as :func:`snapshot_params` found it: parameters a rejected
    call added are removed, values and constraints of the others restored (values in place;
    the store then holds the snapshot's own tensors, in its order of names as it was)."""
    store = pyro.get_param_store()
    order = [n for n in store.keys() if n in snapshot] + [n for n in snapshot if n not in store]
    with torch.no_grad():
        for name, (tensor, value, constraint) in snapshot.items():
            if tensor.shape == value.shape:
                tensor.copy_(value)
    store.clear()
    store.set_state({"params": {n: snapshot[n][0] for n in order},
                     "constraints": {n: snapshot[n][2] for n in order if snapshot[n][2] is not None}})
