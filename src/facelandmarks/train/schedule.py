"""Learning-rate schedule: linear warm-up, then cosine decay (Loshchilov & Hutter, SGDR, ICLR 2017).

The LR depends only on the optimiser step (epochs x steps per epoch), never on elapsed time, so the same data,
params and seed give the same schedule on any machine. A wall-clock cap (``max_minutes``) is handled by the fit
loop as a safety stop (:func:`facelandmarks.train.loop.fit`), not by bending the schedule.
"""

from __future__ import annotations

import math

import torch

__all__ = ["warmup_cosine_factor", "WarmupCosine"]


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_factor: float = 0.01) -> float:
    """LR multiplier at optimiser step ``step`` (0-based).

    Rises linearly from ``1/warmup_steps`` to 1 over ``warmup_steps`` steps, then follows a half cosine from 1
    down to ``min_factor`` at ``total_steps``: ``min + (1 - min) (1 + cos(pi t)) / 2`` with
    ``t = (step - warmup) / (total - warmup)`` clipped to [0, 1].
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, max(0.0, (step - warmup_steps) / span))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))


class WarmupCosine:
    """Sets each parameter group's LR to ``peak * warmup_cosine_factor(step, ...)`` before every optimiser step.

    Args:
        optimizer: its groups' ``lr`` at construction are the peaks.
        total_steps: optimiser steps of the full schedule (epochs x steps per epoch).
        warmup_steps: linear warm-up steps.
        min_factor: final LR as a fraction of the peak.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                 min_factor: float = 0.01):
        self.optimizer = optimizer
        self.peaks = [g["lr"] for g in optimizer.param_groups]
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_factor = min_factor

    def set(self, step: int) -> float:
        """Apply the LR of optimiser step ``step``; returns the factor."""
        f = warmup_cosine_factor(step, self.total_steps, self.warmup_steps, self.min_factor)
        for group, peak in zip(self.optimizer.param_groups, self.peaks):
            group["lr"] = peak * f
        return f
