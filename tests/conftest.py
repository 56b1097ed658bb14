"""One suite for both backends: the ``backend`` fixture and a framework facade ``fw``.

Models in the tests are written once against ``fw`` (param, plate, sample, dist, ...), so
the same model runs on Pyro and on NumPyro.
"""

import os
import types

# The tests' tensors are small: on a 2-core machine torch's intra-op threads cost more than
# they give (measured 4-15x slower under load), so the suite runs torch single-threaded.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

BACKENDS = ["pyro", "numpyro"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def make_framework(backend):
    if backend == "pyro":
        import torch
        import pyro
        import pyro.distributions as dist
        from pyro.distributions import constraints

        pyro.clear_param_store()
        torch.manual_seed(0)
        return types.SimpleNamespace(
            name="pyro",
            param=pyro.param,
            plate=pyro.plate,
            sample=pyro.sample,
            factor=pyro.factor,
            dist=dist,
            constraints=constraints,
            array=lambda x, dtype=None: torch.as_tensor(np.asarray(x, dtype=dtype or np.float32)),
            zeros=lambda *s: torch.zeros(*s),
            to_numpy=lambda x: x.detach().cpu().numpy(),
            adam=lambda lr: __import__("pyro").optim.Adam({"lr": lr}),
            # Adam with its learning rate multiplied by `decay` after every update (ebm_ppl
            # steps a PyroLRScheduler once per update), as optax.exponential_decay does below
            adam_decay=lambda lr, decay: __import__("pyro").optim.ExponentialLR(
                {"optimizer": torch.optim.Adam, "optim_args": {"lr": lr}, "gamma": decay}
            ),
            sgd=lambda lr: __import__("pyro").optim.SGD({"lr": lr}),
            clear=pyro.clear_param_store,
        )
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    import optax
    from numpyro.distributions import constraints

    return types.SimpleNamespace(
        name="numpyro",
        param=numpyro.param,
        plate=numpyro.plate,
        sample=numpyro.sample,
        factor=numpyro.factor,
        dist=dist,
        constraints=constraints,
        array=lambda x, dtype=None: jnp.asarray(np.asarray(x, dtype=dtype or np.float32)),
        zeros=lambda *s: jnp.zeros(s),
        to_numpy=lambda x: np.asarray(x),
        adam=lambda lr: numpyro.optim.Adam(lr),
        adam_decay=lambda lr, decay: optax.adam(optax.exponential_decay(lr, 1, decay)),
        sgd=lambda lr: numpyro.optim.SGD(lr),
        clear=lambda: None,
    )


@pytest.fixture
def fw(backend):
    framework = make_framework(backend)
    yield framework
    framework.clear()
