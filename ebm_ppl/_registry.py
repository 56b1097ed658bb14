"""The state types a checkpoint may name: a fixed registry, never an import by name.

A checkpoint records each NamedTuple in a saved state by ``"module:QualName"``. Loading
looks that name up here and nowhere else: ebm_ppl's own state types enter
:data:`STATE_TYPES` when their module is imported (the :func:`state_type` decorator, where
the class is defined); the framework state types that a fit can hold are listed in
:data:`FRAMEWORK_STATE_TYPES`, and are resolved only from modules that are already
imported (the backend that holds the arrays imports them). A name in neither raises
``ValueError``: no module is imported and no attribute is looked up because a file
named it.

Optimizer states need no entry: the Pyro backend saves ``PyroOptim.get_state()`` (dicts,
lists and tensors of torch's ``state_dict``) and the NumPyro backend the leaves of the
optimizer's pytree (a list of arrays, put back into the structure of a fresh state of
the call's optimizer), so no optax, ``numpyro.optim``, ``pyro.optim`` or torch type is
ever named in a file.
"""

import sys

__all__ = ["STATE_TYPES", "FRAMEWORK_STATE_TYPES", "state_type", "state_class", "type_name", "is_registered"]

STATE_TYPES = {}

# name in the file -> (module, attribute): the framework NamedTuples a saved state can
# hold (NumPyro's HMC/NUTS state when a numpyro.infer kernel is the sampler)
FRAMEWORK_STATE_TYPES = {
    "numpyro.infer.hmc:HMCState": ("numpyro.infer.hmc", "HMCState"),
    "numpyro.infer.hmc_util:HMCAdaptState": ("numpyro.infer.hmc_util", "HMCAdaptState"),
}


def type_name(cls):
    """``"module:QualName"``, the name a checkpoint records for ``cls``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def state_type(cls):
    """Class decorator: enter the NamedTuple ``cls`` in the registry of state types that
    checkpoints save and load.

    Parameters
    ----------
    cls : type
        A NamedTuple class (a state of an estimator or a sampler).

    Returns
    -------
    type
        ``cls`` itself.

    Examples
    --------
    >>> from typing import Any, NamedTuple
    >>> @state_type
    ... class MyState(NamedTuple):
    ...     position: Any
    """
    if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
        raise TypeError(f"state_type: {cls!r} is not a NamedTuple class")
    STATE_TYPES[type_name(cls)] = cls
    return cls


def _framework_class(name):
    module, attribute = FRAMEWORK_STATE_TYPES[name]
    mod = sys.modules.get(module)  # imported by the backend, never by the file's say-so
    return None if mod is None else vars(mod).get(attribute)


def is_registered(cls):
    """Whether a checkpoint can save (and load) a NamedTuple of type ``cls``."""
    name = type_name(cls)
    if name in STATE_TYPES:
        return STATE_TYPES[name] is cls
    return name in FRAMEWORK_STATE_TYPES and _framework_class(name) is cls


def state_class(name, fields):
    """The registered NamedTuple class called ``name`` with exactly the field names
    ``fields``, else ``ValueError``."""
    cls = STATE_TYPES.get(name) if isinstance(name, str) else None
    if cls is None and isinstance(name, str) and name in FRAMEWORK_STATE_TYPES:
        cls = _framework_class(name)
    if cls is None:
        raise ValueError(f"unknown state type {name!r}: not one of the state types a checkpoint may hold "
                         f"(ebm_ppl's own and {sorted(FRAMEWORK_STATE_TYPES)})")
    if tuple(cls._fields) != tuple(fields):
        raise ValueError(f"state type {name!r} has fields {list(cls._fields)} in this version, the file says "
                         f"{list(fields)}")
    return cls
