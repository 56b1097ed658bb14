"""Estimators: objectives whose gradient estimates the log-likelihood's (see :mod:`.base`)."""

from . import base
from .base import Contrastive, Estimator, Step

from .cd import CD, CDState
from .fast_pcd import FPCD, FPCDState
from .nce import NCE, NCEState
from .pcd import PCD, PCDState
from .replay import ReplayBuffer, ReplayState
from .tempering import PT, PTState

__all__ = ["Estimator", "Contrastive", "Step", "CD", "CDState", "FPCD", "FPCDState", "NCE", "NCEState", "PCD", "PCDState", "PT", "PTState", "ReplayBuffer", "ReplayState"]
