"""Which candidate optimizes what: the batch layout, and the per-candidate objective.

A target is an input paired with a text. Each target has `K` candidates: its restarts, and for loss "best"
the cosine restarts followed by the directional ones. Candidates are numbered target-major
(`c = target * K + j`), and every candidate owns `E` consecutive clips of the batch (its input's excerpts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from text2fx.losses import UNCHANGED_DIRECTIONAL_LOSS, cosine_loss, directional_loss


def candidate_kinds(loss: str, restarts: int) -> tuple[str, ...]:
    """The loss each of a target's candidates optimizes, in candidate order."""
    if loss == "best":
        return ("cosine",) * restarts + ("directional",) * restarts
    return (loss,) * restarts


@dataclass(frozen=True)
class Layout:
    """The batch's layout. `C = N * K` candidates, `C * E` clips.

    Attributes:
        n_targets: `N`.
        n_excerpts: `E`.
        kinds: `(K,)` loss kind ("cosine" / "directional") of each of a target's candidates.
        target: `(C,)` target of each candidate.
        input: `(C,)` input (index into the excerpts' first dimension) of each candidate.
        directional: `(C,)` whether each candidate optimizes the directional loss.
        rows: `(C * E,)` row of `excerpts.flatten(0, 1)` for every clip of the batch, candidate-major.
    """

    n_targets: int
    n_excerpts: int
    kinds: tuple[str, ...]
    target: torch.Tensor
    input: torch.Tensor
    directional: torch.Tensor
    rows: torch.Tensor

    @classmethod
    def build(cls, input_index: Sequence[int], loss: str, restarts: int, n_excerpts: int,
              device: torch.device) -> "Layout":
        n_targets = len(input_index)
        kinds = candidate_kinds(loss, restarts)
        k = len(kinds)
        target = torch.arange(n_targets, device=device).repeat_interleave(k)
        directional = torch.tensor([kind == "directional" for kind in kinds], device=device).repeat(n_targets)
        inputs = torch.as_tensor(list(input_index), device=device, dtype=torch.long)[target]
        rows = (inputs[:, None] * n_excerpts + torch.arange(n_excerpts, device=device)).reshape(-1)
        return cls(n_targets, n_excerpts, kinds, target, inputs, directional, rows)

    @property
    def k(self) -> int:
        """Candidates per target."""
        return len(self.kinds)

    @property
    def n_candidates(self) -> int:
        return self.n_targets * self.k

    @property
    def mixed(self) -> bool:
        """Whether a target's candidates optimize different losses (loss "best")."""
        return len(set(self.kinds)) > 1


class Objective:
    """Both losses of every candidate, averaged over its excerpts (computed by `text2fx.losses`).

    Args:
        layout: the batch layout.
        input_emb: `(inputs, E, D)` embeddings of the unprocessed excerpts.
        text_emb, anchor_emb: `(N, D)` embeddings of each target's text and anchor text.
    """

    def __init__(self, layout: Layout, input_emb: torch.Tensor, text_emb: torch.Tensor, anchor_emb: torch.Tensor):
        device = input_emb.device
        self.layout = layout
        self.input_emb = input_emb[layout.input]  # (C, E, D)
        self.text = text_emb.to(device)[layout.target][:, None, :]  # (C, 1, D)
        self.anchor = anchor_emb.to(device)[layout.target][:, None, :]

    def losses(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(C * E, D)` embeddings of the processed batch -> `(C,)` cosine and `(C,)` directional losses."""
        emb = emb.view(self.layout.n_candidates, self.layout.n_excerpts, -1)
        cos = cosine_loss(emb, self.text).mean(1)
        direction = directional_loss(emb, self.input_emb, self.text, self.anchor).mean(1)
        return cos, direction

    def unchanged(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The same two `(C,)` losses for the unprocessed input (the bypass): the cosine loss of the input's
        own embedding, and exactly `UNCHANGED_DIRECTIONAL_LOSS` (no change has no direction)."""
        cos = cosine_loss(self.input_emb, self.text).mean(1)
        return cos, torch.full_like(cos, UNCHANGED_DIRECTIONAL_LOSS)

    def own(self, cos: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        """Each candidate's own objective: `(C,)` picked from the two losses by its kind."""
        return torch.where(self.layout.directional, direction, cos)
