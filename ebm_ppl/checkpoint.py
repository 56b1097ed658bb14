"""Checkpoints: a :class:`~ebm_ppl.FitResult` on disk, loadable without executing anything.

A checkpoint is one ``.npz`` file (a zip archive of uncompressed ``.npy`` members, as
``numpy.savez`` writes them) holding the arrays of the result (parameters, chains,
history, optimizer and estimator states, random-stream states, the current epoch's
permutation), a JSON description of everything else (format version, backend, the
trees' structure with each array's dtype and shape, the estimator's class name and
settings, the model signature ``resume=`` checks), and a digest over the description
and every array.

What the digest promises. Without a key it is a SHA-256: a truncated, damaged or
foreign file raises a clear ``ValueError``. It does not say who wrote the file: anyone
can change a file and recompute it. With ``key=`` (bytes or str) it is an HMAC-SHA256
over the same contents: a file that was not saved with that key (changed, forged, or
saved without a key) raises ``ValueError``. Use a key for files that cross a trust
boundary.

What loading does with any file, keyed or not. It executes nothing the file names: no
pickle, no import; NamedTuple state types come from a fixed registry
(:mod:`ebm_ppl._registry`) and estimators from ebm_ppl's own classes, rebuilt by their
constructors, which check the settings. It reads nothing the description does not
declare, at no more than the declared size: members the description does not refer to
are refused unread, and each member's size (from the zip directory and its ``.npy``
header) must be exactly its declared dtype and shape (:mod:`ebm_ppl._npz`). The
description is parsed within fixed limits (size, nesting, numbers). The state must be
one a fit can produce (:mod:`ebm_ppl._validate`: update counts in range, the epoch's
permutation a permutation, finite parameters and chains); ``resume=`` checks the rest
against the model and data (discrete chains inside their supports, random states of
the backend), and takes the optimizer's hyperparameters (learning rate, schedule) from
the optimizer it is given, the file supplying only the optimizer's state. Anything
else wrong with a file raises ``ValueError`` naming it.

Files are written atomically: a temporary file in the same folder (created with mode
``0o666`` less the umask, as ``open()`` and ``numpy.save`` create files), flushed to
disk, then renamed over the target (``os.replace``), so a crash mid-write leaves the
previous checkpoint intact.
"""

import hashlib
import hmac
import inspect
import json
import os
import zipfile

import numpy as np

from . import _npz, _tree, _validate, estimators
from ._result import FitResult, FitState
from .backend import BACKENDS, get_backend

__all__ = ["save", "load"]

FORMAT = "ebm_ppl.checkpoint"
VERSION = 2  # 2: arrays declared with dtype and shape; the digest tagged "sha256:" or "hmac-sha256:"
_KINDS = {"pyro": ("torch", "numpy"), "numpyro": ("jax", "numpy")}
_META_KEYS = ("format", "version", "backend", "params", "history", "chains", "state")
_STATE_TREES = ("params", "optimizer_state", "estimator_state", "rng_key", "data_key", "epoch_perm", "signature")
_STATE_KEYS = _STATE_TREES + ("num_updates", "epoch_offset", "estimator")
_RENAMED = {"init": "init_method"}  # estimator constructor argument -> attribute, where they differ


class _Refused(ValueError):
    """A complete message about the file, passed on as it is."""


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


def _rebuild_estimator(name, settings):
    """The estimator of class ``name`` made by its constructor from the saved settings,
    which must come out unchanged (so they are settings the constructor accepts)."""
    cls = _estimators().get(name)
    if cls is None:
        raise ValueError(f"state.estimator: unknown estimator class {name!r}")
    if not isinstance(settings, dict):
        raise ValueError("state.estimator.settings is not a dict")
    kwargs = {}
    for arg in inspect.signature(cls).parameters:
        attr = arg if arg in settings else _RENAMED.get(arg)
        if attr in settings:
            kwargs[arg] = settings[attr]
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"state.estimator: {name} refuses the saved settings: {e}") from None
    if vars(obj) != settings:
        raise ValueError(f"state.estimator: the saved settings {settings} are not those of a {name} "
                         f"(its constructor makes {vars(obj)})")
    return obj


def _as_key(key):
    """``key`` as bytes (a str is UTF-8 encoded), or None."""
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"key must be bytes or str, got {type(key).__name__}")
    key = bytes(key)
    if not key:
        raise ValueError("key must not be empty")
    return key


def _digest(metadata, arrays, key=None):
    """``"sha256:<hex>"``, or with a key ``"hmac-sha256:<hex>"``, over the metadata and
    every array (its index, dtype, shape and bytes)."""
    h = hashlib.sha256() if key is None else hmac.new(key, digestmod=hashlib.sha256)
    h.update(metadata)
    for i, a in enumerate(arrays):
        h.update(f"|a{i}|{a.dtype.str}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
    return ("sha256:" if key is None else "hmac-sha256:") + h.hexdigest()


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


def _open_temp(folder, name):
    """A new file beside the target, created as ``open(path, "wb")`` would create it (mode
    ``0o666`` less the umask); ``(fd, path)``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
    raise FileExistsError(f"no free temporary file name in {folder!r}")  # pragma: no cover


def _write_atomically(path, entries):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = _open_temp(folder, os.path.basename(path))
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


def save(result, path, key=None):
    """Write ``result`` (a :class:`~ebm_ppl.FitResult`) to ``path``, atomically.

    The file is an ``.npz`` archive of arrays plus JSON metadata with a format version
    and a SHA-256 checksum (with ``key``: an HMAC-SHA256); :func:`load` reads it back
    without executing anything, in any process, and
    ``fit_unnormalized(..., resume=ebm_ppl.load(path))`` continues the fit bit for bit.
    ``path`` is used as given (no suffix is added); the file's mode is ``0o666`` less the
    umask, as for any file ``open()`` creates.

    Parameters
    ----------
    result : FitResult
    path : str or os.PathLike
    key : bytes or str, optional
        A secret key: the file then carries an HMAC-SHA256 of its contents, and only
        ``load(path, key=key)`` with the same key reads it. Without a key, the SHA-256
        detects truncation and damage but not a deliberate change (anyone can recompute
        it).

    Examples
    --------
    >>> ebm_ppl.save(result, "fit.npz")  # doctest: +SKIP
    >>> more = ebm_ppl.fit_unnormalized(model, data, num_steps=1000, resume=ebm_ppl.load("fit.npz"))  # doctest: +SKIP
    >>> ebm_ppl.save(result, "shared.npz", key=secret)  # doctest: +SKIP
    """
    if not isinstance(result, FitResult):
        raise TypeError(f"save: result must be a FitResult, got {type(result).__name__}")
    key = _as_key(key)
    path = os.fspath(path)
    meta, arrays = _describe_result(result)
    metadata = json.dumps(meta, sort_keys=True).encode("utf-8")
    entries = {f"a{i}": a for i, a in enumerate(arrays)}
    entries["metadata"] = np.frombuffer(metadata, dtype=np.uint8)
    entries["checksum"] = np.array(_digest(metadata, arrays, key))
    _write_atomically(path, entries)


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _check_meta(meta):
    """The metadata's fields (exactly a checkpoint's), and the arrays it declares, as
    :class:`~ebm_ppl._tree.ArrayRef` in index order: indices 0..n-1, each once."""
    if sorted(meta) != sorted(_META_KEYS):
        raise ValueError(f"the metadata has the fields {sorted(meta)[:12]}, not a checkpoint's {sorted(_META_KEYS)}")
    state = meta["state"]
    if not isinstance(state, dict) or sorted(state) != sorted(_STATE_KEYS):
        raise ValueError(f"state has the fields {sorted(state)[:12] if isinstance(state, dict) else type(state)}, "
                         f"not {sorted(_STATE_KEYS)}")
    if meta["backend"] not in BACKENDS:
        raise ValueError(f"backend {str(meta['backend'])[:40]!r} is not one of {sorted(BACKENDS)}")
    est = state["estimator"]
    if not (isinstance(est, dict) and sorted(est) == ["class", "settings"] and isinstance(est["class"], str)):
        raise ValueError("state.estimator is not a class name and settings")
    for name in ("num_updates", "epoch_offset"):
        if not _is_int(state[name]):
            raise ValueError(f"state.{name}={str(state[name])[:40]} is not an integer")
    refs = []
    for name in ("params", "history", "chains"):
        _tree.check(meta[name], name, refs)
    for name in _STATE_TREES:
        _tree.check(state[name], f"state.{name}", refs)
    _tree.check(est["settings"], "state.estimator.settings", refs)
    refs.sort(key=lambda r: r.index)
    for i, r in enumerate(refs):
        if r.index != i:
            raise ValueError(f"{r.where}: array index {r.index} is not the next array ({i}): arrays are declared "
                             "once each, numbered from 0")
    kinds = _KINDS[meta["backend"]]
    for r in refs:
        if r.kind not in kinds:
            raise ValueError(f"{r.where}: a {r.kind} array in a {meta['backend']} checkpoint")
    return refs


def _read_metadata(zf):
    names = zf.namelist()
    if "metadata.npy" not in names or "checksum.npy" not in names:
        raise _Refused("is not an ebm_ppl checkpoint (no metadata)")
    if len(set(names)) != len(names):
        raise ValueError("the archive repeats member names")
    metadata = _npz.read_declared(zf, "metadata.npy", _npz.MAX_METADATA_BYTES,
                                  lambda shape, dtype: dtype == np.uint8 and len(shape) == 1).tobytes()
    stored = _npz.read_declared(zf, "checksum.npy", 1024, lambda shape, dtype: dtype.kind == "U" and shape == ())
    meta = _npz.parse_json(metadata)
    if meta.get("format") == FORMAT and meta.get("version") != VERSION:
        raise _Refused(f"has format version {str(meta.get('version'))[:20]}; this version of ebm_ppl reads "
                       f"version {VERSION}")
    return metadata, str(stored[()]), meta


def _read_arrays(zf, refs):
    declared = {f"a{r.index}.npy" for r in refs} | {"metadata.npy", "checksum.npy"}
    undeclared = sorted(set(zf.namelist()) - declared)
    if undeclared:
        raise ValueError(f"the archive holds members that the metadata does not declare: {undeclared[:5]} "
                         "(refused unread)")
    return [_npz.read_array(zf, f"a{r.index}.npy", r.dtype, r.shape) for r in refs]


def _verify(metadata, arrays, stored, key):
    kind, _, _ = stored.partition(":")
    if kind not in ("sha256", "hmac-sha256"):
        raise ValueError(f"its checksum is of an unknown kind {kind[:20]!r}")
    if kind == "hmac-sha256" and key is None:
        raise _Refused("is signed with a key (HMAC-SHA256): pass key= to load it")
    if kind == "sha256" and key is not None:
        raise _Refused("carries no HMAC (it was saved without a key), so key= cannot authenticate it")
    if not hmac.compare_digest(stored.encode("utf-8", "replace"), _digest(metadata, arrays, key).encode()):
        if key is not None:
            raise _Refused("does not match its HMAC: the key is wrong, or the file was modified")
        raise _Refused("is corrupt or was modified: its checksum does not match its contents")


def _read(f, key):
    """``(meta, arrays, refs)`` of the checkpoint open in ``f``, its digest verified."""
    with zipfile.ZipFile(f) as zf:
        metadata, stored, meta = _read_metadata(zf)
        refs = _check_meta(meta)
        arrays = _read_arrays(zf, refs)
    _verify(metadata, arrays, stored, key)
    return meta, arrays, refs


def _build(meta, arrays):
    if meta["format"] != FORMAT:
        raise ValueError(f"is not an ebm_ppl checkpoint (format {str(meta['format'])[:40]!r})")
    s = meta["state"]

    def tree(desc):
        return _tree.decode(desc, arrays)

    estimator = _rebuild_estimator(s["estimator"]["class"], tree(s["estimator"]["settings"]))
    state = FitState(
        params=tree(s["params"]), optimizer_state=tree(s["optimizer_state"]),
        estimator_state=tree(s["estimator_state"]), rng_key=tree(s["rng_key"]), data_key=tree(s["data_key"]),
        num_updates=s["num_updates"], estimator=estimator, epoch_perm=tree(s["epoch_perm"]),
        epoch_offset=s["epoch_offset"], signature=tree(s["signature"]))
    result = FitResult(params=tree(meta["params"]), history=tree(meta["history"]), chains=tree(meta["chains"]),
                       state=state, backend=meta["backend"])
    _validate.check_loaded(result)
    return result._replace(history={k: np.asarray(v, dtype=float) for k, v in result.history.items()})


def load(path, key=None):
    """Read a :class:`~ebm_ppl.FitResult` written by :func:`save` (or by
    ``fit_unnormalized(checkpoint_every=...)``).

    Nothing in the file is executed or imported: arrays are read as declared (dtype and
    shape, checked before reading), the structure comes from JSON, state types from a
    fixed registry, the estimator is rebuilt by its constructor from its settings.
    Arrays come back as the backend's arrays (torch tensors on the device they were
    saved from when it is available, else on the CPU; jax arrays on the default device).

    Parameters
    ----------
    path : str or os.PathLike
    key : bytes or str, optional
        The key the file was saved with (:func:`save`); required for a keyed file and
        refused for an unkeyed one.

    Raises
    ------
    ValueError
        If the file is truncated, corrupt, modified, of another format version, not an
        ebm_ppl checkpoint, not authenticated by ``key``, or holds a state no fit
        produces; the message names what is wrong.

    Examples
    --------
    >>> result = ebm_ppl.load("fit.npz")  # doctest: +SKIP
    >>> result = ebm_ppl.load("shared.npz", key=secret)  # doctest: +SKIP
    """
    path = os.fspath(path)
    key = _as_key(key)
    with open(path, "rb") as f:
        try:
            meta, arrays, _ = _read(f, key)
        except _Refused as e:
            raise ValueError(f"checkpoint {path!r} {e}") from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
            raise ValueError(f"checkpoint {path!r} is truncated or corrupt: {type(e).__name__}: {e}") from None
        except ValueError as e:
            raise ValueError(f"checkpoint {path!r} is corrupt or not an ebm_ppl checkpoint: {e}") from None
        except Exception as e:  # anything else a damaged or forged file provokes
            raise ValueError(f"checkpoint {path!r} is corrupt or not an ebm_ppl checkpoint: "
                             f"{type(e).__name__}: {e}") from None
    get_backend(meta["backend"])  # the framework must be installed to hold the arrays
    try:
        return _build(meta, arrays)
    except ValueError as e:
        raise ValueError(f"checkpoint {path!r}: {e}") from None
    except Exception as e:  # a state that passed its checksum but no check above
        raise ValueError(f"checkpoint {path!r}: {type(e).__name__}: {e}") from None
