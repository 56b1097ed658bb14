"""``factor`` and ``energy``: unnormalized log-factors whose normalizer may depend on parameters.

They dispatch on the framework that is tracing the model (Pyro or NumPyro) and add an
ordinary ``pyro.factor`` / ``numpyro.factor`` site, so the model stays runnable by the
framework's own tools; :func:`ebm_ppl.fit_unnormalized` then accounts for log Z(θ).
"""

import sys

__all__ = ["factor", "energy"]


def _stack_active(module_name):
    module = sys.modules.get(module_name)
    return module is not None and bool(getattr(module, "_PYRO_STACK", ()))


def _framework(log_factor):
    if _stack_active("pyro.poutine.runtime"):
        return "pyro"
    if _stack_active("numpyro.primitives"):
        return "numpyro"
    root = type(log_factor).__module__.split(".")[0]
    if root == "torch":
        return "pyro"
    if root in ("jax", "jaxlib"):
        return "numpyro"
    return None


def factor(name, log_factor):
    """Add the unnormalized log-factor ``log_factor`` to the model's log density.

    Its normalizer may depend on the model's parameters: ``fit_unnormalized`` estimates the
    gradient of log Z(θ) with MCMC (the negative phase). Inside the data plate,
    ``log_factor`` has one entry per example (any other shape raises before fitting).
    Outside it the model is read one example at a time; a factor there that depends on no
    sample site (a penalty) is a log prior on θ, counted once per data set (MAP).

    Examples
    --------
    >>> import torch, pyro, ebm_ppl
    >>> def model(x):
    ...     w = pyro.param("w", torch.tensor(0.5))
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("x", pyro.distributions.Bernoulli(0.5), obs=x)
    ...         ebm_ppl.factor("tilt", w * x)
    >>> model(torch.ones(3))
    """
    framework = _framework(log_factor)
    if framework == "pyro":
        import pyro

        return pyro.factor(name, log_factor)
    if framework == "numpyro":
        import numpyro

        return numpyro.factor(name, log_factor)
    raise TypeError(
        f"ebm_ppl.factor({name!r}, ...): call it inside a Pyro or NumPyro model with a "
        f"torch or jax array, got {type(log_factor).__name__}"
    )


def energy(name, energy):
    """Add an energy term: the same as ``factor(name, -energy)`` (low energy, high density).

    Examples
    --------
    >>> import jax.numpy as jnp, numpyro, ebm_ppl
    >>> def model(x):
    ...     prec = numpyro.param("prec", 1.0)
    ...     with numpyro.plate("data", x.shape[0]):
    ...         ebm_ppl.energy("quadratic", 0.5 * prec * x**2)
    """
    return factor(name, -energy)
