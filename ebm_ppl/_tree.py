"""Trees of arrays (dicts, lists, tuples, NamedTuples of torch / jax / numpy arrays and
plain numbers) as JSON plus a list of numpy arrays, and back, without pickle.

Used by :mod:`ebm_ppl.checkpoint` to save a :class:`~ebm_ppl.FitResult` and by
``fit_unnormalized(resume=...)`` to compare a saved state's structure with the state the
model would start from.

A description is data, never code. :func:`check` validates a description read from a
file against this grammar before anything is built from it, and lists the arrays it
declares; :func:`decode` then builds the tree, taking NamedTuple classes from the
registry of state types (:mod:`ebm_ppl._registry`), never importing a module it names::

    null | true | false | "string"
    {"int": "-12"}                           any size, exactly (at most 400 digits)
    {"float": "0.1"}                         Python's repr: nan and inf included, exactly
    {"dict": [[key, description], ...]}      keys: strings or integers, none repeated
    {"list": [description, ...]}             also {"tuple": [...]}
    {"namedtuple": "module:Name", "fields": ["name", ...], "items": [description, ...]}
    {"array": 0, "kind": "numpy", "dtype": "<f4", "shape": [3, 2]}
                                             kind "torch" (with "device": "cpu"), "jax" or
                                             "numpy"; dtype a boolean, integer, float or
                                             complex numpy dtype
"""

import re

import numpy as np

from ._registry import is_registered, state_class, type_name

__all__ = ["encode", "check", "decode", "describe", "ArrayRef"]

MAX_DIGITS = 400  # an "int" leaf: at most this many digits
MAX_NDIM = 32  # numpy's own limit is 64
_KINDS = ("torch", "jax", "numpy")
_INT = re.compile(r"-?[0-9]{1,%d}" % MAX_DIGITS)
_DTYPE = re.compile(r"[<|][biufc][0-9]{1,2}")  # little-endian, as numpy writes them here
_DEVICE = re.compile(r"(cpu|cuda|mps|xpu)(:[0-9]{1,4})?")


def _is_namedtuple(x):
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _array_kind(x):
    module = type(x).__module__.split(".")[0]
    if module == "torch":
        return "torch"
    if module in ("jax", "jaxlib"):
        return "jax"
    if isinstance(x, (np.ndarray, np.generic)):
        return "numpy"
    return None


def _to_numpy(x, kind):
    if kind == "torch":
        return x.detach().cpu().numpy()
    if kind == "jax":
        import jax

        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            raise TypeError("typed JAX key arrays cannot be saved; use jax.random.PRNGKey keys")
        return np.asarray(x)
    return np.asarray(x)


def _encode_array(tree, kind, arrays, where):
    a = np.array(_to_numpy(tree, kind), order="C")  # 0-d arrays stay 0-d
    if a.dtype.kind not in "biufc":
        raise TypeError(f"cannot save {where}: an array of dtype {a.dtype} (only boolean, integer, float and "
                        "complex arrays are saved)")
    out = {"array": len(arrays), "kind": kind, "dtype": a.dtype.str, "shape": list(a.shape)}
    if kind == "torch":
        out["device"] = str(tree.device)
    arrays.append(a)
    return out


def encode(tree, arrays, where="state"):
    """A JSON-able description of ``tree``; its arrays are appended to ``arrays`` (numpy).

    Raises ``TypeError`` naming the path of a value that cannot be saved (a NamedTuple
    whose class is not a registered state type, see :mod:`ebm_ppl._registry`, included)."""
    if tree is None or isinstance(tree, (bool, str)):
        return tree
    if isinstance(tree, int):
        return {"int": str(tree)}  # any size, exactly
    if isinstance(tree, float):
        return {"float": repr(tree)}  # nan and inf included, exactly
    if isinstance(tree, dict):
        items = []
        for k, v in tree.items():
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise TypeError(f"cannot save {where}: dict key {k!r} is not a string or an integer")
            items.append([k, encode(v, arrays, f"{where}[{k!r}]")])
        return {"dict": items}
    if _is_namedtuple(tree):
        cls = type(tree)
        if not is_registered(cls):
            raise TypeError(f"cannot save {where}: its type {type_name(cls)} is not a registered state type "
                            "(decorate it with ebm_ppl._registry.state_type)")
        return {"namedtuple": type_name(cls), "fields": list(cls._fields),
                "items": [encode(v, arrays, f"{where}.{f}") for f, v in zip(cls._fields, tree)]}
    if isinstance(tree, (list, tuple)):
        kind = "list" if isinstance(tree, list) else "tuple"
        return {kind: [encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(tree)]}
    kind = _array_kind(tree)
    if kind is None or not hasattr(tree, "shape"):
        raise TypeError(f"cannot save {where}: a value of type {type(tree).__name__} (only arrays, numbers, "
                        "strings, None and dicts/lists/tuples/NamedTuples of them are saved)")
    return _encode_array(tree, kind, arrays, where)


class ArrayRef:
    """An array a description declares: its index in the file, kind, dtype, shape and where."""

    def __init__(self, index, kind, dtype, shape, where):
        self.index, self.kind, self.dtype, self.shape, self.where = index, kind, dtype, shape, where

    @property
    def nbytes(self):
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize


def _fail(where, what):
    raise ValueError(f"{where}: {what}")


def _check_keys(desc, keys, where):
    if set(desc) != set(keys):
        _fail(where, f"malformed description with keys {sorted(desc)[:8]} (expected {sorted(keys)})")


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _check_array(desc, where, refs):
    _check_keys(desc, ("array", "kind", "dtype", "shape", "device") if "device" in desc else
                ("array", "kind", "dtype", "shape"), where)
    index, kind, dtype, shape = desc["array"], desc["kind"], desc["dtype"], desc["shape"]
    if not _is_int(index) or index < 0:
        _fail(where, f"array index {index!r} is not an integer >= 0")
    if kind not in _KINDS:
        _fail(where, f"unknown array kind {kind!r}")
    if not (isinstance(dtype, str) and _DTYPE.fullmatch(dtype)):
        _fail(where, f"array dtype {dtype!r} is not a boolean, integer, float or complex dtype")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        _fail(where, f"array dtype {dtype!r} is not a numpy dtype")
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM and all(_is_int(d) and 0 <= d < 2**62 for d in shape)):
        _fail(where, f"array shape {str(shape)[:80]} is not a list of at most {MAX_NDIM} sizes >= 0")
    if "device" in desc and not (kind == "torch" and isinstance(desc["device"], str)
                                 and _DEVICE.fullmatch(desc["device"])):
        _fail(where, f"array device {str(desc['device'])[:40]!r} is not a torch device ebm_ppl loads on")
    refs.append(ArrayRef(index, kind, dt, tuple(shape), where))


def _check_items(items, where, refs, label):
    if not isinstance(items, list):
        _fail(where, f"{label} is not a list")
    for i, v in enumerate(items):
        check(v, f"{where}[{i}]", refs)


def _check_dict(items, where, refs):
    if not isinstance(items, list):
        _fail(where, "dict items are not a list")
    seen = set()
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and (isinstance(item[0], str) or _is_int(item[0]))):
            _fail(where, f"dict item {str(item)[:80]} is not a [key, value] pair with a string or integer key")
        if item[0] in seen:
            _fail(where, f"dict key {item[0]!r} repeated")
        seen.add(item[0])
        check(item[1], f"{where}[{item[0]!r}]", refs)


def _check_namedtuple(desc, where, refs):
    _check_keys(desc, ("namedtuple", "fields", "items"), where)
    name, fields, items = desc["namedtuple"], desc["fields"], desc["items"]
    if not (isinstance(name, str) and isinstance(fields, list) and all(isinstance(f, str) for f in fields)
            and isinstance(items, list) and len(items) == len(fields)):
        _fail(where, "malformed NamedTuple description")
    for f, v in zip(fields, items):
        check(v, f"{where}.{f}", refs)


def check(desc, where="state", refs=None):
    """Validate a description read from a file against the grammar (module docstring),
    raising ``ValueError`` naming ``where``; returns the :class:`ArrayRef` list of the
    arrays it declares (appended to ``refs`` when given). Recursion follows the
    description's nesting, which the caller bounds."""
    refs = [] if refs is None else refs
    if desc is None or isinstance(desc, (bool, str)):
        return refs
    if not isinstance(desc, dict) or len(desc) == 0:
        _fail(where, f"malformed description {str(desc)[:80]}")
    if "int" in desc:
        _check_keys(desc, ("int",), where)
        if not (isinstance(desc["int"], str) and _INT.fullmatch(desc["int"])):
            _fail(where, f"integer {str(desc['int'])[:80]!r} is not a decimal of at most {MAX_DIGITS} digits")
    elif "float" in desc:
        _check_keys(desc, ("float",), where)
        value = desc["float"]
        try:
            ok = isinstance(value, str) and len(value) <= 64 and isinstance(float(value), float)
        except ValueError:
            ok = False
        if not ok:
            _fail(where, f"float {str(value)[:80]!r} is not a number")
    elif "dict" in desc:
        _check_keys(desc, ("dict",), where)
        _check_dict(desc["dict"], where, refs)
    elif "namedtuple" in desc:
        _check_namedtuple(desc, where, refs)
    elif "list" in desc or "tuple" in desc:
        label = "list" if "list" in desc else "tuple"
        _check_keys(desc, (label,), where)
        _check_items(desc[label], where, refs, label)
    elif "array" in desc:
        _check_array(desc, where, refs)
    else:
        _fail(where, f"malformed description with keys {sorted(desc)[:8]}")
    return refs


def _from_numpy(a, desc):
    kind = desc["kind"]
    if kind == "torch":
        import torch

        t = torch.from_numpy(a)  # ``a`` was read for this tree alone: no copy
        device = desc.get("device", "cpu")
        if device != "cpu":
            try:
                t = t.to(device)
            except (RuntimeError, AssertionError):  # that device is not here: the tensor stays on the CPU
                pass
        return t
    if kind == "jax":
        import jax.numpy as jnp

        return jnp.asarray(a)
    return a


def decode(desc, arrays):
    """The tree that :func:`encode` described (arrays of the kind they were saved from),
    from a description that :func:`check` accepted and the arrays it declares."""
    if desc is None or isinstance(desc, (bool, str)):
        return desc
    if "int" in desc:
        return int(desc["int"])
    if "float" in desc:
        return float(desc["float"])
    if "dict" in desc:
        return {k: decode(v, arrays) for k, v in desc["dict"]}
    if "namedtuple" in desc:
        cls = state_class(desc["namedtuple"], desc["fields"])
        return cls(*[decode(v, arrays) for v in desc["items"]])
    if "list" in desc:
        return [decode(v, arrays) for v in desc["list"]]
    if "tuple" in desc:
        return tuple(decode(v, arrays) for v in desc["tuple"])
    if "array" in desc:
        return _from_numpy(arrays[desc["array"]], desc)
    raise ValueError(f"malformed description {str(desc)[:80]}")


def describe(tree, path="", out=None):
    """``[(path, description)]`` of every leaf: arrays as ``shape dtype``, other values
    by type (and value, for strings, None and booleans); used to compare the structure of
    two states (e.g. a saved optimizer state with a fresh one)."""
    out = [] if out is None else out
    if isinstance(tree, dict):
        if not tree:
            out.append((path, "{}"))
        for k, v in sorted(tree.items(), key=lambda kv: str(kv[0])):  # jax reorders dict keys
            describe(v, f"{path}[{k!r}]", out)
    elif _is_namedtuple(tree):
        out.append((path, type(tree).__name__))
        for f, v in zip(type(tree)._fields, tree):
            describe(v, f"{path}.{f}", out)
    elif isinstance(tree, (list, tuple)):
        out.append((path, f"{type(tree).__name__} of {len(tree)}"))
        for i, v in enumerate(tree):
            describe(v, f"{path}[{i}]", out)
    elif hasattr(tree, "shape") and hasattr(tree, "dtype"):
        out.append((path, f"shape {tuple(tree.shape)} {str(tree.dtype).replace('torch.', '')}"))
    elif tree is None or isinstance(tree, (bool, str)):
        out.append((path, repr(tree)))
    else:
        out.append((path, type(tree).__name__))
    return out
