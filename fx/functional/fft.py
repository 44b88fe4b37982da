"""FFT helpers: fast transform lengths, a real FFT with a cheaper backward, FFT convolution.

Shapes follow the rest of :mod:`fx.functional`: signals are ``(..., samples)``, usually
``(batch, channels, samples)``.  Everything runs on the device and in the dtype of its
inputs (float32/float64) and is differentiable with respect to every tensor argument.
"""

from __future__ import annotations

import torch
from typing import NamedTuple

from torch import Tensor

__all__ = ["next_fast_len", "rfft", "fft_convolve", "CrossfeedResponse"]


def next_fast_len(n: int) -> int:
    """Smallest integer >= ``n`` whose prime factors are 2, 3 and 5 (fast FFT sizes).

    Pure Python on ints (no tensors); ``n <= 1`` gives 1.
    """
    if n <= 1:
        return 1
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            # smallest power of two lifting p35 to >= n
            q = -(-n // p35)
            cand = p35 * (1 << (q - 1).bit_length())
            best = min(best, cand)
            p35 *= 3
        p5 *= 5
    return best


class _OneSidedRFFT(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, n: int) -> Tensor:
        ctx.length, ctx.n = x.shape[-1], n
        return torch.fft.rfft(x, n=n)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        # The adjoint of the one-sided DFT is Re(sum_k g_k e^{+2 pi i jk/n}). irfft doubles the bins strictly
        # between DC and Nyquist (it assumes the mirrored half), so those are halved first; norm="forward"
        # drops irfft's 1/n.
        n = ctx.n
        interior = torch.ones(grad.shape[-1], 1, dtype=grad.real.dtype, device=grad.device)
        interior[1 : (n + 1) // 2] = 0.5
        # Weighting the real and imaginary parts as real numbers: cheaper on a CPU than complex * real.
        grad = torch.view_as_complex(torch.view_as_real(grad) * interior)
        x_grad = torch.fft.irfft(grad, n=n, norm="forward")
        return x_grad[..., : ctx.length], None


def rfft(x: Tensor, n: int) -> Tensor:
    """``torch.fft.rfft(x, n=n)`` with a cheaper backward.

    PyTorch differentiates ``rfft`` by zero-filling a full two-sided spectrum and running a complex FFT of
    it; here the gradient is one inverse real FFT of the one-sided spectrum: the same values for about half
    the work.  Without ``requires_grad`` this is exactly ``torch.fft.rfft``.  Any device; differentiable
    in ``x`` (first order: the backward itself is not differentiated).

    Args:
        x: ``(..., samples)`` real, ``samples <= n``.
        n: transform length (zero padding).

    Returns:
        ``(..., n // 2 + 1)`` complex.
    """
    if x.shape[-1] > n:
        raise ValueError(f"rfft: {x.shape[-1]} samples do not fit a transform of length {n}")
    if not x.requires_grad:
        return torch.fft.rfft(x, n=n)
    return _OneSidedRFFT.apply(x, n)


def fft_convolve(x: Tensor, ir: Tensor) -> Tensor:
    """Linear convolution by FFT, truncated to the input length.

    Any device; differentiable in ``x`` and ``ir``.

    Args:
        x: ``(batch or 1, channels, samples)``; a batch expanded with stride 0 is
            transformed once.
        ir: ``(batch, channels, ir_length)``.

    Returns:
        ``(batch, channels, samples)``: the first ``samples`` samples of ``x * ir``.
    """
    t = x.shape[-1]
    n_fft = next_fast_len(t + ir.shape[-1] - 1)
    if x.shape[0] > 1 and x.stride(0) == 0:
        x = x[:1]
    return torch.fft.irfft(rfft(x, n_fft) * rfft(ir, n_fft), n=n_fft)[..., :t]


class CrossfeedResponse(NamedTuple):
    """A linear response that mixes channels: for input spectra ``X`` ``(batch or 1, channels, bins)``,
    output channel ``c`` is ``diagonal_c * ((1 - feed) X_c + feed * mean_d X_d) + common * mean_d X_d``.

    What a linear effect returns from ``_frequency_response`` when every output channel hears every input
    channel (the true-stereo reverb).  ``diagonal``: ``(batch, channels, bins)`` complex; ``common``:
    ``(batch, 1, 1)`` or ``(batch, channels, bins)``, real or complex; ``feed``: a Python float.  The
    channel mixes act on the (often batch-1) input, so the only full-size passes are ``diagonal``'s product
    and ``common``'s sum.  Any device; differentiable in every tensor.
    """

    diagonal: Tensor
    common: Tensor
    feed: float = 0.0

    def apply(self, spectrum: Tensor) -> Tensor:
        """``spectrum`` ``(batch or 1, channels, bins)`` -> ``(batch, channels, bins)``."""
        mean = spectrum.mean(dim=1, keepdim=True)
        fed = spectrum if self.feed == 0.0 else (1.0 - self.feed) * spectrum + self.feed * mean
        return torch.addcmul(self.common * mean, self.diagonal, fed)
