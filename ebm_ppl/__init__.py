"""ebm_ppl: energy-based and other unnormalized models in Pyro and NumPyro.

Declare unnormalized factors with :func:`factor` / :func:`energy` in an ordinary model
and fit its parameters by maximum likelihood with :func:`fit_unnormalized` (CD-k or PCD
estimates of the negative phase). Importing ebm_ppl imports neither torch nor jax.
"""

from . import datasets
from . import estimators
from . import evaluation
from . import samplers
from ._result import FitResult
from ._result import FitState
from .evaluation import LogZ
from .evaluation import log_likelihood
from .evaluation import log_partition
from .fit import Trainer
from .fit import fit_unnormalized
from .sampling import sample
from .checkpoint import load
from .checkpoint import save
from .estimators import CD
from .estimators import FPCD
from .estimators import NCE
from .estimators import PCD
from .estimators import PT
from .estimators import PseudoLikelihood
from .estimators import RatioMatching
from .estimators import ReplayBuffer
from .estimators import ScoreMatching
from .evaluation import EstimateWarning
from .interop import to_arviz
from .monitor import Monitor
from .plots import plot_history
from .plots import plot_samples
from .primitives import energy
from .primitives import factor

__version__ = "0.1.0"

__all__ = [
    "CD",
    "EstimateWarning",
    "FPCD",
    "FitResult",
    "FitState",
    "LogZ",
    "Monitor",
    "NCE",
    "PCD",
    "PT",
    "PseudoLikelihood",
    "RatioMatching",
    "ReplayBuffer",
    "ScoreMatching",
    "Trainer",
    "datasets",
    "energy",
    "estimators",
    "evaluation",
    "factor",
    "fit_unnormalized",
    "load",
    "log_likelihood",
    "log_partition",
    "plot_history",
    "plot_samples",
    "sample",
    "samplers",
    "save",
    "to_arviz",
]
