"""Entry points of the training stages for ``facelandmarks stage pretrain|finetune`` (see ``cli.py``)."""

from __future__ import annotations

from facelandmarks.train.finetune_stage import main as main_finetune
from facelandmarks.train.pretrain_stage import main as main_pretrain

__all__ = ["main_pretrain", "main_finetune"]
