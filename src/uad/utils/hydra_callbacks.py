"""Hydra callbacks that are light to import: Hydra builds them before every run, a single one too, so the
module behind each (torch, Lightning) loads only when the callback fires. A bad config or a missing dataset
is then reported in a second."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class Leaderboard(Callback):
    """At the end of a multirun: `uad.leaderboard.LeaderboardCallback` (leaderboard.{csv,md,png})."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from uad.leaderboard import LeaderboardCallback

        LeaderboardCallback().on_multirun_end(config, **kwargs)
