"""One suite for both backends: the ``backend`` fixture and a framework facade ``fw``.

Models in the tests are written once against ``fw`` (param, plate, sample, dist, ...), so
the same model runs on Pyro and on NumPyro.
"""

import os

# The tests' tensors are small: on a 2-core machine torch's intra-op threads cost more than
# they give (measured 4-15x slower under load), so the suite runs torch single-threaded.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
