"""A linear chain (eq, gain, reverb) as an impulse-response WAV for any convolution reverb.

The impulse response is what ``text2fx render`` does to an impulse (the chain's own processing, float64, no
level policy), so convolving audio with it gives the render's output to float rounding:

* **Not normalised**: the levels are text2fx's.  The dry path is in the IR (the reverb's ``cos(pi/2 mix)``
  dry share is the IR's first tap, shaped by the EQ), so load it into the convolver at 100 % wet, 0 % dry;
  wet/dry balance, EQ and gain are all in the file.  Written as 32-bit float WAV, so EQ boosts above 1.0 are
  kept.
* **Length**: until what would follow holds 120 dB less than the IR's energy (so cutting it costs nothing
  audible: an error 120 dB down for white input), and at least until the reverb has decayed by 60 dB (the
  tail ``text2fx render`` keeps); the reverb's noise tail is at most its 8 s plus the pre-delay.
* **Channels** (``channels``): 1: mono, what text2fx does to mono audio.  2 (the default with a reverb):
  left and right, for convolvers that run L->L and R->R (ReaVerb, Space Designer in stereo, pedalboard's
  ``Convolution``): each channel is the response of that output to an impulse on *both* inputs, so a mono or
  centred source (identical channels) and the mid part of any stereo source come out exactly as text2fx
  renders them; what is lost is text2fx's true-stereo cross-feed of the side (L - R) part: in text2fx a
  hard-left source also feeds the right channel's reverb (at -3.5 dB), here it stays on its side.
  4: true stereo, channels in the order L->L, L->R, R->L, R->R (input->output), so
  ``out_L = x_L * h1 + x_R * h3`` and ``out_R = x_L * h2 + x_R * h4``: exact for any stereo input (split it
  into two stereo files, channels 1-2 and 3-4, for convolvers that take true stereo that way).  An EQ/gain
  chain without a reverb treats every channel alike: 1 channel by default.
* **Latency**: the IR starts at the input's time 0, except when the reverb's pre-delay is shorter than 8
  samples and not a whole number of samples: its band-limited fractional delay then reaches up to 7 samples
  ahead of the impulse, and the IR starts that many samples early (`latency` samples; the command prints it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The IR ends where what follows holds this many dB less than its energy; it starts with the first sample
# within this many dB of its peak.
CUT_DB = 120.0
# An effect's response is computed over this many times its 60 dB decay time (see impulse_response).
DECAYS = 2.5


@dataclass(frozen=True)
class ImpulseResponse:
    """`audio` ``(channels, samples)`` float64 at `sample_rate`; `latency`: samples by which it starts before
    the input's time 0 (0 unless a sub-sample reverb pre-delay reaches ahead)."""

    audio: np.ndarray
    sample_rate: int
    latency: int


def default_channels(chain) -> int:
    return 2 if any(e.type_name == "reverb" for e in chain) else 1


def impulse_response(chain, sample_rate: int, channels: int | None = None) -> ImpulseResponse:
    """The impulse response of a linear `chain` (its stored settings) at `sample_rate`.

    Args:
        chain: an `fx.Chain` of linear effects (eq, gain, reverb).
        sample_rate: Hz.
        channels: 1, 2 or 4 (see the module docstring); None: 2 with a reverb, else 1.

    Returns:
        an `ImpulseResponse` with ``(channels, samples)`` float64 audio.
    """
    import torch

    channels = default_channels(chain) if channels is None else int(channels)
    if not chain.linear:
        raise ValueError(f"chain {chain.spec!r} is not linear: it has no impulse response")
    from text2fx.report import settings_at

    unit = settings_at(chain, sample_rate)
    ahead = int(math.ceil(chain.lookahead_seconds * sample_rate))
    # How far each effect's response reaches: its whole support (the reverb's IR plus its pre-delay room, the
    # EQ's 2 s ring-out), or for an effect with a decaying tail DECAYS times its 60 dB decay time (150 dB down,
    # 30 dB below the cut for the noise's crest factor): a prefix of the same IR, computed faster.
    reach = 1
    for effect, params in zip(chain, chain.to_dict()["effects"]):
        full = effect.response_length(sample_rate, 1 << 40)
        decay = effect.output_tail_seconds(sample_rate, params["params"])
        reach += (full if decay <= 0 else min(full, int(math.ceil(DECAYS * decay * sample_rate)) + 32)) - 1
    n = ahead + reach
    if channels == 4:
        x = torch.zeros(2, 2, n, dtype=torch.float64)
        x[0, 0, ahead] = x[1, 1, ahead] = 1.0
    else:
        x = torch.zeros(1, 1 if channels == 1 else 2, n, dtype=torch.float64)
        x[0, :, ahead] = 1.0
    with torch.no_grad():
        y = chain.process(x, sample_rate, unit[None].expand(x.shape[0], -1)).numpy()
    # 4 channels: item k is the response to an impulse on input k -> [L->L, L->R, R->L, R->R]
    h = y.reshape(-1, n)
    peak = float(np.abs(h).max())
    if peak == 0.0:
        return ImpulseResponse(np.zeros((channels, 1)), sample_rate, 0)
    floor = peak * 10.0 ** (-CUT_DB / 20.0)
    loud = np.nonzero((np.abs(h) > floor).any(axis=0))[0]
    start = min(int(loud[0]), ahead)  # the reach ahead of the impulse, when there is any above the floor
    # the end: where what follows holds less than CUT_DB below the IR's energy (an error that far down for
    # white input), and no earlier than the reverb's 60 dB decay (the tail text2fx render keeps)
    energy = np.square(h).sum(axis=0)
    rest = np.cumsum(energy[::-1])[::-1]
    end = int(np.argmax(rest < rest[0] * 10.0 ** (-CUT_DB / 10.0))) or n
    end = min(n, max(end, ahead + chain.tail_samples(sample_rate, unit) + 1))
    return ImpulseResponse(np.ascontiguousarray(h[:, start:end]), sample_rate, ahead - start)


def write(path, ir: ImpulseResponse) -> None:
    """Write `ir` as a 32-bit float WAV, atomically."""
    from text2fx import audio_io

    audio_io.write(path, ir.audio.astype(np.float32), ir.sample_rate, "WAV", "FLOAT")
