"""Estimators: objectives whose gradient estimates the log-likelihood's (see :mod:`.base`)."""

from . import base
from .base import Contrastive, Estimator, Phases, Step

from .cd import CD, CDState
from .fast_pcd import FPCD, FPCDState
from .nce import NCE, NCEState
from .pcd import PCD, PCDState
from .pseudo_likelihood import PseudoLikelihood
from .ratio_matching import RatioMatching
from .replay import ReplayBuffer, ReplayState
from .score_matching import ScoreMatching
from .tempering import PT, PTState



def default_estimator():
    """The estimator a fit uses when none is given: ``PCD(num_chains=100, num_steps=1)``."""
    return PCD()


__all__ = ["default_estimator", "Estimator", "Contrastive", "Phases", "Step", "CD", "CDState", "FPCD", "FPCDState", "NCE", "NCEState", "PCD", "PCDState",
           "PT", "PTState", "PseudoLikelihood", "RatioMatching", "ReplayBuffer", "ReplayState", "ScoreMatching"]
