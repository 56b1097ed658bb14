"""One model text for both backends: a small facade over Pyro or NumPyro."""

import types

import numpy as np

__all__ = ["framework"]


def framework(backend):
    """A namespace of the framework's ``param``, ``plate``, ``sample``, ``factor``,
    ``dist``, ``constraints``, array helpers and optimizers, so that one model text runs on
    Pyro (``"pyro"``) and NumPyro (``"numpyro"``). Pyro's param store is cleared."""
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
            deterministic=pyro.deterministic,
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
        deterministic=numpyro.deterministic,
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
