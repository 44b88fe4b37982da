"""Test doubles. `SpectralTestEmbedder` stands in for CLAP in fast optimizer tests.

It is NOT a semantic model: audio embeddings are a fixed random projection of log band energies, text
embeddings are fixed random vectors derived from the string. That is enough to give the optimizer a smooth,
reachable target and to test plumbing, but says nothing about what words mean.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F


class SpectralTestEmbedder:
    """Implements `text2fx.embedder.Embedder` cheaply: log band energies -> random projection -> L2 norm."""

    name = "spectral-test-double"
    mixes_to_mono = True  # embed_audio averages the channels

    def __init__(self, sample_rate: int = 16000, window_seconds: float = 1.0, dim: int = 32, bands: int = 32,
                 seed: int = 0, device: str = "cpu"):
        self.sample_rate = sample_rate
        self.window_samples = int(window_seconds * sample_rate)
        self.device = torch.device(device)
        self.dim, self.bands = dim, bands
        g = torch.Generator().manual_seed(seed)
        self.projection = torch.randn(bands, dim, generator=g).to(self.device) / math.sqrt(bands)
        self.text_calls: list[list[str]] = []
        # Tests pin chosen texts to chosen embeddings, e.g. one the optimizer can reach exactly.
        self.text_overrides: dict[str, torch.Tensor] = {}

    def _fit_window(self, audio: torch.Tensor, sample_rate: int, offsets) -> torch.Tensor:
        window = int(round(self.window_samples * sample_rate / self.sample_rate))
        length = audio.shape[-1]
        if length > window:
            offsets = torch.as_tensor([0] * audio.shape[0] if offsets is None else offsets, device=audio.device)
            index = offsets[:, None] + torch.arange(window, device=audio.device)
            return audio.gather(-1, index[:, None, :].expand(-1, audio.shape[1], -1))
        repeats = math.ceil(window / length)
        return audio.repeat(1, 1, repeats)[..., :window]

    def embed_audio(self, audio: torch.Tensor, sample_rate: int, offsets=None) -> torch.Tensor:
        x = self._fit_window(audio.to(self.device), sample_rate, offsets).mean(1)  # (batch, samples)
        spectrum = torch.fft.rfft(x).abs().square()
        freqs = torch.fft.rfftfreq(x.shape[-1], 1.0 / sample_rate).to(self.device)
        # bands up to Nyquist, so every effect parameter has a real (not float-noise) gradient
        edges = torch.logspace(math.log10(20.0), math.log10(0.99 * sample_rate / 2), self.bands + 1)
        band = torch.bucketize(freqs, edges.to(self.device)) - 1
        valid = (band >= 0) & (band < self.bands)
        energies = torch.zeros(x.shape[0], self.bands, device=self.device).index_add(
            1, band[valid], spectrum[:, valid]
        )
        features = torch.log(energies + 1e-6)
        features = features - features.mean(-1, keepdim=True)
        return F.normalize(features @ self.projection, dim=-1)

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        self.text_calls.append(list(texts))
        rows = []
        for t in texts:
            if t in self.text_overrides:
                rows.append(self.text_overrides[t].detach().reshape(-1).cpu())
                continue
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            rows.append(torch.randn(self.dim, generator=torch.Generator().manual_seed(seed)))
        return F.normalize(torch.stack(rows), dim=-1).to(self.device)


class RecordingChain:
    """Wraps an effect chain and records (detached, on the CPU) the unit parameters of every `process` call,
    so tests can see the parameters the optimizer tried at each step."""

    def __init__(self, chain):
        self.chain = chain
        self.calls: list[torch.Tensor] = []

    def __getattr__(self, name):
        if name == "chain":  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        return getattr(self.chain, name)

    def process(self, audio, sample_rate, params_unit, *args, **kwargs):
        self.calls.append(params_unit.detach().cpu().clone())
        out = self.chain.process(audio, sample_rate, params_unit, *args, **kwargs)
        if len(self.calls) - 1 in self.spoiled_calls:
            # a step whose output sounds nothing like anything: its loss is certainly worse than its neighbours'
            out = out + 10.0 * torch.sin(torch.arange(out.shape[-1], device=out.device) * 2.5)
        return out

    # indices of `process` calls whose output is spoiled (see `process`); none by default
    spoiled_calls: frozenset = frozenset()


def spectral_engine(spec, index):
    """An `Engine` over `SpectralTestEmbedder` (16 kHz, 1 s window) for batch workers (`EngineSpec.factory`)."""
    from text2fx.engine import Engine

    return Engine(SpectralTestEmbedder(sample_rate=16000, window_seconds=1.0), max_batch=spec.max_batch)
