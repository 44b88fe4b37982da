"""Which candidate optimizes what: the batch layout, and the per-candidate objective.

A target is an input paired with a text. Each target has `K` candidates: its restarts, and for loss "best"
the cosine restarts followed by the directional ones. Candidates are numbered target-major
(`c = target * K + j`), and every candidate owns `E` consecutive clips of the batch (its input's excerpts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from text2fx.losses import UNCHANGED_DIRECTIONAL_LOSS, avoid_loss, cosine_loss, directional_loss


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
        targets: instead of `text_emb` / `anchor_emb`, a `text2fx.targets.Targets`: a prompt and/or a reference
            recording (combined with its `like_weight`) and texts to avoid (a penalty added to both losses; see
            there for the formulas). Without a reference and words to avoid, the losses are the text's alone.
    """

    def __init__(self, layout: Layout, input_emb: torch.Tensor, text_emb: torch.Tensor | None,
                 anchor_emb: torch.Tensor | None, targets=None):
        device = input_emb.device
        self.layout = layout
        self.input_emb = input_emb[layout.input]  # (C, E, D)
        if targets is None:
            from text2fx.targets import Targets

            targets = Targets(text=text_emb, anchor=anchor_emb)
        per_candidate = lambda t: None if t is None else t.to(device)[layout.target][:, None, :]  # noqa: E731
        self.text = per_candidate(targets.text)  # (C, 1, D)
        self.anchor = per_candidate(targets.anchor)
        self.reference = per_candidate(targets.reference)
        self.like_weight = targets.like_weight
        self.avoid = None if targets.avoid is None else targets.avoid.to(device)  # (A, D)
        self.avoid_weight = targets.avoid_weight

    def _mix(self, text_term, reference_term) -> torch.Tensor:
        """The text's and the reference's terms weighted (each computed only when it has weight)."""
        if self.reference is None:
            return text_term()
        if self.text is None:
            return reference_term()
        return (1.0 - self.like_weight) * text_term() + self.like_weight * reference_term()

    def _cosine(self, emb: torch.Tensor) -> torch.Tensor:
        return self._mix(lambda: cosine_loss(emb, self.text), lambda: cosine_loss(emb, self.reference)).mean(1)

    def _penalty(self, emb: torch.Tensor) -> torch.Tensor | None:
        """`(C,)` the avoid penalty (mean over excerpts), or None without words to avoid."""
        if self.avoid is None:
            return None
        return self.avoid_weight * avoid_loss(emb, self.avoid).mean(1)

    def losses(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(C * E, D)` embeddings of the processed batch -> `(C,)` cosine and `(C,)` directional losses (each
        with the avoid penalty, when there are words to avoid)."""
        emb = emb.view(self.layout.n_candidates, self.layout.n_excerpts, -1)
        cos = self._cosine(emb)
        # with a reference, the direction is from the input's embedding to the reference's
        direction = self._mix(lambda: directional_loss(emb, self.input_emb, self.text, self.anchor),
                              lambda: directional_loss(emb, self.input_emb, self.reference, self.input_emb)).mean(1)
        penalty = self._penalty(emb)
        if penalty is not None:
            cos, direction = cos + penalty, direction + penalty
        return cos, direction

    def similarity(self, emb: torch.Tensor) -> torch.Tensor:
        """`(C * E, D)` processed embeddings -> `(C,)` similarity to the target (the text; with a reference the
        weighted mean of the cosines to both), mean over excerpts, without the avoid penalty."""
        return 1.0 - self._cosine(emb.view(self.layout.n_candidates, self.layout.n_excerpts, -1))

    def similarity_unchanged(self) -> torch.Tensor:
        """`(C,)` the same similarity for the unprocessed input."""
        return 1.0 - self._cosine(self.input_emb)

    def unchanged(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The same two `(C,)` losses for the unprocessed input (the bypass): the cosine loss of the input's
        own embedding, and exactly `UNCHANGED_DIRECTIONAL_LOSS` (no change has no direction); each plus the
        input's own avoid penalty, when there are words to avoid."""
        cos = self._cosine(self.input_emb)
        direction = torch.full_like(cos, UNCHANGED_DIRECTIONAL_LOSS)
        penalty = self._penalty(self.input_emb)
        if penalty is not None:
            cos, direction = cos + penalty, direction + penalty
        return cos, direction

    def own(self, cos: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        """Each candidate's own objective: `(C,)` picked from the two losses by its kind."""
        return torch.where(self.layout.directional, direction, cos)
