"""Run as a script (by tests/test_memory.py, in a fresh process): fit the 3x3 Ising model
on ``rows`` x 9 float32 examples made by the caller, with ``batch_size=1000`` for a few
updates, and print one JSON line: the process's peak resident memory during the fit in
bytes (``ru_maxrss``, its high-water mark reset once the data are made) and whether the
reset worked.

    python tests/peak_memory.py BACKEND ROWS [native|numpy]

The peak is then the imports, the data and what the fit adds. ``numpy``: pass a numpy
array (the backend converts it) instead of the framework's own array. Where the mark
cannot be reset (``/proc/self/clear_refs``, Linux 4.0+), the peak includes making the
data, in chunks of rows (one copy of them, two on JAX while the chunks are joined).
"""

import ctypes
import json
import os
import resource
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import ebm_ppl  # noqa: E402
from ebm_ppl.testing.frameworks import framework  # noqa: E402
from ebm_ppl.testing.ising import ising_model  # noqa: E402

CHUNK = 1 << 16


def make_data(backend, rows, as_numpy):
    """``rows`` x 9 examples in {0, 1}, float32, as the framework's array (or numpy)."""
    rng = np.random.default_rng(0)
    if backend == "numpyro" and not as_numpy:
        import jax.numpy as jnp

        chunks = [jnp.asarray(rng.random((min(CHUNK, rows - i), 9), dtype=np.float32) < 0.5, dtype=jnp.float32)
                  for i in range(0, rows, CHUNK)]
        return jnp.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    x = np.empty((rows, 9), np.float32)
    for i in range(0, rows, CHUNK):
        x[i:i + CHUNK] = rng.random(x[i:i + CHUNK].shape, dtype=np.float32) < 0.5
    if backend == "pyro" and not as_numpy:
        import torch

        return torch.from_numpy(x)  # the same memory
    return x


def reset_peak():
    """Hand memory freed while the data were made back to the system (glibc's
    ``malloc_trim``), so that it is not counted as the fit's, and reset the high-water mark
    of resident memory that ``ru_maxrss`` reports."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main(backend, rows, as_numpy=False):
    fw = framework(backend)
    data = make_data(backend, rows, as_numpy)
    was_reset = reset_peak()
    result = ebm_ppl.fit_unnormalized(ising_model(fw), data, ebm_ppl.PCD(100, 1), batch_size=1000, num_steps=5,
                                      progress_bar=False, backend=backend)
    assert np.isfinite(result.history["loss"]).all()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"peak_bytes": peak, "reset": was_reset, "data_bytes": rows * 9 * 4}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:4] == ["numpy"])))
