"""Waveshaping distortion: tanh with drive-only level compensation and a dry/wet mix.

Audio is ``(batch, channels, samples)``; drive is ``(batch,)`` dB, mix ``(batch,)`` percent.
Any device and float dtype; differentiable in the audio and both parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .level import db_to_amp

__all__ = ["distortion", "tanh_rms_gain"]

_DISTORTION_REF_RMS = 0.1
# Grid for E[f(z)], z ~ N(0, 1): tanh saturates too sharply at high drive for Gauss-Hermite rules to
# converge, a fine uniform grid over +-8 sigma does (error < 0.001 dB up to 40 dB drive).
_GAUSS_GRID_POINTS = 4001


def tanh_rms_gain(g: Tensor, rms: float) -> Tensor:
    """``rms(tanh(g s)) / rms(s)`` for Gaussian ``s`` of the given RMS.

    Computed numerically on a fixed grid (no randomness, no dependence on the signal), on the
    device and in the dtype of ``g``, and differentiable in ``g``.

    Args:
        g: ``(batch,)`` linear gain into the tanh.
        rms: RMS of the Gaussian input (linear amplitude).

    Returns:
        ``(batch,)`` linear RMS gain.
    """
    z = torch.linspace(-8.0, 8.0, _GAUSS_GRID_POINTS, dtype=g.dtype, device=g.device)
    w = torch.exp(-0.5 * z.square())
    w = w / w.sum()
    power = (torch.tanh(g[:, None] * rms * z).square() * w).sum(-1)
    return power.sqrt() / rms


def distortion(x: Tensor, drive_db: Tensor, mix_pct: Tensor) -> Tensor:
    """tanh waveshaper with level compensation and dry/wet mix.

    The shaped signal ``tanh(g x)``, ``g = 10^(drive/20)``, is divided by the RMS gain that the
    waveshaper has on Gaussian noise at -20 dBFS RMS, so drive changes timbre rather than
    loudness for typical material. The compensation depends on ``drive`` only, never on the
    signal: the effect stays memoryless, so a clip processed in pieces equals it processed whole.

    Args:
        x: ``(batch, channels, samples)``.
        drive_db: ``(batch,)`` dB of gain before the tanh.
        mix_pct: ``(batch,)`` percent of shaped signal, 0..100 (linear mix: dry and wet
            are correlated).

    Returns:
        ``(batch, channels, samples)``.
    """
    g = db_to_amp(drive_db)
    shaped = torch.tanh(x * g[:, None, None])
    wet = shaped / tanh_rms_gain(g, _DISTORTION_REF_RMS)[:, None, None]
    m = (mix_pct / 100.0)[:, None, None]
    return x + m * (wet - x)
