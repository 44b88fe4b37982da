"""ClapEmbedder computes what laion-clap's own CLAP_Module computes, on the same checkpoint file."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

ATOL = 1e-4
MIN_COSINE = 0.99999


@pytest.fixture(scope="module")
def laion_clap_module(clap_checkpoint: Path, clap_tokenizer_dir: Path):
    """laion_clap.CLAP_Module (HTSAT-tiny, non-fusion) with `load_ckpt` of the test checkpoint.

    Its Hugging Face look-ups are patched to local objects before `import laion_clap`, whose import-time
    tokenizer loads would otherwise hit the network.
    """
    from text2fx.testing import laion_reference_module

    return laion_reference_module(clap_checkpoint, clap_tokenizer_dir, device="cpu")


@pytest.fixture(scope="module")
def reference_frontend_embedder(clap_checkpoint: Path, clap_tokenizer_dir: Path):
    from text2fx.clap import ClapEmbedder

    return ClapEmbedder(clap_checkpoint, clap_tokenizer_dir, device="cpu", reference_frontend=True)


def _assert_close(ours: torch.Tensor, reference: torch.Tensor) -> None:
    reference = torch.as_tensor(reference)
    assert ours.shape == reference.shape
    err = (ours - reference).abs().max().item()
    cosine = torch.nn.functional.cosine_similarity(ours, reference, dim=-1).min().item()
    print(f"max abs error {err:.2e}, min cosine {cosine:.8f}")
    assert err < ATOL and cosine > MIN_COSINE


@pytest.mark.parametrize("seconds", [3.0, 10.0, 12.5], ids=["shorter", "equal", "longer"])
def test_audio_embedding_matches_laion_clap(clap_embedder, laion_clap_module, seconds: float) -> None:
    n = int(seconds * 48000)
    generator = torch.Generator().manual_seed(int(seconds * 10))
    t = torch.arange(n) / 48000
    audio = 0.3 * torch.randn(2, n, generator=generator) + 0.5 * torch.sin(2 * torch.pi * 440 * t)
    audio = audio.clamp(-1, 1)

    # laion-clap crops longer audio at np.random.randint(0, overflow + 1) per item: draw the same offsets.
    overflow = n - clap_embedder.window_samples
    np.random.seed(1234)
    offsets = [np.random.randint(0, overflow + 1) for _ in range(2)] if overflow > 0 else None
    if offsets is not None:
        assert any(o > 0 for o in offsets)

    # The comparison below covers the FFT spectrogram and matrix stretch, not laion-clap's code run by us.
    assert clap_embedder.frontend == ["fft_spectrogram", "matrix_stretch"]
    with torch.no_grad():
        np.random.seed(1234)
        ref_float = laion_clap_module.get_audio_embedding_from_data(audio, use_tensor=True)
        ours_float = clap_embedder.embed_audio(audio[:, None, :], 48000, offsets)
        # The numpy path of laion-clap quantizes to int16 first.
        np.random.seed(1234)
        ref_quant = laion_clap_module.get_audio_embedding_from_data(audio.numpy(), use_tensor=False)
        ours_quant = clap_embedder.embed_audio(audio[:, None, :], 48000, offsets, quantize=True)
    _assert_close(ours_float, ref_float)
    _assert_close(ours_quant, ref_quant)
    if offsets is not None:
        # The crop position matters, so matching laion-clap above means we cropped where it did.
        with torch.no_grad():
            at_start = clap_embedder.embed_audio(audio[:, None, :], 48000)
        assert torch.nn.functional.cosine_similarity(at_start, ours_float, dim=-1).max() < MIN_COSINE


def test_text_embedding_matches_laion_clap(clap_embedder, laion_clap_module) -> None:
    texts = ["warm", "make it sound like an old telephone", "bright, airy vocals with a long reverb tail", "écho"]
    with torch.no_grad():
        reference = laion_clap_module.get_text_embedding(texts, use_tensor=True)
        single_reference = laion_clap_module.get_text_embedding(texts[1:2], use_tensor=True)
    _assert_close(clap_embedder.embed_text(texts), reference)
    _assert_close(clap_embedder.embed_text(texts[1:2]), single_reference)


def test_reference_frontend_is_laion_clap_bit_for_bit(reference_frontend_embedder, laion_clap_module) -> None:
    audio = 0.3 * torch.randn(2, 5 * 48000, generator=torch.Generator().manual_seed(5))
    assert reference_frontend_embedder.frontend == []
    with torch.no_grad():
        reference = laion_clap_module.get_audio_embedding_from_data(audio, use_tensor=True)
        ours = reference_frontend_embedder.embed_audio(audio[:, None, :], 48000)
    assert torch.equal(ours, reference)


def test_fast_frontend_gradient_is_closer_to_float64(clap_embedder, reference_frontend_embedder) -> None:
    """The gradient the optimizer follows: the FFT front end's is more accurate than laion-clap's direct DFT."""
    audio = 0.1 * torch.randn(1, 2, 48000 * 10, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def gradient(embedder, dtype):
        x = audio.to(dtype).requires_grad_(True)
        wave = embedder.model_input(x, 48000).to(dtype)
        branch = embedder.model.audio_branch({"waveform": wave, "longer": torch.zeros(1, dtype=torch.bool)})
        emb = torch.nn.functional.normalize(embedder.model.audio_projection(branch["embedding"]), dim=-1)
        (grad,) = torch.autograd.grad(emb[:, :16].sum(), x)
        return grad.double()

    exact = copy.deepcopy(reference_frontend_embedder)
    exact.model.double()
    want = gradient(exact, torch.float64)
    error = {e: ((gradient(e, torch.float32) - want).norm() / want.norm()).item()
             for e in (clap_embedder, reference_frontend_embedder)}
    print(f"relative gradient error: fast {error[clap_embedder]:.1e}, laion-clap {error[reference_frontend_embedder]:.1e}")
    assert error[clap_embedder] < 1e-5
    assert error[clap_embedder] < error[reference_frontend_embedder]
