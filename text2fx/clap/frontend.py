"""Faster, equivalent replacements for two front-end steps of laion-clap's HTSAT audio encoder.

HTSAT turns a waveform into an image for its Swin transformer in three steps this module cares about:
torchlibrosa's STFT, written as two `Conv1d`s whose weights are the windowed DFT matrix; a bicubic
`F.interpolate` that stretches the 1001 spectrogram frames to 1024 rows; and a reshape. Both replacements
compute the same function to float rounding (`tests/test_clap_equivalence.py` compares against laion-clap):

- the STFT by `torch.stft` (an FFT: some 40-80x fewer operations than the direct DFT, forward and backward,
  and in float32 a 30x smaller error in the gradient to the waveform);
- the bicubic stretch as one matrix product with its `(1024, 1001)` interpolation matrix, built once by
  running the very same `F.interpolate` on an identity matrix. Its backward is a matrix product too, where
  `F.interpolate`'s CUDA backward accumulates with atomic adds, in an order that varies from run to run.

Together they shorten CLAP's forward+backward pass as the optimizer runs it, replayed as a CUDA graph, at small
and large batches alike (measurements in `benchmarks/RESULTS.md`).

Each replacement is installed only where the model's own settings and weights show it is exact; otherwise the
original step stays.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F


def install_fast_frontend(audio_branch: torch.nn.Module) -> list[str]:
    """Swap the replacements into an HTSAT `audio_branch` (in place). Returns the names of those installed."""
    installed = []
    if _install_fft_spectrogram(audio_branch):
        installed.append("fft_spectrogram")
    if _install_matrix_stretch(audio_branch):
        installed.append("matrix_stretch")
    return installed


def _hann_dft_weights(n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torchlibrosa's STFT kernels `(n_fft // 2 + 1, 1, n_fft)`: periodic Hann window times the DFT, float64."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    angle = 2 * math.pi * torch.outer(k, n).remainder(n_fft) / n_fft
    return (torch.cos(angle) * window)[:, None, :], (-torch.sin(angle) * window)[:, None, :]


def _install_fft_spectrogram(audio_branch: torch.nn.Module) -> bool:
    spectrogram = getattr(audio_branch, "spectrogram_extractor", None)
    stft = getattr(spectrogram, "stft", None)
    if stft is None or getattr(spectrogram, "power", None) != 2.0:
        return False
    real, imag = getattr(stft, "conv_real", None), getattr(stft, "conv_imag", None)
    if not isinstance(real, torch.nn.Conv1d) or not isinstance(imag, torch.nn.Conv1d):
        return False
    n_fft, hop = stft.n_fft, stft.hop_length
    if stft.win_length != n_fft or real.stride != (hop,) or real.padding != (0,) or real.bias is not None:
        return False
    if stft.pad_mode not in ("reflect", "constant"):
        return False
    want_real, want_imag = _hann_dft_weights(n_fft)
    if real.weight.shape != want_real.shape or imag.weight.shape != want_imag.shape:
        return False
    # The checkpoint carries these kernels; use the FFT only if they are the plain Hann-windowed DFT.
    if not (torch.allclose(real.weight.detach().double().cpu(), want_real, atol=1e-6)
            and torch.allclose(imag.weight.detach().double().cpu(), want_imag, atol=1e-6)):
        return False
    center, pad_mode = bool(stft.center), stft.pad_mode
    windows: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        # (batch, samples) -> power spectrogram (batch, 1, frames, n_fft // 2 + 1), as torchlibrosa's.
        key = (waveform.device, waveform.dtype)
        if key not in windows:
            windows[key] = torch.hann_window(n_fft, periodic=True, dtype=waveform.dtype, device=waveform.device)
        spec = torch.stft(waveform, n_fft, hop_length=hop, window=windows[key], center=center, pad_mode=pad_mode,
                          return_complex=True)
        return torch.view_as_real(spec).square().sum(-1).transpose(1, 2)[:, None]

    spectrogram.forward = types.MethodType(forward, spectrogram)
    return True


def _install_matrix_stretch(audio_branch: torch.nn.Module) -> bool:
    original = getattr(audio_branch, "reshape_wav2img", None)
    spec_size, freq_ratio = getattr(audio_branch, "spec_size", None), getattr(audio_branch, "freq_ratio", None)
    if original is None or not isinstance(spec_size, int) or not isinstance(freq_ratio, int):
        return False
    target_t, target_f = spec_size * freq_ratio, spec_size // freq_ratio
    matrices: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def stretch_matrix(frames: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (frames, device, dtype)
        if key not in matrices:
            # The interpolation is linear in its input, so interpolating the identity gives its matrix:
            # the same kernel, border handling and align_corners as the call it replaces.
            eye = torch.eye(frames, dtype=torch.float64)[None, None]
            matrix = F.interpolate(eye, (target_t, frames), mode="bicubic", align_corners=True)[0, 0]
            matrices[key] = matrix.to(device=device, dtype=dtype)
        return matrices[key]

    def reshape_wav2img(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, 1, frames, mel_bins) -> HTSAT's (batch, 1, spec_size, spec_size) image.
        frames, bins = x.shape[2], x.shape[3]
        if not (frames < target_t and bins == target_f):
            return original(x)  # shapes the released models never produce: laion-clap's own code
        x = torch.matmul(stretch_matrix(frames, x.device, x.dtype), x)
        return original(x)  # now exactly target_t frames: only laion-clap's reshape remains

    audio_branch.reshape_wav2img = types.MethodType(reshape_wav2img, audio_branch)
    return True
