"""Dynamics: a feed-forward soft-knee compressor with an RMS detector and real attack and release (over
``torchcomp``).

Audio is ``(batch, channels, samples)``; every parameter is ``(batch,)`` in physical units.
Runs on the CPU and on CUDA (``torchcomp``'s recursion is a numba kernel, compiled on first
use); differentiable in the audio and in every parameter.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .level import db_to_amp

__all__ = ["compressor", "compressor_gain_db", "DETECTOR_MS"]

# Time constant of the RMS level detector (one-pole average of the channel-linked mean square).
DETECTOR_MS = 10.0


def compressor_gain_db(level_db: Tensor, threshold_db: Tensor, ratio: Tensor, knee_db: Tensor) -> Tensor:
    """The static curve: gain (dB, <= 0) at detector level ``level_db``, the textbook soft knee (Giannoulis,
    Massberg and Reiss, JAES 2012) of width ``knee_db`` centred on the threshold::

        level - threshold <= -knee/2:   0
        |level - threshold| < knee/2:   (1/ratio - 1) (level - threshold + knee/2)^2 / (2 knee)
        level - threshold >= knee/2:    (1/ratio - 1) (level - threshold)

    ``knee_db = 0`` is the hard knee.  Tensors broadcast: ``level_db`` ``(batch, samples)``, the others
    ``(batch, 1)``; differentiable in all four.
    """
    over = level_db - threshold_db
    slope = 1.0 / ratio - 1.0
    half = 0.5 * knee_db
    soft = slope * (over + half).square() / (2.0 * knee_db.clamp_min(1e-6))
    return torch.where(over <= -half, torch.zeros_like(over), torch.where(over >= half, slope * over, soft))


def compressor(
    x: Tensor,
    sample_rate: float,
    threshold_db: Tensor,
    ratio: Tensor,
    attack_ms: Tensor,
    release_ms: Tensor,
    makeup_gain_db: Tensor,
    knee_db: Tensor | None = None,
) -> Tensor:
    """Feed-forward soft-knee compressor with an RMS detector and real attack and release (``torchcomp``).

    Detector: the channel-linked mean square ``mean_c x^2`` averaged by a one-pole filter of time constant
    ``DETECTOR_MS`` (10 ms), in dB: the RMS level, so a steady sine of RMS ``r`` reads
    ``20 log10 r`` (ripple below 0.1 dB above 200 Hz).  Static curve: :func:`compressor_gain_db` on that
    level.  The gain is then smoothed by a one-pole filter whose coefficient switches between attack (gain
    falling) and release (gain rising), times converted by ``torchcomp.ms2coef`` (10-90 % rise time), so the
    same milliseconds mean the same at every sample rate; on steady material the smoothed gain is the static
    curve's, whatever the attack and release.  ``torchcomp`` provides exact gradients for all parameters (its
    recursions are differentiated analytically).

    Args:
        x: ``(batch, channels, samples)``.
        sample_rate: Hz.
        threshold_db: ``(batch,)`` dBFS (RMS).
        ratio: ``(batch,)`` >= 1 (1 = no compression).
        attack_ms, release_ms: ``(batch,)`` milliseconds.
        makeup_gain_db: ``(batch,)`` dB.
        knee_db: ``(batch,)`` knee width in dB (``None``: 0, the hard knee).

    Returns:
        ``(batch, channels, samples)``.

    Raises:
        RuntimeError: when ``torchcomp``'s numba kernel fails (named, with a way around it).
    """
    # imported lazily: torchcomp pulls in numba, which is slow to import
    from torchcomp import compressor_core, ms2coef

    if knee_db is None:
        knee_db = torch.zeros_like(threshold_db)
    kernel = "numba-cuda" if x.device.type == "cuda" else "numba"
    try:
        coef = 1.0 - math.exp(-1000.0 / (DETECTOR_MS * sample_rate))
        # a one-pole average is torchcomp's attack/release smoother with equal coefficients (torchcomp.avg
        # would check its coefficient on the host)
        c = x.new_full((x.shape[0],), coef)
        mean_square = compressor_core(x.square().mean(dim=1), x.new_zeros(x.shape[0]), c, c)
        level_db = 10.0 * torch.log10(mean_square.add(1e-12))
        # Static curve computed here rather than by torchcomp.compexp_gain, whose argument asserts
        # (torch.all(...)) make the host wait for the device on every call; the ranges guarantee them.
        gain_db = compressor_gain_db(level_db, threshold_db[:, None], ratio[:, None], knee_db[:, None])
        at = ms2coef(attack_ms, sample_rate)
        rt = ms2coef(release_ms, sample_rate)
        g = compressor_core(db_to_amp(gain_db), level_db.new_ones(x.shape[0]), at, rt)
    except Exception as exc:  # noqa: BLE001 - anything numba raises: name the culprit and the way around it
        raise RuntimeError(
            f"the compressor's kernel (torchcomp on {kernel}) failed on {x.device.type}: {type(exc).__name__}: "
            f"{' '.join(str(exc).split())} - {kernel} may not match the installed numpy; "
            "run on another device or leave the compressor out of the chain"
        ) from exc
    return x * g[:, None, :] * db_to_amp(makeup_gain_db)[:, None, None]
