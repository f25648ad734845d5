"""Early stopping on a metric where lower is better (validation NME)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["EarlyStopping"]


@dataclass
class EarlyStopping:
    """Stop when the metric has not improved by more than ``min_delta`` for ``patience`` evaluations.

    Attributes:
        patience: evaluations without improvement before stopping (0 disables early stopping).
        min_delta: smallest decrease that counts as an improvement (metric units, e.g. 0.0001 = 0.01% NME).
        best: best value so far (``inf`` before the first).
        best_epoch: epoch of ``best`` (-1 before the first).
        bad: evaluations since the last improvement.
    """

    patience: int = 10
    min_delta: float = 0.0
    best: float = math.inf
    best_epoch: int = -1
    bad: int = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record one evaluation; returns True when ``value`` is a new best. NaN never improves."""
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad = float(value), epoch, 0
            return True
        self.bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` evaluations in a row brought no improvement."""
        return self.patience > 0 and self.bad >= self.patience

    def state_dict(self) -> dict:
        """JSON-able state (for ``last.pt``)."""
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`."""
        for k, v in state.items():
            setattr(self, k, v)
