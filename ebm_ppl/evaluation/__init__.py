"""Evaluating a model: log Z by enumeration or annealed importance sampling, and the
log-likelihood of data (``log_partition``, ``log_likelihood``, ``LogZ``)."""

from .api import EstimateWarning
from .api import LogLikelihood
from .api import LogZ
from .api import log_likelihood
from .api import log_partition

__all__ = [
    "EstimateWarning",
    "LogLikelihood",
    "LogZ",
    "log_likelihood",
    "log_partition",
]
