"""The interface the optimizer needs from an audio-text embedding model.

`text2fx.clap.ClapEmbedder` is the real implementation; tests use a small stand-in with the same shape.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class Embedder(Protocol):
    """A frozen joint audio-text embedding model.

    Attributes:
        name: identifies the model weights (e.g. the checkpoint file name), recorded in reports.
        sample_rate: the rate (Hz) the model's audio branch works at.
        window_samples: how many samples (at `sample_rate`) the audio branch sees per embedding.
        device: where the model lives; inputs are moved there.

    An embedder may also set `graph_safe = True` when `embed_audio` (without offsets) can be recorded in a
    CUDA graph: the same kernels for the same shapes, no reads back to the host. The optimizer then replays
    its steps as a graph on CUDA. Optional; absent means False.

    It may also set `mixes_to_mono = True` when `embed_audio` hears only the mean of the channels. The
    optimizer then asks the chain for that mean directly (`chain.process(..., mono=True)`), which a linear
    chain computes with one inverse FFT per clip instead of one per channel. Optional; absent means False.

    `precision` (optional, default "float32") names the numeric precision of `embed_audio`; reports record it.
    """

    name: str
    sample_rate: int
    window_samples: int
    device: torch.device

    def embed_audio(
        self, audio: torch.Tensor, sample_rate: int, offsets: Sequence[int] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Embed audio `(batch, channels, samples)` at `sample_rate` Hz -> `(batch, dim)`, L2-normalized.

        Differentiable with respect to `audio`. Audio longer than the model's window is cropped at `offsets`
        (samples at `sample_rate`, one per batch item; default 0), shorter audio is repeat-padded.
        """
        ...

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed strings -> `(len(texts), dim)`, L2-normalized, without gradient."""
        ...
