"""Differentiable band-limited resampling (windowed sinc, Hann window).

Same algorithm and defaults as `torchaudio.functional.resample` (lowpass_filter_width=6, rolloff=0.99,
"sinc_interp_hann"), which is not a dependency here. The resampler is a polyphase FIR filter applied with
`conv1d`, so gradients flow back to the input waveform.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from text2fx.errors import InputError

# A polyphase kernel has (new/gcd) * (2*width + orig/gcd) taps; past this many the rate pair is too "odd"
# (e.g. 44101 Hz) for this method to be practical, so we refuse instead of allocating gigabytes.
_MAX_KERNEL_TAPS = 50_000_000


def sinc_resample_kernel(
    orig_freq: int,
    new_freq: int,
    *,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, int]:
    """Polyphase Hann-windowed sinc kernel for `orig_freq` Hz -> `new_freq` Hz.

    Returns `(kernel, width)`: `kernel` has shape `(new/gcd, 1, 2*width + orig/gcd)` and `width` is the
    number of zero samples to pad on the left (input samples at the reduced rate).
    """
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    # Anti-aliasing: the cutoff sits just below the Nyquist frequency of the lower of the two rates.
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    if new * (2 * width + orig) > _MAX_KERNEL_TAPS:
        raise InputError(
            f"cannot resample {orig_freq} Hz -> {new_freq} Hz: the rates share no usable common factor; "
            "convert the audio to a standard sample rate (e.g. 44100 or 48000 Hz) first"
        )
    # Computed in float64 (as torchaudio does when no dtype is forced) and cast once.
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    t = (t * base_freq).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = kernel * window * (base_freq / orig)
    return kernel.to(device=device, dtype=dtype), width


class Resampler:
    """Resamples batches of waveforms to a fixed target rate, caching one kernel per (rate, device, dtype).

    Kept as an object (owned by e.g. `ClapEmbedder`) so the kernel cache is not global state.
    """

    def __init__(self, target_rate: int) -> None:
        self.target_rate = int(target_rate)
        self._kernels: dict[tuple[int, torch.device, torch.dtype], tuple[torch.Tensor, int]] = {}

    def _kernel(self, orig_freq: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
        key = (orig_freq, device, dtype)
        if key not in self._kernels:
            self._kernels[key] = sinc_resample_kernel(orig_freq, self.target_rate, dtype=dtype, device=device)
        return self._kernels[key]

    def __call__(self, waveform: torch.Tensor, orig_freq: int) -> torch.Tensor:
        """Resample `(..., samples)` at `orig_freq` Hz to `(..., ceil(samples * target / orig))` at the target rate."""
        if orig_freq <= 0:
            raise InputError(f"sample rate must be a positive integer, got {orig_freq}")
        if orig_freq == self.target_rate:
            return waveform
        kernel, width = self._kernel(int(orig_freq), waveform.device, waveform.dtype)
        gcd = math.gcd(int(orig_freq), self.target_rate)
        orig, new = int(orig_freq) // gcd, self.target_rate // gcd
        shape = waveform.shape
        length = shape[-1]
        flat = waveform.reshape(-1, 1, length)
        flat = F.pad(flat, (width, width + orig))
        # Each output channel of the conv is one polyphase branch; interleaving them gives the output signal.
        out = F.conv1d(flat, kernel, stride=orig)
        out = out.transpose(1, 2).reshape(flat.shape[0], -1)
        target_length = -(-new * length // orig)
        return out[:, :target_length].reshape(*shape[:-1], target_length)
