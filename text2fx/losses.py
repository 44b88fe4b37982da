"""The two Text2FX objectives, on L2-normalized CLAP embeddings.

Both take embeddings of shape `(..., dim)` whose leading dimensions broadcast against each other (e.g.
`(candidates, excerpts, dim)` processed audio against `(candidates, 1, dim)` texts) and return one loss per
broadcast item, shape `(...)`, in [0, 2]; lower is better. The optimizer averages them over excerpts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("cosine", "directional")

# The directional loss of leaving the audio unchanged: the change is the zero vector, whose cosine with any
# direction is taken as 0 (see `directional_loss`).
UNCHANGED_DIRECTIONAL_LOSS = 1.0


def cosine_loss(audio_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """`1 - cos(E_a(fx(x)), E_t(prompt))`.

    Args:
        audio_emb: `(..., dim)` embeddings of the processed audio.
        text_emb: `(..., dim)` embeddings of the target text, broadcastable against `audio_emb`
            (e.g. `(1, dim)` for one text).

    Returns:
        `(...)` losses: the broadcast shape without `dim`.
    """
    return 1.0 - F.cosine_similarity(audio_emb, text_emb, dim=-1)


def directional_loss(
    audio_emb: torch.Tensor, input_emb: torch.Tensor, text_emb: torch.Tensor, anchor_emb: torch.Tensor
) -> torch.Tensor:
    """`1 - cos(E_a(fx(x)) - E_a(x), E_t(prompt) - E_t(anchor))`.

    The change the effects make to the audio embedding should point the same way as the change from the
    anchor text to the target text.

    Args:
        audio_emb: `(..., dim)` embeddings of the processed audio.
        input_emb: `(..., dim)` embeddings of the unprocessed audio.
        text_emb, anchor_emb: `(..., dim)` target and anchor text embeddings. All four broadcast together.

    Returns:
        `(...)` losses. When the effects change nothing (`audio_emb == input_emb`) the direction is
        undefined; the loss is then `UNCHANGED_DIRECTIONAL_LOSS` (1: cosine of a zero vector taken as 0), with
        a finite gradient.
    """
    return 1.0 - F.cosine_similarity(audio_emb - input_emb, text_emb - anchor_emb, dim=-1)


def avoid_loss(audio_emb: torch.Tensor, avoid_emb: torch.Tensor) -> torch.Tensor:
    """`mean_i cos(E_a(fx(x)), E_t(avoid_i))`: how much the audio sounds like texts to avoid.

    Added (weighted) to a loss it pushes the audio's embedding away from the avoided texts wherever it is; no
    hinge at 0: with CLAP, audio-text cosines sit near or above 0 and a hinge there would silence the push
    exactly where the texts are hard to tell apart. The penalty, and so the loss, may be negative.

    Args:
        audio_emb: `(..., dim)` embeddings of the processed audio.
        avoid_emb: `(A, dim)` embeddings of the texts to avoid.

    Returns:
        `(...)` penalties in [-1, 1].
    """
    return F.cosine_similarity(audio_emb[..., None, :], avoid_emb, dim=-1).mean(-1)
