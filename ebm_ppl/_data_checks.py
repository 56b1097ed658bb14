"""Checks of what is passed as data, before a backend touches it: containers that are not
arrays (generators, data loaders, lists of tensors), tensors without values (PyTorch's
``meta`` device) and complex dtypes. Each raises ``TypeError`` / ``ValueError`` naming the
argument (``data``, ``example``) and what to pass instead.

Only the leaves' types, dtypes and devices are read (no framework is imported, no value is
read), so the checks cost nothing on a large data set and run before anything changes.
Half-precision floats (``float16``, ``bfloat16``) are not refused: the backends' ``as_data``
turns them into float32 copies, and the fit computes in float32.
"""

import collections.abc
import numbers

__all__ = ["check_data"]


def _dtype_name(dtype):
    """``"complex64"`` for ``torch.complex64``, ``numpy.complex64`` and ``jnp.complex64`` alike."""
    return str(dtype).replace("torch.", "")


def _framework(leaf):
    module = type(leaf).__module__.split(".")[0]
    return {"torch": "torch", "jax": "jax", "jaxlib": "jax"}.get(module)


_KINDS = {"torch": ("torch tensors", "torch.stack"), "jax": ("jax arrays", "jnp.stack")}


def _check_container(where, leaf):
    """Refuse what is not an array: an iterator (a generator), an object without a shape
    (a DataLoader, a Dataset, a set), a list or tuple of tensors."""
    name = type(leaf).__name__
    if isinstance(leaf, (list, tuple)):  # nested numbers are an array (given backend=); tensors are not
        kind = _framework(leaf[0]) if leaf and hasattr(leaf[0], "shape") else None
        if kind in _KINDS:
            what, stack = _KINDS[kind]
            raise TypeError(f"{where} is a {name} of {len(leaf)} {what}: pass one array with the examples on "
                            f"axis 0, e.g. {stack}({where}), or a dict of such arrays (one per observed site)")
        return
    if hasattr(leaf, "shape") or hasattr(leaf, "__array__") or isinstance(leaf, (numbers.Number, str, bytes)):
        return  # an array, or something the framework makes one of (a 0-d value is refused later)
    if isinstance(leaf, collections.abc.Iterator):
        raise TypeError(f"{where} is an iterator ({name}), which has no shape and is used up by reading it: pass "
                        "the whole training set as one array with the examples on axis 0 (e.g. "
                        "torch.stack(list(...)) / jnp.stack(list(...))); minibatches are drawn by batch_size=")
    raise TypeError(f"{where} is a {name}, not an array: pass the whole training set as one array with the "
                    "examples on axis 0 (or a dict of such arrays); minibatches are drawn by batch_size=")


def _check_values(where, leaf):
    """Refuse a tensor that holds no values (``meta``) and complex dtypes."""
    if getattr(leaf, "is_meta", False) is True:
        raise ValueError(f"{where} is a tensor on PyTorch's 'meta' device, which holds shapes but no values: "
                         "pass a tensor with its data (e.g. on 'cpu' or 'cuda')")
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and _dtype_name(dtype).startswith("complex"):
        raise TypeError(f"{where} has the complex dtype {_dtype_name(dtype)}: models are fitted to real-valued "
                        "data; pass the real and imaginary parts as two real leaves of a dict (x.real, x.imag), "
                        "or abs(x)")


def check_data(data, argument="data"):
    """Refuse, naming ``argument`` and the leaf, data that is not an array or a dict of
    arrays with values: see the module docstring. Cheap: no value is read."""
    if isinstance(data, dict):
        for key, leaf in data.items():
            where = f"{argument}[{key!r}]"
            _check_container(where, leaf)
            _check_values(where, leaf)
        return
    _check_container(argument, data)
    _check_values(argument, data)
