"""One suite for both backends: the ``backend`` fixture and a framework facade ``fw``.

Models in the tests are written once against ``fw`` (param, plate, sample, dist, ...), so
the same model runs on Pyro and on NumPyro.
"""

import os
import tempfile

# The tests' tensors are small: on a 2-core machine torch's intra-op threads cost more than
# they give (measured 4-15x slower under load), so the suite runs torch single-threaded.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Many tests compile the same NumPyro updates (the same model written again, another seed):
# JAX's persistent compilation cache, shared by the xdist workers, compiles each once per
# run (and keeps them for the next run on this machine). Set JAX_COMPILATION_CACHE_DIR to
# move it; the cache only saves XLA compile time, never changes a result.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"ebm_ppl-tests-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest

from ebm_ppl.testing.frameworks import framework as make_framework
from models import X_ISING, ising_mean_loglik, ising_mle

BACKENDS = ["pyro", "numpyro"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def fw(backend):
    framework = make_framework(backend)
    yield framework
    framework.clear()


@pytest.fixture(scope="module")
def ising_exact():
    J, h = ising_mle(X_ISING)
    return ising_mean_loglik(X_ISING, J, h)
