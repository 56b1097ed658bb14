"""JAX's threefry key splits computed on the host, for keys used at a fit's set-up.

``jax.random.split`` and ``jax.random.fold_in`` of a concrete key cost an XLA compilation
each the first time a process meets them (about 0.15 s apiece on CPU even compiled
quickly): a fresh process's first fit paid two of them before its first update. For the
default key kind (a raw ``uint32[2]`` threefry key, ``jax_threefry_partitionable`` on,
as in every JAX this backend supports) the same numbers are a few dozen integer
operations in NumPy. Salmon et al. (2011), *Parallel random numbers: as easy as 1, 2, 3*
(Threefry-2x32, 20 rounds), as ``jax._src.prng`` writes it; ``tests/test_host_keys.py``
checks them against JAX's.
"""

import jax
import numpy as np

__all__ = ["host_key", "split", "fold_in"]

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(k1, k2, x0, x1):
    """Threefry-2x32 of the counter pairs (x0, x1) (uint32 arrays) under the key (k1, k2)."""
    with np.errstate(over="ignore"):
        ks = (np.uint32(k1), np.uint32(k2), np.uint32(k1) ^ np.uint32(k2) ^ np.uint32(0x1BD11BDA))
        x = [x0.astype(np.uint32) + ks[0], x1.astype(np.uint32) + ks[1]]
        for i in range(5):
            for r in _ROTATIONS[i % 2]:
                x[0] = x[0] + x[1]
                x[1] = ((x[1] << np.uint32(r)) | (x[1] >> np.uint32(32 - r))) ^ x[0]
            x[0] = x[0] + ks[(i + 1) % 3]
            x[1] = x[1] + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x


def host_key(key):
    """``key`` as a NumPy ``uint32[2]`` when it is a concrete default threefry key that the
    host can split as JAX would, else None."""
    if isinstance(key, jax.core.Tracer) or not jax.config.jax_threefry_partitionable:
        return None
    if not isinstance(key, (jax.Array, np.ndarray)) or key.dtype != np.uint32 or key.shape != (2,):
        return None
    if isinstance(key, jax.Array) and not (key.is_fully_addressable and len(key.devices()) == 1):
        return None
    return np.asarray(key)


def split(key, num):
    """``jax.random.split(key, num)`` of a host key (``(num, 2)`` uint32)."""
    b1, b2 = _threefry2x32(key[0], key[1], np.zeros(num, np.uint32), np.arange(num, dtype=np.uint32))
    return np.stack([b1, b2], axis=1)


def fold_in(key, data):
    """``jax.random.fold_in(key, data)`` of a host key and a non-negative int below 2**32."""
    b1, b2 = _threefry2x32(key[0], key[1], np.zeros(1, np.uint32), np.full(1, data, np.uint32))
    return np.concatenate([b1, b2])
