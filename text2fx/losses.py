"""The two Text2FX objectives, on L2-normalized CLAP embeddings.

Both return one loss per batch item, in [0, 2]; lower is better.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("cosine", "directional")


def cosine_loss(audio_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """`1 - cos(E_a(fx(x)), E_t(prompt))`.

    Args:
        audio_emb: `(batch, dim)` embeddings of the processed audio.
        text_emb: `(batch, dim)` or `(1, dim)` embeddings of the target text.

    Returns:
        `(batch,)` losses.
    """
    return 1.0 - F.cosine_similarity(audio_emb, text_emb, dim=-1)


def directional_loss(
    audio_emb: torch.Tensor, input_emb: torch.Tensor, text_emb: torch.Tensor, anchor_emb: torch.Tensor
) -> torch.Tensor:
    """`1 - cos(E_a(fx(x)) - E_a(x), E_t(prompt) - E_t(anchor))`.

    The change the effects make to the audio embedding should point the same way as the change from the
    anchor text to the target text.

    Args:
        audio_emb: `(batch, dim)` embeddings of the processed audio.
        input_emb: `(batch, dim)` embeddings of the unprocessed audio.
        text_emb, anchor_emb: `(batch, dim)` or `(1, dim)` target and anchor text embeddings.

    Returns:
        `(batch,)` losses. When the effects change nothing (`audio_emb == input_emb`) the direction is
        undefined; the loss is then 1 (cosine of a zero vector taken as 0), with a finite gradient.
    """
    return 1.0 - F.cosine_similarity(audio_emb - input_emb, text_emb - anchor_emb, dim=-1)
