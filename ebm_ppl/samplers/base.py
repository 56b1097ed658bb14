"""What every sampler shares: the kernel contract and composition.

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

The ``"auto"`` policy and :func:`~ebm_ppl.samplers.auto.build_kernel` live in
:mod:`ebm_ppl.samplers.auto`; shared numerics in :mod:`ebm_ppl.samplers._numerics`.
"""

import copy
from typing import Callable, NamedTuple, Optional

__all__ = ["Sampler", "Kernel", "compound", "restrict_sampler", "frozen", "is_adaptive"]


class Kernel(NamedTuple):
    """A sampler bound to ops and sites: ``init(position) -> aux`` and
    ``step(rng_key, position, aux, target) -> (position, aux, acceptance_rate)``, where
    ``target`` is a :class:`~ebm_ppl.samplers._numerics.Target` (log p̃ per chain, callable,
    with the backend's faster value-and-gradient where there is one).

    ``redraws_all``: a step draws every coordinate of its sites afresh, whatever their
    current values (one block-Gibbs block over all of them: the positive phase then needs
    no initial draw). ``paths``: BlockGibbs' path per block, ``"gradient"`` or ``"rows"``.
    ``step_logged``, where the kernel has it: ``step`` (the same draws from the same key)
    that also returns log p̃ of the new position per chain, at little cost (BlockGibbs when
    every block takes the gradient path); None otherwise."""

    sites: tuple
    init: Callable
    step: Callable
    redraws_all: bool = False
    paths: tuple = ()
    step_logged: Optional[Callable] = None


class Sampler:
    """Base class: subclasses say which sites they move and build their kernel."""

    #: "discrete" or "continuous": the kind of site the sampler moves.
    site_kind: str = "discrete"

    def can_move(self, site) -> bool:
        if self.site_kind == "discrete":
            return site.is_discrete and site.values is not None
        return not site.is_discrete

    def check_sites(self, sites):
        """Raise ``TypeError`` naming the first of ``sites`` this sampler cannot move and its
        support (``"auto"`` checks its own plan: see :mod:`ebm_ppl.samplers.auto`)."""
        for site in sites:
            if not self.can_move(site):
                what = f"{self.site_kind} sites" + (" with a finite support" if self.site_kind == "discrete" else "")
                if getattr(site, "one_hot", False):
                    what += "; a one-hot site (OneHotCategorical) is moved by Gibbs() or sampler='auto'"
                raise TypeError(f"{type(self).__name__} cannot move site {site.name!r} with support "
                                f"{site.support} (it moves {what}); choose another sampler or sampler='auto'")

    def restrict(self, names):
        """This sampler for a subset of the sites (the positive phase moves latents only)."""
        return self

    def build(self, ops, sites) -> Kernel:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def compound(ops, kernels):
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


def frozen(sampler):
    """``sampler`` with step-size adaptation off (after warm-up, so the chain is Markov)."""
    if getattr(sampler, "adapt", False):
        sampler = copy.copy(sampler)
        sampler.adapt = False
    return sampler


def is_adaptive(sampler):
    """Whether ``sampler`` (as ``build_kernel`` takes it) adapts a step size as it runs."""
    if isinstance(sampler, str):
        return True  # "auto" adapts MALA's step size when there are continuous sites
    if isinstance(sampler, (list, tuple)):
        return any(is_adaptive(sub) for sub, _ in sampler)
    return bool(getattr(sampler, "adapt", False))
