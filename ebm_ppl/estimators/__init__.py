"""Estimators of the negative phase E_{x'~p_θ} ∇θ log p̃θ(x')."""

from .cd import CD, CDState
from .fast_pcd import FPCD, FPCDState
from .pcd import PCD, PCDState
from .replay import ReplayBuffer, ReplayState
from .tempering import PT, PTState

__all__ = ["CD", "CDState", "FPCD", "FPCDState", "PCD", "PCDState", "PT", "PTState", "ReplayBuffer", "ReplayState"]
