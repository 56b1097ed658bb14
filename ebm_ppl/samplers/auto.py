"""Binding samplers to sites: the ``"auto"`` policy and :func:`build_kernel`.

``build_kernel(sampler, ops, sites)`` turns what a user passes as ``sampler=`` (a sampler,
``"auto"``, a NumPyro kernel, or a list of ``(sampler, site names)`` pairs) into one
:class:`~ebm_ppl.samplers.base.Kernel`.
"""

import numpy as np

from .base import Sampler, compound, frozen
from .block_gibbs import BlockGibbs
from .gibbs import Gibbs
from .mala import MALA
from .numpyro_kernel import NumPyroKernel, is_framework_kernel
from .structure import conditional_blocks

__all__ = ["auto_plan", "build_kernel"]


def _as_sampler(obj, num_warmup):
    """An ebm_ppl sampler for ``obj``: framework kernels (NumPyro's HMC/NUTS) are wrapped."""
    if is_framework_kernel(obj):
        obj = NumPyroKernel(obj, num_warmup)
    elif isinstance(obj, NumPyroKernel) and obj.num_warmup is None and num_warmup:
        obj = NumPyroKernel(obj.kernel, num_warmup)
    if not isinstance(obj, Sampler):
        raise TypeError(f"{obj!r} is not an ebm_ppl sampler: pass 'auto', a sampler from "
                        "ebm_ppl.samplers or (NumPyro only) a numpyro.infer.HMC/NUTS kernel")
    return obj


def auto_plan(sites, blocks=None):
    """The ``"auto"`` policy: ``[(sampler, sites), ...]`` applied in turn in every step.

    * discrete sites with a finite support: :class:`~ebm_ppl.samplers.BlockGibbs` over the
      colour classes of each site's measured interaction graph (``blocks``, from
      :func:`~ebm_ppl.samplers.structure.conditional_blocks`: an RBM layer is one block, a
      lattice Ising model its checkerboard), exact because the coordinates of a class
      were found not to interact; sites that were not probed (more than 128 coordinates,
      or no probe) and one-hot sites (``OneHotCategorical``: each group redrawn from its
      K states) get exact single-site :class:`~ebm_ppl.samplers.Gibbs`;
    * continuous sites: :class:`~ebm_ppl.samplers.MALA` from ε = 0.1 with ε adapted toward
      0.574 acceptance (during ``sample``'s warm-up; at every step during fitting);
    * mixed models: the discrete updates, then MALA on the continuous sites.
    """
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


def _check_auto(plan):
    """Refuse a site that ``"auto"`` gave to a sampler that cannot move it, saying what
    ``"auto"`` moves (the samplers' own message would suggest ``sampler='auto'``)."""
    for sub, sub_sites in plan:
        for site in sub_sites:
            if not sub.can_move(site):
                raise TypeError(
                    f"sampler='auto' cannot move site {site.name!r} with support {site.support}: 'auto' moves "
                    "discrete sites with a finite support (Bernoulli, Categorical, OneHotCategorical, a bounded "
                    "integer range the same for every coordinate) by Gibbs and continuous sites by MALA. Write the "
                    "site with such a support, or pass sampler= a sampler that moves it (a list of (sampler, site "
                    "names) pairs mixes samplers)")


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
            probes = probe()
            blocks = conditional_blocks(ops, ops.quick_jit(probes.logdensity), probes.params,
                                        probes.positions, sites)
        plan = auto_plan(sites, blocks)
        _check_auto(plan)
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
        plan = [(frozen(sub), sub_sites) for sub, sub_sites in plan]
    for sub, sub_sites in plan:
        sub.check_sites(sub_sites)
    kernels = [sub.build(ops, sub_sites, probe=probe) if getattr(sub, "uses_probe", False)
               else sub.build(ops, sub_sites) for sub, sub_sites in plan]
    if len(kernels) == 1:
        return kernels[0]
    return compound(ops, kernels)
