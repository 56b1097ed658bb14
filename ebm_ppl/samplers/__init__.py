"""MCMC samplers for the negative phase; each advances many chains at once.

``"auto"`` (the default everywhere): :class:`Gibbs` on discrete sites, then :class:`MALA`
with an adapted step size on continuous sites, in each step.
"""

from .base import Sampler, Kernel, build_kernel
from .block_gibbs import BlockGibbs
from .gibbs import Gibbs
from .langevin import Langevin
from .mala import MALA

__all__ = [
    "Sampler",
    "Kernel",
    "build_kernel",
    "Gibbs",
    "BlockGibbs",
    "Langevin",
    "MALA",
]
