"""What every sampler shares: the kernel contract, composition, and ``"auto"``.

A sampler (``Gibbs()``, ``MALA(0.1)``, ...) is a small configuration object. ``build`` binds
it to a backend's ops and to the sites it moves and returns a :class:`Kernel`, a pair of
pure functions in the style of blackjax::

    aux = kernel.init(position)
    position, aux, acceptance_rate = kernel.step(rng_key, position, aux, logdensity_fn)

``position`` maps every site to an array of shape ``(num_chains, *event_shape)``: raw values
for discrete sites, unconstrained values for continuous ones. ``logdensity_fn(position)``
returns the per-chain log p̃ (Jacobians included). ``aux`` holds what a kernel adapts
(step sizes) as arrays, so states are pytrees that can be scanned, saved and resumed.
Every chain makes its own accept/reject decision.
"""

import copy
from typing import Callable, NamedTuple

__all__ = ["Sampler", "Kernel", "build_kernel", "auto_plan", "categorical", "nan_acceptance"]


class Kernel(NamedTuple):
    """A sampler bound to ops and sites: ``init(position) -> aux`` and
    ``step(rng_key, position, aux, logdensity_fn) -> (position, aux, acceptance_rate)``."""

    sites: tuple
    init: Callable
    step: Callable


def check_number(owner, name, value, low=0.0, low_inclusive=False, high=None, high_inclusive=False):
    """``float(value)`` when it is a real number in the range, else ``ValueError`` naming
    ``owner`` and the argument ``name`` (NaN and infinities are rejected)."""
    import math
    import numbers

    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v >= low if low_inclusive else v > low) if low is not None else True
        if ok and high is not None:
            ok = v <= high if high_inclusive else v < high
    if not ok:
        lo = "" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        raise ValueError(f"{owner}: {name} must be a finite number in {lo}, {hi}, got {value!r}")
    return float(value)


class Sampler:
    """Base class: subclasses say which sites they move and build their kernel."""

    #: "discrete" or "continuous": the kind of site the sampler moves.
    site_kind: str = "discrete"

    def can_move(self, site) -> bool:
        if self.site_kind == "discrete":
            return site.is_discrete and site.values is not None
        return not site.is_discrete

    def check_sites(self, sites):
        for site in sites:
            if not self.can_move(site):
                raise TypeError(
                    f"{type(self).__name__} cannot move site {site.name!r} with support "
                    f"{site.support} (it moves {self.site_kind} sites"
                    + (" with a finite support" if self.site_kind == "discrete" else "")
                    + "); choose another sampler or sampler='auto'"
                )

    def restrict(self, names):
        """This sampler for a subset of the sites (the positive phase moves latents only)."""
        return self

    def build(self, ops, sites) -> Kernel:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def nan_acceptance(ops, position):
    """The acceptance rate of a kernel that has none (Gibbs, unadjusted Langevin)."""
    like = next(iter(position.values()))
    dtype_like = like if ops.is_floating(like) else ops.asarray(0.0, None)
    return ops.asarray(float("nan"), dtype_like)


def categorical(ops, rng_key, logits):
    """One draw per row of ``logits`` (..., K) by the Gumbel-max trick."""
    xp = ops.xp
    u = ops.uniform(rng_key, tuple(logits.shape), logits)
    u = xp.clip(u, 1e-30, 1.0)
    return xp.argmax(logits - xp.log(-xp.log(u)), axis=-1)


def _compound(ops, kernels):
    """Apply ``kernels`` one after the other (e.g. Gibbs on discrete, MALA on continuous)."""
    sites = tuple(s for k in kernels for s in k.sites)

    def init(position):
        return tuple(k.init(position) for k in kernels)

    def step(rng_key, position, aux, logdensity_fn):
        keys = ops.split(rng_key, len(kernels))
        new_aux, rates = [], []
        for key, kernel, a in zip(keys, kernels, aux):
            position, a, rate = kernel.step(key, position, a, logdensity_fn)
            new_aux.append(a)
            rates.append(rate)
        return position, tuple(new_aux), ops.nanmean_scalars(rates)

    return Kernel(sites, init, step)


def restrict_sampler(sampler, names):
    """The part of ``sampler`` that moves only the sites ``names`` (for the positive phase)."""
    names = set(names)
    if isinstance(sampler, Sampler):
        return sampler.restrict(names)
    if isinstance(sampler, (list, tuple)):
        plan = []
        for sub, sub_names in sampler:
            sub_names = [sub_names] if isinstance(sub_names, str) else list(sub_names)
            kept = [n for n in sub_names if n in names]
            if kept:
                plan.append((sub.restrict(set(kept)), kept))
        return plan
    return sampler


def _as_sampler(obj, num_warmup):
    """An ebm_ppl sampler for ``obj``: framework kernels (NumPyro's HMC/NUTS) are wrapped."""
    from .numpyro_kernel import NumPyroKernel, is_framework_kernel

    if is_framework_kernel(obj):
        obj = NumPyroKernel(obj, num_warmup)
    elif isinstance(obj, NumPyroKernel) and obj.num_warmup is None and num_warmup:
        obj = NumPyroKernel(obj.kernel, num_warmup)
    if not isinstance(obj, Sampler):
        raise TypeError(f"{obj!r} is not an ebm_ppl sampler: pass 'auto', a sampler from "
                        "ebm_ppl.samplers or (NumPyro only) a numpyro.infer.HMC/NUTS kernel")
    return obj


def _frozen(sampler):
    """``sampler`` with step-size adaptation off (after warm-up, so the chain is Markov)."""
    if getattr(sampler, "adapt", False):
        sampler = copy.copy(sampler)
        sampler.adapt = False
    return sampler


def auto_plan(sites, blocks=None):
    """The ``"auto"`` policy: ``[(sampler, sites), ...]`` applied in turn in every step.

    * discrete sites with a finite support: :class:`~ebm_ppl.samplers.BlockGibbs` over the
      colour classes of each site's measured interaction graph (``blocks``, from
      :func:`~ebm_ppl.samplers.structure.conditional_blocks`: an RBM layer is one block, a
      lattice Ising model its checkerboard), exact because the coordinates of a class
      were found not to interact; sites that were not probed (more than 128 coordinates,
      or no probe) get exact single-site :class:`~ebm_ppl.samplers.Gibbs`;
    * continuous sites: :class:`~ebm_ppl.samplers.MALA` from ε = 0.1 with ε adapted toward
      0.574 acceptance (during ``sample``'s warm-up; at every step during fitting);
    * mixed models: the discrete updates, then MALA on the continuous sites.
    """
    import numpy as np

    from .block_gibbs import BlockGibbs
    from .gibbs import Gibbs
    from .mala import MALA

    blocks = blocks or {}
    discrete = [s for s in sites if s.is_discrete]
    blocked = [s for s in discrete if s.name in blocks]
    single = [s for s in discrete if s.name not in blocks]
    continuous = [s for s in sites if not s.is_discrete]
    plan = []
    if blocked:
        spec = []
        for s in blocked:
            if len(blocks[s.name]) == 1:
                spec.append(s.name)
                continue
            size = int(np.prod(s.shape, dtype=int))
            for coords in blocks[s.name]:
                mask = np.zeros(size, bool)
                mask[coords] = True
                spec.append({s.name: mask.reshape(s.shape)})
        plan.append((BlockGibbs(spec), blocked))
    if single:
        plan.append((Gibbs(), single))
    if continuous:
        plan.append((MALA(step_size=0.1, adapt=True), continuous))
    return plan


def is_adaptive(sampler):
    """Whether ``sampler`` (as ``build_kernel`` takes it) adapts a step size as it runs."""
    if isinstance(sampler, str):
        return True  # "auto" adapts MALA's step size when there are continuous sites
    if isinstance(sampler, (list, tuple)):
        return any(is_adaptive(sub) for sub, _ in sampler)
    return bool(getattr(sampler, "adapt", False))


def build_kernel(sampler, ops, sites, *, is_adapting=True, num_warmup=None, probe=None):
    """Build the kernel that moves ``sites`` (a list of SiteInfo) with ``sampler``.

    ``sampler`` is a :class:`Sampler`, ``"auto"`` (see :func:`auto_plan`), a NumPyro
    ``HMC``/``NUTS`` kernel (NumPyro backend), or a list of ``(sampler, site names)`` pairs
    applied in turn. ``is_adapting=False`` turns step-size adaptation off;
    ``num_warmup`` is the adaptation window given to NumPyro kernels; ``probe()`` returns
    the structure probes ``"auto"`` uses to find blocks (see :func:`auto_plan`).
    """
    sites = list(sites)
    if isinstance(sampler, str):
        if sampler != "auto":
            raise ValueError(f"sampler={sampler!r}: pass 'auto' or a sampler from ebm_ppl.samplers")
        blocks = None
        if probe is not None and any(s.is_discrete for s in sites):
            from .structure import conditional_blocks

            probes = probe()
            blocks = conditional_blocks(ops, ops.jit(probes.logdensity), probes.params, probes.positions, sites)
        plan = auto_plan(sites, blocks)
    elif isinstance(sampler, (list, tuple)):
        by_name = {s.name: s for s in sites}
        plan = []
        for pair in sampler:
            sub, names = pair
            names = [names] if isinstance(names, str) else list(names)
            unknown = [n for n in names if n not in by_name]
            if unknown:
                raise ValueError(f"sampler plan names unknown site(s) {unknown}; sites: {sorted(by_name)}")
            plan.append((sub, [by_name.pop(n) for n in names]))
        if by_name:
            raise ValueError(f"sampler plan leaves site(s) {sorted(by_name)} unmoved")
    else:
        plan = [(sampler, sites)]
    plan = [(_as_sampler(sub, num_warmup), sub_sites) for sub, sub_sites in plan]
    if not is_adapting:
        plan = [(_frozen(sub), sub_sites) for sub, sub_sites in plan]
    for sub, sub_sites in plan:
        sub.check_sites(sub_sites)
    kernels = [sub.build(ops, sub_sites, probe=probe) if getattr(sub, "uses_probe", False)
               else sub.build(ops, sub_sites) for sub, sub_sites in plan]
    if len(kernels) == 1:
        return kernels[0]
    return _compound(ops, kernels)
