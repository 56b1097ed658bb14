"""Checkpoints: a :class:`~ebm_ppl.FitResult` on disk, loadable without executing anything.

A checkpoint is one ``.npz`` file (``numpy.savez``, read with ``allow_pickle=False``)
holding the arrays of the result (parameters, chains, history, optimizer and estimator
states, random-stream states, the current epoch's permutation) and a JSON description of
everything else (format version, backend, the trees' structure, the estimator's class
name and settings, the model signature ``resume=`` checks), with a SHA-256 checksum over
the description and every array, so a truncated, tampered or foreign file raises a clear
``ValueError``. The estimator is rebuilt from a registry of ebm_ppl's estimator classes,
never unpickled. Files are written atomically: a temporary file in the same folder,
flushed to disk, then renamed over the target (``os.replace``), so a crash mid-write
leaves the previous checkpoint intact.
"""

import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

from . import _tree, estimators
from ._result import FitResult, FitState
from .backend import get_backend

__all__ = ["save", "load"]

FORMAT = "ebm_ppl.checkpoint"
VERSION = 1


def _estimators():
    """Registry name -> estimator class: the classes that entered
    :data:`ebm_ppl.estimators.base.REGISTRY` (every subclass of ``Estimator`` does)."""
    return dict(estimators.base.REGISTRY)


def _encode_estimator(estimator, arrays):
    name = type(estimator).registry_name() if hasattr(type(estimator), "registry_name") else type(estimator).__name__
    if _estimators().get(name) is not type(estimator):
        raise TypeError(f"cannot save a fit by the estimator {estimator!r}: only ebm_ppl's own estimators "
                        f"({sorted(_estimators())}) are saved")
    return {"class": name, "settings": _tree.encode(dict(vars(estimator)), arrays, "estimator settings")}


def _decode_estimator(desc, arrays):
    cls = _estimators().get(desc["class"])
    if cls is None:
        raise ValueError(f"unknown estimator class {desc['class']!r} in the checkpoint")
    obj = cls.__new__(cls)  # the settings as they were saved (validated when they were made)
    obj.__dict__.update(_tree.decode(desc["settings"], arrays))
    return obj


def _digest(metadata, arrays):
    h = hashlib.sha256(metadata)
    for i, a in enumerate(arrays):
        h.update(f"|a{i}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _describe_result(result):
    arrays = []
    st = result.state
    state = {
        "params": _tree.encode(st.params, arrays, "state.params"),
        "optimizer_state": _tree.encode(st.optimizer_state, arrays, "state.optimizer_state"),
        "estimator_state": _tree.encode(st.estimator_state, arrays, "state.estimator_state"),
        "rng_key": _tree.encode(st.rng_key, arrays, "state.rng_key"),
        "data_key": _tree.encode(st.data_key, arrays, "state.data_key"),
        "num_updates": int(st.num_updates),
        "estimator": _encode_estimator(st.estimator, arrays),
        "epoch_perm": _tree.encode(st.epoch_perm, arrays, "state.epoch_perm"),
        "epoch_offset": int(st.epoch_offset),
        "signature": _tree.encode(st.signature, arrays, "state.signature"),
    }
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "backend": result.backend,
        "params": _tree.encode(result.params, arrays, "params"),
        "history": _tree.encode(dict(result.history), arrays, "history"),
        "chains": _tree.encode(result.chains, arrays, "chains"),
        "state": state,
    }
    return meta, arrays


def save(result, path):
    """Write ``result`` (a :class:`~ebm_ppl.FitResult`) to ``path``, atomically.

    The file is an ``.npz`` archive of arrays plus JSON metadata with a format version
    and a SHA-256 checksum; :func:`load` reads it back without unpickling anything, in any
    process, and ``fit_unnormalized(..., resume=ebm_ppl.load(path))`` continues the fit
    bit for bit. ``path`` is used as given (no suffix is added).

    Parameters
    ----------
    result : FitResult
    path : str or os.PathLike

    Examples
    --------
    >>> ebm_ppl.save(result, "fit.npz")  # doctest: +SKIP
    >>> more = ebm_ppl.fit_unnormalized(model, data, num_steps=1000, resume=ebm_ppl.load("fit.npz"))  # doctest: +SKIP
    """
    if not isinstance(result, FitResult):
        raise TypeError(f"save: result must be a FitResult, got {type(result).__name__}")
    path = os.fspath(path)
    meta, arrays = _describe_result(result)
    metadata = json.dumps(meta, sort_keys=True).encode("utf-8")
    checksum = _digest(metadata, arrays)
    entries = {f"a{i}": a for i, a in enumerate(arrays)}
    entries["metadata"] = np.frombuffer(metadata, dtype=np.uint8)
    entries["checksum"] = np.array(checksum)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **entries)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable where the platform allows it
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)


def _read(path):
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            names = set(z.files)
            if "metadata" not in names or "checksum" not in names:
                raise ValueError(f"{path!r} is not an ebm_ppl checkpoint (no metadata)")
            metadata = z["metadata"].tobytes()
            checksum = str(z["checksum"])
            num = sum(1 for n in names if n.startswith("a") and n[1:].isdigit())
            arrays = [z[f"a{i}"] for i in range(num)]
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, zipfile.LargeZipFile) as e:
        raise ValueError(f"checkpoint {path!r} is truncated or corrupt: {type(e).__name__}: {e}") from None
    except ValueError as e:
        if "ebm_ppl checkpoint" in str(e):
            raise
        raise ValueError(f"checkpoint {path!r} is truncated, corrupt or not an ebm_ppl checkpoint: {e}") from None
    if _digest(metadata, arrays) != checksum:
        raise ValueError(f"checkpoint {path!r} is corrupt or was modified: its checksum does not match its contents")
    try:
        meta = json.loads(metadata.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:  # pragma: no cover - the checksum catches it first
        raise ValueError(f"checkpoint {path!r} has unreadable metadata: {e}") from None
    return meta, arrays


def load(path):
    """Read a :class:`~ebm_ppl.FitResult` written by :func:`save` (or by
    ``fit_unnormalized(checkpoint_every=...)``).

    Nothing in the file is executed: arrays are read with ``allow_pickle=False``, the
    structure comes from JSON, the estimator is rebuilt from its class name and settings.
    Arrays come back as the backend's arrays (torch tensors on the device they were saved
    from when it is available, else on the CPU; jax arrays on the default device).

    Raises
    ------
    ValueError
        If the file is truncated, corrupt, modified, of another format version, or not
        an ebm_ppl checkpoint.

    Examples
    --------
    >>> result = ebm_ppl.load("fit.npz")  # doctest: +SKIP
    """
    path = os.fspath(path)
    meta, arrays = _read(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not an ebm_ppl checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"checkpoint {path!r} has format version {meta.get('version')!r}; this version of "
                         f"ebm_ppl reads version {VERSION}")
    backend = meta["backend"]
    get_backend(backend)  # the framework must be installed to hold the arrays
    s = meta["state"]
    state = FitState(
        params=_tree.decode(s["params"], arrays),
        optimizer_state=_tree.decode(s["optimizer_state"], arrays),
        estimator_state=_tree.decode(s["estimator_state"], arrays),
        rng_key=_tree.decode(s["rng_key"], arrays),
        data_key=_tree.decode(s["data_key"], arrays),
        num_updates=int(s["num_updates"]),
        estimator=_decode_estimator(s["estimator"], arrays),
        epoch_perm=_tree.decode(s["epoch_perm"], arrays),
        epoch_offset=int(s["epoch_offset"]),
        signature=_tree.decode(s["signature"], arrays),
    )
    return FitResult(
        params=_tree.decode(meta["params"], arrays),
        history={k: np.asarray(v, dtype=float) for k, v in _tree.decode(meta["history"], arrays).items()},
        chains=_tree.decode(meta["chains"], arrays),
        state=state,
        backend=backend,
    )
