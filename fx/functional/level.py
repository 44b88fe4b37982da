"""Level: decibel conversion and broadband gain.

Any device and float dtype; differentiable in every tensor argument.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["db_to_amp", "gain"]


def db_to_amp(db: Tensor) -> Tensor:
    """Amplitude ratio ``10^(db/20)`` of a level in dB (any shape; same shape out)."""
    return torch.pow(10.0, db / 20.0)


def gain(x: Tensor, gain_db: Tensor) -> Tensor:
    """``x * 10^(gain_db/20)``.

    Args:
        x: ``(batch, channels, samples)``.
        gain_db: ``(batch,)`` dB.

    Returns:
        ``(batch, channels, samples)``.
    """
    return x * db_to_amp(gain_db)[:, None, None]
