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


def snapshot_params():
    """The param store's names, constraints and (copies of the) unconstrained values."""
    store = pyro.get_param_store()
    return {name: (store._params[name], store._params[name].detach().clone(), store._constraints.get(name))
            for name in list(store._params)}


def restore_snapshot(snapshot):
    """Put the param store back as :func:`snapshot_params` found it: parameters a rejected
    call added are removed, values and constraints of the others restored (in place)."""
    store = pyro.get_param_store()
    for name in [n for n in store._params if n not in snapshot]:
        del store[name]
    with torch.no_grad():
        for name, (tensor, value, constraint) in snapshot.items():
            if store._params.get(name) is not tensor:
                old = store._params.get(name)
                if old is not None:
                    store._param_to_name.pop(old, None)
                store._params[name] = tensor
                store._param_to_name[tensor] = name
            if tensor.shape == value.shape:
                tensor.copy_(value)
            if constraint is not None:
                store._constraints[name] = constraint
