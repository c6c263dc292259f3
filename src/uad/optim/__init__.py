"""Optimisers and learning-rate schedules of our own (the papers' recipes), each tested once."""

from uad.optim.schedulers import WarmupCosineLR
from uad.optim.stable_adamw import StableAdamW

__all__ = ["StableAdamW", "WarmupCosineLR"]
