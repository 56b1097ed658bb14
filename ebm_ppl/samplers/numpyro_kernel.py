"""NumPyro's own gradient-based kernels (``numpyro.infer.HMC``, ``NUTS``) as samplers.

The user's kernel gives its class and configuration; the adapter builds a kernel of the
same class on a per-chain potential, potential(z) = -log p̃(z) for one chain (the model's
parameters and the chain's other sites held fixed), and runs it under ``jax.vmap`` over
chains, so every chain has its own trajectory, accept decision and adaptation state.

* The cached potential energy and gradient in NumPyro's ``HMCState`` are recomputed at
  every step from the current ``logdensity_fn``: parameters change between steps of a fit,
  and other kernels (Gibbs on discrete sites) may have moved the chain.
* Parameters never enter the potential's trace: the potential is built from ebm_ppl's
  compiled log density, not from the model, so ``numpyro.param`` sites cannot become
  latent variables (the role of ``handlers.block`` when NumPyro traces a model).
* When the user's ``HMC`` fixes ``num_steps``, the rebuilt kernel gets
  ``trajectory_length=None`` so that a given step size is used as given.
* NumPyro adapts step size and mass matrix during its own warm-up window of
  ``num_warmup`` steps (``ebm_ppl.sample`` passes its ``num_warmup``); in a fit it defaults
  to 0 (no adaptation).

Kernels that need a model trace (``DiscreteHMCGibbs``, ``MixedHMC``, ``HMCGibbs``) are
not supported: use :class:`~ebm_ppl.samplers.Gibbs` on discrete sites in a sampler plan.
On Pyro, ``pyro.infer.HMC``/``NUTS`` make one accept decision for a whole batch of chains,
so they are refused with ``NotImplementedError``; use :class:`~ebm_ppl.samplers.HMC`.

This module imports NumPyro only when a kernel is built.
"""

from .base import Sampler, Kernel

__all__ = ["NumPyroKernel", "is_framework_kernel"]

_SUPPORTED = ("HMC", "NUTS")


def is_framework_kernel(obj):
    """True for a NumPyro or Pyro MCMC kernel object."""
    module = type(obj).__module__ or ""
    return module.startswith(("numpyro.infer", "pyro.infer"))


def _rebuild(kernel, potential_fn):
    """A kernel of ``kernel``'s class and configuration on ``potential_fn``."""
    cls = type(kernel)
    config = dict(
        step_size=kernel._step_size, inverse_mass_matrix=kernel._inverse_mass_matrix,
        adapt_step_size=kernel._adapt_step_size, adapt_mass_matrix=kernel._adapt_mass_matrix,
        dense_mass=kernel._dense_mass, target_accept_prob=kernel._target_accept_prob,
        trajectory_length=kernel._trajectory_length,
        forward_mode_differentiation=kernel._forward_mode_differentiation,
        regularize_mass_matrix=kernel._regularize_mass_matrix)
    if cls.__name__ == "NUTS":
        config["max_tree_depth"] = kernel._max_tree_depth
    else:
        config["num_steps"] = kernel._num_steps
        if kernel._num_steps is not None:
            config["trajectory_length"] = None
    return cls(potential_fn=potential_fn, **config)


class NumPyroKernel(Sampler):
    """A NumPyro ``HMC`` or ``NUTS`` kernel, vectorized over chains (NumPyro backend only).

    Parameters
    ----------
    kernel : numpyro.infer.HMC or numpyro.infer.NUTS
        Gives the class and configuration (step size, adaptation, mass matrix, tree depth);
        its model is not used.
    num_warmup : int, optional
        NumPyro's adaptation window; ``ebm_ppl.sample`` passes its own ``num_warmup``.

    Examples
    --------
    >>> sampler = numpyro.infer.NUTS(model, step_size=0.5)  # doctest: +SKIP
    >>> draws = ebm_ppl.sample(model, params, data[:1], sampler=sampler)  # doctest: +SKIP
    """

    site_kind = "continuous"

    def __init__(self, kernel, num_warmup=None):
        self.kernel = kernel
        self.num_warmup = num_warmup

    def build(self, ops, sites):
        name = type(self.kernel).__name__
        if ops.name != "numpyro" or not type(self.kernel).__module__.startswith("numpyro"):
            raise NotImplementedError(
                f"framework kernel {type(self.kernel).__module__}.{name} on the {ops.name} backend: "
                "Pyro's HMC/NUTS make one accept/reject decision for a whole batch of chains, so "
                "they cannot run ebm_ppl's many independent chains; use ebm_ppl.samplers.HMC "
                "(per-chain Metropolis correction) or MALA instead")
        if name not in _SUPPORTED:
            raise NotImplementedError(
                f"NumPyro kernel {name} is not supported as an ebm_ppl sampler (supported: "
                f"{', '.join(_SUPPORTED)}); for discrete sites use ebm_ppl.samplers.Gibbs, "
                "BlockGibbs or GibbsWithGradients in a sampler plan")
        return _build(self.kernel, self.num_warmup or 0, tuple(s.name for s in sites))


def _build(user_kernel, num_warmup, names):
    import jax
    import jax.numpy as jnp

    box = {}  # the potential of the chain being traced; set before NumPyro traces it
    kernel = _rebuild(user_kernel, lambda z: box["potential"](z))

    def init(position):
        z = {n: position[n] for n in names}
        keys = jax.random.split(jax.random.PRNGKey(0), z[names[0]].shape[0])
        box["potential"] = lambda z: sum(0.5 * jnp.sum(v * v) for v in z.values())  # refreshed at each step
        return jax.vmap(lambda zc, key: kernel.init(key, num_warmup, zc, (), {}))(z, keys)

    def step(rng_key, position, aux, logdensity_fn):
        z = {n: position[n] for n in names}
        others = {n: v for n, v in position.items() if n not in names}

        def one(zc, other, state, key):
            def potential(zz):  # in the chains' dtype (JAX's x64 mode: float64 parameters, float32 chains)
                out = -logdensity_fn({n: v[None] for n, v in dict(other, **zz).items()})[0]
                return out.astype(dtype) if out.dtype != dtype else out

            box["potential"] = potential
            if kernel._sample_fn is None:  # a kernel built after another's warm-up: set it up
                kernel.init(key, num_warmup, zc, (), {})
            energy, grad = jax.value_and_grad(potential)(zc)
            state = state._replace(z=zc, potential_energy=energy, z_grad=grad, rng_key=key)
            return kernel.sample(state, (), {})

        dtype = z[names[0]].dtype
        keys = jax.random.split(rng_key, z[names[0]].shape[0])
        state = jax.vmap(one)(z, others, aux, keys)
        return dict(position, **state.z), state, jnp.mean(state.accept_prob)

    return Kernel(names, init, step)
