"""Noise-shaped reverb: octave-band noise, decaying impulse responses, pre-delay, true-stereo cross-feed,
dry/wet mix.

Audio is ``(batch, channels, samples)``; decay times are ``(batch, bands)`` seconds, band
gains ``(batch, bands)`` dB, pre-delays ``(batch,)`` seconds and the mix ``(batch,)``
percent.  The reverb is applied in the frequency domain (:func:`reverb_response`): the wet path of output
channel ``c`` is that channel's own (decorrelated) impulse response applied to a cross-fed mix of the inputs,
``(1 - STEREO_CROSSFEED) x_c + STEREO_CROSSFEED * mean_d x_d``, so every output channel gets reverb from every
input channel; the pre-delay is a linear phase term (a band-limited, exactly differentiable delay).  The band noise is a constant made on the CPU in float64 (:func:`reverb_band_noise`;
the caller moves it to the audio's device and dtype and may cache it); everything else runs
on the device and in the dtype of its inputs and is differentiable in the audio and in every
parameter.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .fft import CrossfeedResponse, next_fast_len, rfft

__all__ = [
    "OCTAVE_CENTERS_HZ",
    "STEREO_CROSSFEED",
    "octave_band_masks",
    "reverb_band_noise",
    "reverb_impulse_response",
    "fractional_delay",
    "noise_reverb",
    "reverb_response",
    "reverb_response_length",
]

# Reverb bands: octaves centred on 31.25 Hz ... 16 kHz (10 bands).
OCTAVE_CENTERS_HZ: tuple[float, ...] = tuple(31.25 * 2.0**k for k in range(10))

_LN_1000 = math.log(1000.0)  # an amplitude envelope decays by ln(1000) nepers in one RT60

# Share of the input channels' mean in each output channel's reverb feed (true stereo): with 0.8, a hard-left
# source feeds the right channel's reverb at 0.4 / 0.6 of the left's (-3.5 dB). The feed's weights sum to 1,
# so identical channels (a mono source) are fed exactly as before; one channel is fed by itself.
STEREO_CROSSFEED = 0.8


def octave_band_masks(
    n_fft: int, sample_rate: float, centers_hz: tuple[float, ...] = OCTAVE_CENTERS_HZ
) -> Tensor:
    """Band-split masks on the ``rfft`` grid: each bin belongs to exactly one band (0 or 1).

    Band ``k`` holds the bins within half an octave of its centre (``[c_k / sqrt 2, c_k sqrt 2)``); the
    first band extends down to DC and the last one up to Nyquist, so the masks sum to exactly 1 at every
    bin (band-split noise sums back to the original noise: equal decays give a flat IR spectrum).  The
    split is sharp on purpose: with crossfading crossovers (an octave wide before) a frequency near a band
    edge decays as a mixture of both bands' decays, the longer one dominating, so a short band between long
    ones measured long.  Bands whose range lies above Nyquist are all-zero, so the design works at every
    sample rate.

    Args:
        n_fft: transform length.
        sample_rate: Hz.
        centers_hz: band centres in Hz, an octave apart, ascending.

    Returns:
        ``(bands, n_fft // 2 + 1)`` float64 on the CPU (a constant: no gradient).
    """
    f = torch.fft.rfftfreq(n_fft, d=1.0 / sample_rate, dtype=torch.float64)
    k = len(centers_hz)
    pos = torch.log2(f.clamp_min(1e-9) / centers_hz[0])  # band index coordinate (octaves)
    band = torch.floor(pos + 0.5).clamp(0, k - 1).long()
    masks = torch.zeros(k, f.shape[0], dtype=torch.float64)
    masks.scatter_(0, band[None], 1.0)
    return masks


def reverb_band_noise(
    seed: int,
    channels: int,
    length: int,
    sample_rate: float,
    centers_hz: tuple[float, ...] = OCTAVE_CENTERS_HZ,
) -> Tensor:
    """Deterministic band-split white noise for the reverb.

    Channel ``c`` uses its own generator seeded from ``(seed, c)``, so channels are
    decorrelated and channel ``c`` is the same whatever the channel count.  Each channel's
    noise is scaled to a mean square of exactly 1 and split circularly (no edge
    transients) with :func:`octave_band_masks`.

    Args:
        seed: noise seed.
        channels: number of channels.
        length: samples.
        sample_rate: Hz (places the bands).
        centers_hz: as :func:`octave_band_masks`.

    Returns:
        ``(channels, bands, length)`` float64 on the CPU (a constant: no gradient);
        ``sum(dim=1)`` is the unit noise.
    """
    masks = octave_band_masks(length, sample_rate, centers_hz)
    out = torch.empty(channels, len(centers_hz), length, dtype=torch.float64)
    for c in range(channels):
        state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, c]).generate_state(2, dtype=np.uint32)
        gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        n = torch.randn(length, generator=gen, dtype=torch.float64)
        n = n / n.square().mean().sqrt()
        out[c] = torch.fft.irfft(torch.fft.rfft(n)[None] * masks, n=length)
    return out


def reverb_impulse_response(
    band_noise: Tensor, sample_rate: float, rt60_s: Tensor, band_gain_db: Tensor, norm_length: int | None = None
) -> Tensor:
    """Impulse response ``sum_k g_k * env_k(t) * noise_k(t)``.

    ``env_k(t) = exp(-ln(1000) t / RT60_k)`` (60 dB amplitude decay in ``RT60_k`` seconds),
    scaled to unit energy over ``norm_length`` samples, so with every band gain at 0 dB
    and equal decays the IR has unit energy (white-noise gain 1, wet RMS = dry RMS) at
    any RT60 and sample rate.  On the device and in the dtype of ``band_noise``;
    differentiable in ``rt60_s`` and ``band_gain_db``.

    Args:
        band_noise: ``(channels, bands, length)`` from :func:`reverb_band_noise`
            (possibly truncated; ``length`` is the IR length produced).
        sample_rate: Hz.
        rt60_s: ``(batch, bands)`` seconds.
        band_gain_db: ``(batch, bands)`` dB.
        norm_length: samples over which the envelope energy is normalised; pass the
            untruncated IR length so a truncated IR is a prefix of the full one
            (default: ``length``).

    Returns:
        ``(batch, channels, length)``.
    """
    length = band_noise.shape[-1]
    norm_length = length if norm_length is None else norm_length
    decay = _LN_1000 / (rt60_s * sample_rate)  # nepers per sample, (batch, bands)
    # sum_{n<N} exp(-2 a n) in closed form; expm1 keeps it accurate for tiny decays
    energy = torch.expm1(-2.0 * decay * norm_length) / torch.expm1(-2.0 * decay)
    # the band's gain and energy normalisation enter as an offset of the exponent: one pass fewer per band
    log_coef = (math.log(10.0) / 20.0) * band_gain_db - 0.5 * torch.log(energy)
    n = torch.arange(length, device=band_noise.device, dtype=band_noise.dtype)
    ir = None
    # One band at a time keeps the peak memory at (batch, channels, length); on a CPU it is also faster than
    # forming all bands' envelopes at once.
    for k in range(band_noise.shape[1]):
        # the exponent is floored at -40 nepers (-347 dB): deeper values would reach
        # subnormal floats, which are much slower on x86 and inaudible anyway
        env = torch.exp(torch.addcmul(log_coef[:, k, None], decay[:, k, None], n, value=-1.0).clamp(min=-40.0))
        term = band_noise[None, :, k, :]
        ir = env[:, None, :] * term if ir is None else torch.addcmul(ir, env[:, None, :], term)
    return ir


def fractional_delay(x: Tensor, delay_samples: Tensor, max_delay: float) -> Tensor:
    """Delay each item by a (fractional) number of samples: integer shift plus 2-tap linear interpolation.

    Any device; differentiable in ``x`` and, through the fractional part, in ``delay_samples``.  (A
    frequency-domain fractional delay would be a periodic sinc whose tails depend on the FFT size, so a
    crop would no longer be a prefix of the full render.)

    Args:
        x: ``(batch, channels, samples)``.
        delay_samples: ``(batch,)`` delays in ``[0, max_delay]`` samples.
        max_delay: bound of ``delay_samples`` (sizes the output).

    Returns:
        ``(batch, channels, samples + floor(max_delay) + 1)``: the whole delayed signal.
    """
    room = int(math.floor(max_delay)) + 1
    batch, channels, length = x.shape
    whole = torch.floor(delay_samples.detach()).clamp(0, room - 1)
    frac = (delay_samples - whole)[:, None, None]
    # padded[m] = x[m - room]; out0[n] = x[n - whole] and out1[n] = x[n - whole - 1], both zero outside x.
    padded = torch.nn.functional.pad(x, (room, room))
    index = torch.arange(length + room, device=x.device) + (room - whole.long())[:, None]
    index = index[:, None, :].expand(batch, channels, -1)
    return (1 - frac) * padded.gather(-1, index) + frac * padded.gather(-1, index - 1)


def _equal_power(mix_pct: Tensor) -> tuple[Tensor, Tensor]:
    m = ((0.5 * math.pi / 100.0) * mix_pct)[:, None, None]
    return torch.cos(m), torch.sin(m)


# Half-width (samples) of the pre-delay's fractional-delay kernel: a cos^2-windowed sinc over 2 * 8 taps.
DELAY_HALF_TAPS = 8


def _delay_response(delay_samples: Tensor, gain: Tensor, n_fft: int, dtype: torch.dtype) -> Tensor:
    """The pre-delay as a response on the ``rfft`` grid of length ``n_fft``: ``(batch, 1, n_fft // 2 + 1)``
    complex, for ``delay_samples`` and ``gain`` ``(batch,)``.

    A fractional-delay FIR, ``h_j = sinc(j - f) cos^2(pi (j - f) / 16)`` for ``j = -7..8`` and ``f`` the
    fractional part, normalised to unit DC gain and scaled by ``gain``, placed at the integer part on the
    transform's circular buffer (the taps before time 0, up to 7 samples, wrap to its unused end) and
    transformed: one real FFT per batch item, shared by every channel, instead of filtering each channel's
    impulse response in time.  The kernel's window and slope vanish at its ends, so the response is
    continuously differentiable in the delay across sample boundaries; being a finite filter it is the same
    for every ``n_fft`` (a pure linear phase would be a periodic sinc depending on ``n_fft``).  On the device
    of ``delay_samples``; differentiable in ``delay_samples`` and ``gain``.
    """
    k_half = DELAY_HALF_TAPS
    device = delay_samples.device
    whole = torch.floor(delay_samples.detach())
    frac = (delay_samples - whole).to(dtype)  # (batch,), carries the gradient
    j = torch.arange(1 - k_half, k_half + 1, device=device, dtype=dtype)
    x = j - frac[:, None]
    h = torch.sinc(x) * torch.cos((0.5 * math.pi / k_half) * x).square()
    h = h * (gain.to(dtype)[:, None] / h.sum(dim=1, keepdim=True))
    index = whole.to(torch.int64)[:, None] + torch.arange(1 - k_half, k_half + 1, device=device)
    index = torch.where(index < 0, index + n_fft, index)
    kernel = h.new_zeros(h.shape[0], n_fft).scatter(-1, index, h)
    return rfft(kernel, n_fft)[:, None, :]


def noise_reverb(
    x: Tensor,
    sample_rate: float,
    band_noise: Tensor,
    rt60_s: Tensor,
    band_gain_db: Tensor,
    predelay_s: Tensor,
    mix_pct: Tensor,
    ir_length: int,
    max_predelay_s: float,
) -> Tensor:
    """Noise-shaped true-stereo reverb: the input filtered by :func:`reverb_response`.

    The output has the input's length (pad the input with silence to keep the tail: ``fx.Chain.process``
    with ``tail=True`` does).  Output channel ``c`` is ``cos(pi/2 m) x_c + sin(pi/2 m) wet_c`` (equal-power
    dry/wet law: the wet being nearly uncorrelated with the dry, loudness stays roughly constant over the mix
    range; ``m = 0`` returns ``x`` up to FFT rounding), ``wet_c`` channel ``c``'s impulse response applied to
    its feed ``(1 - STEREO_CROSSFEED) x_c + STEREO_CROSSFEED mean_d x_d``, delayed by the pre-delay.
    ``band_noise`` must be on the device and in the dtype of ``x``; differentiable in ``x`` and every
    parameter.

    Args:
        x: ``(batch, channels, samples)``.
        sample_rate: Hz.
        band_noise: ``(channels, bands, L)`` with ``L >= min(ir_length, samples)``.
        rt60_s: ``(batch, bands)`` seconds.
        band_gain_db: ``(batch, bands)`` dB.
        predelay_s: ``(batch,)`` seconds, ``<= max_predelay_s``.
        mix_pct: ``(batch,)`` wet share in percent, 0..100.
        ir_length: full IR length in samples (energy normalisation; see
            :func:`reverb_impulse_response`).
        max_predelay_s: bound of ``predelay_s`` (FFT sizing).

    Returns:
        ``(batch, channels, samples)``.
    """
    t = x.shape[-1]
    n_fft = next_fast_len(t + reverb_response_length(t, ir_length, max_predelay_s, sample_rate) - 1)
    h = reverb_response(n_fft, t, sample_rate, band_noise, rt60_s, band_gain_db, predelay_s, mix_pct, ir_length,
                        max_predelay_s)
    if x.shape[0] > 1 and x.stride(0) == 0:
        x = x[:1]
    spectrum = rfft(x, n_fft)
    spectrum = h.apply(spectrum) if isinstance(h, CrossfeedResponse) else spectrum * h
    return torch.fft.irfft(spectrum, n=n_fft)[..., :t]


def reverb_response_length(samples: int, ir_length: int, max_predelay_s: float, sample_rate: float) -> int:
    """Length in samples of the reverb's impulse response as far as it reaches the first ``samples`` output
    samples: the IR (cut at ``samples``) plus the pre-delay's room.  Pure Python."""
    return min(ir_length, samples) + int(math.floor(max_predelay_s * sample_rate)) + DELAY_HALF_TAPS + 1


def reverb_response(
    n_fft: int,
    samples: int,
    sample_rate: float,
    band_noise: Tensor,
    rt60_s: Tensor,
    band_gain_db: Tensor,
    predelay_s: Tensor,
    mix_pct: Tensor,
    ir_length: int,
    max_predelay_s: float,
) -> Tensor | CrossfeedResponse:
    """:func:`noise_reverb` as a response on the ``rfft`` grid of length ``n_fft``, dry path included:
    applying it to ``rfft(x, n_fft)`` and taking ``irfft(...)[..., :samples]`` is ``noise_reverb(x, ...)``
    for ``n_fft >= samples + reverb_response_length(...) - 1``.

    The pre-delay is part of the response (see ``_delay_response``): an integer shift times a 16-tap
    windowed-sinc fractional delay, so its derivative in ``d`` is smooth (a 2-tap interpolation's is not);
    the kernel reaches 7 samples before the nominal delay, so with no pre-delay the wet starts up to 7
    samples early, at the windowed sinc's sidelobe level.

    On the device and in the dtype of ``band_noise``; differentiable in every parameter.

    Args:
        n_fft: transform length.
        samples: length of the audio it will filter.
        others: as :func:`noise_reverb`.

    Returns:
        one channel: ``(batch, 1, n_fft // 2 + 1)`` complex, ``cos(pi/2 m) + W``; several: a
        :class:`~fx.functional.CrossfeedResponse` with ``feed = a = STEREO_CROSSFEED``, ``diagonal``
        ``W_c + cos(pi/2 m) / (1 - a)`` ``(batch, channels, n_fft // 2 + 1)`` and ``common``
        ``-cos(pi/2 m) a / (1 - a)`` ``(batch, 1, 1)`` real, ``W_c`` channel ``c``'s delayed wet response
        (``sin(pi/2 m)`` times its IR): channel ``c`` gets ``cos(pi/2 m) X_c + W_c ((1 - a) X_c + a mean X)``.
    """
    # IR samples beyond the clip length cannot reach the (truncated) output.
    noise = band_noise[..., : min(ir_length, samples)]
    ir = reverb_impulse_response(noise, sample_rate, rt60_s, band_gain_db, norm_length=ir_length)
    dry_gain, wet_gain = _equal_power(mix_pct)
    # the wet gain rides on the pre-delay's 16 taps, the pre-delay on one FFT per item shared by the channels
    delay = _delay_response(predelay_s * sample_rate, wet_gain[:, 0, 0], n_fft, ir.dtype)
    spectrum = rfft(ir, n_fft)
    if ir.shape[1] == 1:
        return torch.addcmul(dry_gain.to(spectrum.dtype), delay, spectrum)
    # out_c = dry X_c + W_c F_c with F_c = (1 - a) X_c + a mean X: the dry path is added to the wet response as
    # dry / (1 - a) (which adds dry X_c + dry a / (1 - a) mean X), the excess taken off through ``common``.
    a = STEREO_CROSSFEED
    w = torch.addcmul((dry_gain / (1.0 - a)).to(spectrum.dtype), delay, spectrum)
    return CrossfeedResponse(w, (-a / (1.0 - a)) * dry_gain, a)
