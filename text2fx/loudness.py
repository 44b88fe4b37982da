"""Integrated loudness (LUFS) after ITU-R BS.1770-4: K-weighting, 400 ms blocks, absolute and relative gates.

Numpy only. The K-weighting filters are the standard's two biquads (a high shelf of about +4 dB above 1.7 kHz
and a 38 Hz high pass), designed for any sample rate from their analog prototypes (the parameters that give
the standard's 48 kHz coefficients), and applied through their exact frequency response on a zero-padded FFT
grid, which equals running them as recursive filters from rest (their impulse responses have died out long
before the padding ends).
"""

from __future__ import annotations

import math

import numpy as np

BLOCK_S = 0.4
HOP_S = 0.1
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
# Channel weights of BS.1770 for L, R, C, Ls, Rs (channels beyond 5 get weight 1).
CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)
_PAD_S = 1.0  # > 40 time constants of the slowest K-weighting pole at any rate


def k_weighting(sample_rate: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two K-weighting biquads at `sample_rate` as (b, a) pairs (a[0] = 1)."""
    # stage 1: high shelf (pre-filter modelling the head)
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = (np.array([(vh + vb * k / q + k * k), 2.0 * (k * k - vh), (vh - vb * k / q + k * k)]) / a0,
             np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]))
    # stage 2: RLB high pass
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1.0 + k / q + k * k
    highpass = (np.array([1.0, -2.0, 1.0]), np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]))
    return [shelf, highpass]


def _k_weighted(audio: np.ndarray, sample_rate: float) -> np.ndarray:
    n = audio.shape[-1]
    n_fft = n + int(_PAD_S * sample_rate)
    n_fft += n_fft % 2
    z = np.exp(-1j * np.pi * np.arange(n_fft // 2 + 1) / (n_fft // 2))  # e^{-jw} on the rfft grid
    response = np.ones_like(z)
    for b, a in k_weighting(sample_rate):
        response *= (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)
    spectrum = np.fft.rfft(audio.astype(np.float64), n_fft, axis=-1)
    return np.fft.irfft(spectrum * response, n_fft, axis=-1)[..., :n]


def integrated_loudness(audio: np.ndarray, sample_rate: float) -> float:
    """Integrated loudness in LUFS of `(channels, samples)` (or `(samples,)`) audio; -inf for silence.

    A clip shorter than one 400 ms block is measured as one block.
    """
    x = np.atleast_2d(np.asarray(audio))
    y = _k_weighted(x, sample_rate)
    weights = np.array([CHANNEL_WEIGHTS[c] if c < len(CHANNEL_WEIGHTS) else 1.0 for c in range(x.shape[0])])
    block, hop = round(BLOCK_S * sample_rate), round(HOP_S * sample_rate)
    n = y.shape[-1]
    if n < block:
        z = np.mean(y**2, axis=-1)[:, None]
    else:
        starts = np.arange(0, n - block + 1, hop)
        csum = np.concatenate([np.zeros((y.shape[0], 1)), np.cumsum(y**2, axis=-1)], axis=-1)
        z = (csum[:, starts + block] - csum[:, starts]) / block  # (channels, blocks) mean squares
    power = weights @ z
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(power)
    gated = block_lufs > ABSOLUTE_GATE_LUFS
    if not gated.any():
        return -math.inf
    relative = -0.691 + 10.0 * math.log10(power[gated].mean()) + RELATIVE_GATE_LU
    gated &= block_lufs > relative
    return float(-0.691 + 10.0 * math.log10(power[gated].mean()))
