"""Learning-rate schedule: linear warm-up, then cosine decay (Loshchilov & Hutter, SGDR, ICLR 2017), optionally
squeezed into a time budget.

Progress through the cosine is ``max(step / total_steps, elapsed / budget)``: with no time budget, or on a
machine fast enough to finish the epochs within it, the schedule is the plain step-based one (and runs are
reproducible step for step); on a slower or busy machine the cosine reaches its end when the budget is spent,
so training stops with a decayed learning rate instead of being cut off at its peak.
"""

from __future__ import annotations

import math

import torch

__all__ = ["warmup_cosine_factor", "WarmupCosine"]


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_factor: float = 0.01,
                         progress: float | None = None) -> float:
    """LR multiplier at optimiser step ``step`` (0-based).

    Rises linearly from ``1/warmup_steps`` to 1 over ``warmup_steps`` steps, then follows a half cosine from 1
    down to ``min_factor``. The position on the cosine is ``(step - warmup) / (total - warmup)``, or ``progress``
    (in [0, 1]) when given and larger.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = (step - warmup_steps) / span
    if progress is not None:
        t = max(t, progress)
    t = min(1.0, max(0.0, t))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))


class WarmupCosine:
    """Sets each parameter group's LR to ``peak * warmup_cosine_factor(...)`` before every optimiser step.

    Args:
        optimizer: its groups' ``lr`` at construction are the peaks.
        total_steps: optimiser steps of the full schedule (epochs x steps per epoch).
        warmup_steps: linear warm-up steps.
        min_factor: final LR as a fraction of the peak.
        budget_seconds: time budget of the training (None: step-based only).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                 min_factor: float = 0.01, budget_seconds: float | None = None):
        self.optimizer = optimizer
        self.peaks = [g["lr"] for g in optimizer.param_groups]
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_factor = min_factor
        self.budget_seconds = budget_seconds

    def time_progress(self, elapsed_seconds: float) -> float:
        """Fraction of the time budget spent (0 without a budget)."""
        return elapsed_seconds / self.budget_seconds if self.budget_seconds else 0.0

    def finished(self, step: int, elapsed_seconds: float) -> bool:
        """True once the schedule has reached its end (all steps done or the budget spent)."""
        return step >= self.total_steps or self.time_progress(elapsed_seconds) >= 1.0

    def set(self, step: int, elapsed_seconds: float) -> float:
        """Apply the LR of optimiser step ``step`` after ``elapsed_seconds`` of training; returns the factor."""
        progress = self.time_progress(elapsed_seconds) if self.budget_seconds else None
        f = warmup_cosine_factor(step, self.total_steps, self.warmup_steps, self.min_factor, progress)
        for group, peak in zip(self.optimizer.param_groups, self.peaks):
            group["lr"] = peak * f
        return f
