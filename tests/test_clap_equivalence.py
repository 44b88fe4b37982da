"""ClapEmbedder computes what laion-clap's own CLAP_Module computes, on the same checkpoint file."""

from __future__ import annotations

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
