"""Estimators of the negative phase E_{x'~p_θ} ∇θ log p̃θ(x')."""

from .cd import CD, CDState
from .pcd import PCD, PCDState

__all__ = ["CD", "CDState", "PCD", "PCDState"]
