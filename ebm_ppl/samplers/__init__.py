"""MCMC samplers for the negative phase and for ``ebm_ppl.sample``; each advances many
chains at once, every chain with its own accept/reject.

``"auto"`` (the default everywhere, see :func:`~ebm_ppl.samplers.base.auto_plan`):
:class:`BlockGibbs` over the measured non-interacting coordinate classes of each discrete
site (single-site :class:`Gibbs` where it cannot measure them), then :class:`MALA` with a
step size adapted toward 0.574 acceptance on continuous sites, in each step. Adaptation runs during
``sample``'s warm-up only (and at every step of a fit, where parameters keep changing).
"""

from .base import Sampler, Kernel
from .auto import auto_plan, build_kernel
from .block_gibbs import BlockGibbs
from .gibbs import Gibbs
from .gwg import GibbsWithGradients
from .hmc import HMC
from .langevin import Langevin
from .mala import MALA
from .numpyro_kernel import NumPyroKernel

__all__ = [
    "Sampler",
    "Kernel",
    "auto_plan",
    "build_kernel",
    "Gibbs",
    "BlockGibbs",
    "GibbsWithGradients",
    "HMC",
    "Langevin",
    "MALA",
    "NumPyroKernel",
]
