"""Compiled updates (NumPyro) kept across calls, keyed by configuration."""

import collections
import types

import numpy as np

from .._sites import Same as _Same


_COMPILED = collections.OrderedDict()
_COMPILED_SIZE = 32


_CONFIG_MODULES = ("ebm_ppl.", "optax", "numpyro.optim", "jax.example_libraries.optimizers")


def _config_key(obj, depth=0):
    """A hashable key of a configuration value (samplers, estimators, optimizers, masks,
    numbers): equal keys mean equal behaviour. Functions compare by their code, defaults
    and closure contents (so ``optax.adam(1e-2)`` made twice gives one key: optax and
    numpyro.optim optimizers are closures over their hyperparameters); anything else that
    cannot be compared by value compares by identity."""
    if depth > 12:
        return _Same(obj)
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return (type(obj).__name__, obj)
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__,) + tuple(_config_key(v, depth + 1) for v in obj)
    if isinstance(obj, dict):
        items = sorted(obj.items(), key=lambda kv: str(kv[0]))
        return ("dict",) + tuple((k, _config_key(v, depth + 1)) for k, v in items)
    if isinstance(obj, np.ndarray):
        return ("ndarray", obj.dtype.str, obj.shape, obj.tobytes())
    if isinstance(obj, types.FunctionType):
        cells = tuple(_config_key(c.cell_contents, depth + 1) if _cell_full(c) else ("empty",)
                      for c in obj.__closure__ or ())
        return ("function", obj.__code__, _config_key(obj.__defaults__, depth + 1),
                _config_key(obj.__kwdefaults__, depth + 1), cells)
    if hasattr(obj, "__dict__") and type(obj).__module__.startswith(_CONFIG_MODULES):
        return (type(obj),) + _config_key(vars(obj), depth + 1)
    if isinstance(obj, types.ModuleType):  # e.g. jax.numpy captured by an optimizer's closure
        return ("module", obj.__name__)
    size = getattr(obj, "size", None)
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and isinstance(size, (int, np.integer)) and size <= 1 << 16:
        try:  # a small array (e.g. a block mask): by value
            return ("array", str(obj.dtype), tuple(obj.shape), np.asarray(obj).tobytes())
        except Exception:
            pass
    return _Same(obj)


def _cell_full(cell):
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _compiled_key(name, model, model_args, model_kwargs, data, estimator, sampler, optimizer, batch_size,
                  chunk_len, covariates=None, placement=None):
    leaves = data if isinstance(data, dict) else {"": data}
    shapes = tuple((k, tuple(v.shape), str(v.dtype)) for k, v in sorted(leaves.items()))
    kwargs = tuple((k, _Same(v)) for k, v in sorted((model_kwargs or {}).items()))
    return (name, _Same(model), tuple(_Same(a) for a in model_args), kwargs, shapes, _config_key(estimator),
            _config_key(sampler), _config_key(optimizer), batch_size, chunk_len, _config_key(covariates),
            None if placement is None else placement.key)
