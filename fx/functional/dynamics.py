"""Dynamics: a feed-forward compressor with real attack and release (over ``torchcomp``).

Audio is ``(batch, channels, samples)``; every parameter is ``(batch,)`` in physical units.
Runs on the CPU and on CUDA (``torchcomp``'s recursion is a numba kernel, compiled on first
use); differentiable in the audio and in every parameter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .level import db_to_amp

__all__ = ["compressor"]


def compressor(
    x: Tensor,
    sample_rate: float,
    threshold_db: Tensor,
    ratio: Tensor,
    attack_ms: Tensor,
    release_ms: Tensor,
    makeup_gain_db: Tensor,
) -> Tensor:
    """Feed-forward hard-knee compressor with real attack and release (``torchcomp``).

    The level is the instantaneous channel-linked RMS ``sqrt(mean_c x^2)``; the static
    gain ``min(0, (1 - 1/ratio)(threshold - level_dB))`` is smoothed by a one-pole filter
    whose coefficient switches between attack (gain falling) and release (gain rising),
    with times converted by ``torchcomp.ms2coef`` (10-90 % rise time), so the same
    milliseconds mean the same at every sample rate.  ``torchcomp`` provides exact
    gradients for all parameters (its recursion is differentiated analytically).

    Args:
        x: ``(batch, channels, samples)``.
        sample_rate: Hz.
        threshold_db: ``(batch,)`` dBFS.
        ratio: ``(batch,)`` >= 1 (1 = no compression).
        attack_ms, release_ms: ``(batch,)`` milliseconds.
        makeup_gain_db: ``(batch,)`` dB.

    Returns:
        ``(batch, channels, samples)``.

    Raises:
        RuntimeError: when ``torchcomp``'s numba kernel fails (named, with a way around it).
    """
    # imported lazily: torchcomp pulls in numba, which is slow to import
    from torchcomp import compressor_core, ms2coef

    level_db = 10.0 * torch.log10(x.square().mean(dim=1).add(1e-12))
    # Static curve computed here rather than by torchcomp.compexp_gain, whose argument asserts
    # (torch.all(...)) make the host wait for the device on every call; the ranges guarantee them.
    gain_db = -torch.relu((1.0 - 1.0 / ratio)[:, None] * (level_db - threshold_db[:, None]))
    at = ms2coef(attack_ms, sample_rate)
    rt = ms2coef(release_ms, sample_rate)
    try:
        g = compressor_core(db_to_amp(gain_db), level_db.new_ones(x.shape[0]), at, rt)
    except Exception as exc:  # noqa: BLE001 - anything numba raises: name the culprit and the way around it
        kernel = "numba-cuda" if x.device.type == "cuda" else "numba"
        raise RuntimeError(
            f"the compressor's kernel (torchcomp on {kernel}) failed on {x.device.type}: {type(exc).__name__}: "
            f"{' '.join(str(exc).split())} - {kernel} may not match the installed numpy; "
            "run on another device or leave the compressor out of the chain"
        ) from exc
    return x * g[:, None, :] * db_to_amp(makeup_gain_db)[:, None, None]
