"""The FFT spectrogram and the matrix time stretch compute what laion-clap's HTSAT front end computes, and stay
out where they would not."""

from __future__ import annotations

import pytest
import torch
from torchlibrosa.stft import Spectrogram

from text2fx.clap import clap_module
from text2fx.clap.frontend import install_fast_frontend


class _Branch(torch.nn.Module):
    """The parts of an HTSAT audio branch the front end touches, at toy sizes."""

    def __init__(self, spectrogram: torch.nn.Module | None = None, spec_size: int = 16, freq_ratio: int = 2):
        super().__init__()
        if spectrogram is not None:
            self.spectrogram_extractor = spectrogram
        self.spec_size, self.freq_ratio = spec_size, freq_ratio

    # laion-clap's own method, unchanged
    reshape_wav2img = clap_module().htsat.HTSAT_Swin_Transformer.reshape_wav2img


def _spectrogram(**kwargs) -> Spectrogram:
    settings = dict(n_fft=64, hop_length=16, win_length=64, window="hann", center=True, pad_mode="reflect",
                    freeze_parameters=True)
    return Spectrogram(**{**settings, **kwargs})


def _value_and_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y = fn(x)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    (grad,) = torch.autograd.grad((y * weights).sum(), x)
    return y.detach(), grad


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize("samples", [1000, 1024, 333])
def test_fft_spectrogram_matches_torchlibrosa(pad_mode, samples):
    branch = _Branch(_spectrogram(pad_mode=pad_mode))
    x = torch.randn(3, samples, generator=torch.Generator().manual_seed(0))
    want, want_grad = _value_and_grad(branch.spectrogram_extractor, x)
    assert "fft_spectrogram" in install_fast_frontend(branch)
    got, got_grad = _value_and_grad(branch.spectrogram_extractor, x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max())
    assert torch.allclose(got_grad, want_grad, rtol=1e-4, atol=1e-4 * want_grad.abs().max())


@pytest.mark.parametrize("change", ["weights", "window", "power"])
def test_fft_spectrogram_stays_out_unless_exact(change):
    spectrogram = _spectrogram(window="hamming") if change == "window" else _spectrogram()
    if change == "weights":
        with torch.no_grad():
            spectrogram.stft.conv_real.weight[3, 0, 5] += 1e-3
    if change == "power":
        spectrogram.power = 1.0
    branch = _Branch(spectrogram)
    x = torch.randn(2, 500, generator=torch.Generator().manual_seed(0))
    before = branch.spectrogram_extractor(x)
    assert "fft_spectrogram" not in install_fast_frontend(branch)
    assert torch.equal(branch.spectrogram_extractor(x), before)


@pytest.mark.parametrize("frames", [27, 31])
def test_matrix_stretch_matches_bicubic_interpolation(frames):
    branch = _Branch()  # target: 32 frames x 8 bins
    x = torch.randn(2, 1, frames, 8, generator=torch.Generator().manual_seed(frames))
    want, want_grad = _value_and_grad(branch.reshape_wav2img, x)
    assert install_fast_frontend(branch) == ["matrix_stretch"]
    got, got_grad = _value_and_grad(branch.reshape_wav2img, x)
    assert got.shape == want.shape == (2, 1, 16, 16)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(got_grad, want_grad, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 1, 32, 8), (2, 1, 27, 6)], ids=["no stretch", "bins stretched too"])
def test_matrix_stretch_leaves_other_shapes_to_laion_clap(shape):
    branch = _Branch()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    want = branch.reshape_wav2img(x)
    install_fast_frontend(branch)
    assert torch.equal(branch.reshape_wav2img(x), want)
