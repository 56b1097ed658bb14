"""Trees of arrays (dicts, lists, tuples, NamedTuples of torch / jax / numpy arrays and
plain numbers) as JSON plus a list of numpy arrays, and back, without pickle.

Used by :mod:`ebm_ppl.checkpoint` to save a :class:`~ebm_ppl.FitResult` and by
``fit_unnormalized(resume=...)`` to compare a saved state's structure with the state the
model would start from. Nothing is executed on decoding except the constructors of
NamedTuple classes from an allow-list of modules (ebm_ppl's own, optax, numpyro, jax),
checked to be NamedTuples with the recorded field names.
"""

import importlib

import numpy as np

__all__ = ["encode", "decode", "describe"]

# NamedTuple state classes are rebuilt only from these top-level packages
_ALLOWED = ("ebm_ppl", "ebm_ppl_pyro", "ebm_ppl_numpyro", "optax", "numpyro", "jax")


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


def encode(tree, arrays, where="state"):
    """A JSON-able description of ``tree``; its arrays are appended to ``arrays`` (numpy).

    Raises ``TypeError`` naming the path of a value that cannot be saved."""
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
        return {"namedtuple": f"{cls.__module__}:{cls.__qualname__}", "fields": list(cls._fields),
                "items": [encode(v, arrays, f"{where}.{f}") for f, v in zip(cls._fields, tree)]}
    if isinstance(tree, (list, tuple)):
        kind = "list" if isinstance(tree, list) else "tuple"
        return {kind: [encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(tree)]}
    kind = _array_kind(tree)
    if kind is None or not hasattr(tree, "shape"):
        raise TypeError(f"cannot save {where}: a value of type {type(tree).__name__} (only arrays, numbers, "
                        "strings, None and dicts/lists/tuples/NamedTuples of them are saved)")
    out = {"array": len(arrays), "kind": kind}
    if kind == "torch":
        out["device"] = str(tree.device)
    arrays.append(np.array(_to_numpy(tree, kind), order="C"))  # 0-d arrays stay 0-d
    return out


def _namedtuple_class(name, fields):
    module, _, qualname = name.partition(":")
    if module.split(".")[0] not in _ALLOWED:
        raise ValueError(f"unknown state type {name!r} (only ebm_ppl, optax, numpyro and jax types are loaded)")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, tuple) and tuple(getattr(obj, "_fields", ())) == tuple(fields)):
        raise ValueError(f"state type {name!r} with fields {fields} is not a NamedTuple of this version")
    return obj


def _from_numpy(a, desc):
    kind = desc.get("kind")
    if kind == "torch":
        import torch

        t = torch.from_numpy(np.array(a))
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
    if kind == "numpy":
        return np.array(a)
    raise ValueError(f"unknown array kind {kind!r}")


def decode(desc, arrays):
    """The tree that :func:`encode` described (arrays of the kind they were saved from)."""
    if desc is None or isinstance(desc, (bool, str)):
        return desc
    if not isinstance(desc, dict) or len(desc) == 0:
        raise ValueError(f"malformed state description {desc!r}")
    if "int" in desc:
        return int(desc["int"])
    if "float" in desc:
        return float(desc["float"])
    if "dict" in desc:
        return {k: decode(v, arrays) for k, v in desc["dict"]}
    if "namedtuple" in desc:
        cls = _namedtuple_class(desc["namedtuple"], desc["fields"])
        return cls(*[decode(v, arrays) for v in desc["items"]])
    if "list" in desc:
        return [decode(v, arrays) for v in desc["list"]]
    if "tuple" in desc:
        return tuple(decode(v, arrays) for v in desc["tuple"])
    if "array" in desc:
        return _from_numpy(arrays[desc["array"]], desc)
    raise ValueError(f"malformed state description {desc!r}")


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
