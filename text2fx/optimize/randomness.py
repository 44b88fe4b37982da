"""Everything random about a run, drawn up front on the CPU: starting points and per-step time shifts.

Drawing on the CPU from a stream of its own per target keeps a CPU run bit-reproducible for a seed and a
target's result independent of what else shares its batch.
"""

from __future__ import annotations

import numpy as np
import torch

from text2fx.recipe import Recipe

# Neutral settings can sit on the edge of a range (a dry reverb has mix 0 %), where sigmoid(z) would need
# z = -inf; start just inside so the parameter can still move.
_NEUTRAL_MARGIN = 0.02


def shifted(clips: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Circularly shift each clip in time: `out[b, :, t] = clips[b, :, (t - shifts[b]) mod T]`.

    Args:
        clips: `(batch, channels, samples)`.
        shifts: `(batch,)` integer shifts in samples.
    """
    batch, channels, length = clips.shape
    index = (torch.arange(length, device=clips.device) - shifts[:, None]) % length
    return clips.gather(-1, index[:, None, :].expand(batch, channels, length))


def initial_logits(
    neutral_unit: torch.Tensor, count: int, init: str, generator: torch.Generator
) -> torch.Tensor:
    """`(count, P)` starting points in the unconstrained space (drawn on the CPU for reproducibility)."""
    z = torch.randn(count, neutral_unit.numel(), generator=generator)
    if init == "neutral":
        z[0] = torch.logit(neutral_unit.detach().cpu().float().clamp(_NEUTRAL_MARGIN, 1 - _NEUTRAL_MARGIN))
    return z


def start_logits(start: torch.Tensor, z: torch.Tensor, restarts: int) -> torch.Tensor:
    """Starting logits around previous settings `start` `(P,)` (refining a turn, see `text2fx.turns`): the
    first restart of each loss kind (every `restarts`-th row) at `start` itself, the others at `start` plus
    `START_SPREAD` times the standard normal draws `z` `(candidates, P)`. Parameters at the very edge of their
    range start `_NEUTRAL_MARGIN` inside it, where they can still move."""
    from text2fx.turns import START_SPREAD

    centre = torch.logit(start.detach().cpu().float().clamp(_NEUTRAL_MARGIN, 1 - _NEUTRAL_MARGIN))
    out = centre + START_SPREAD * z
    out[::restarts] = centre
    return out


def draw_randomness(
    neutral_unit: torch.Tensor, candidates: int, clips: int, length: int, recipe: Recipe, seed: int, key: int = 0,
    start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Everything random about one target, drawn up front on the CPU from `(seed, key)`: starting logits
    `(candidates, P)` and, with time shifts, the shift of every clip at every step `(steps, clips)`.
    With `start` (`(P,)` unit settings), the logits are around it (`start_logits`).

    Each target draws from its own stream, so its result does not depend on what else shares the batch.
    """
    words = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, key & 0xFFFFFFFFFFFFFFFF]).generate_state(2)
    generator = torch.Generator().manual_seed((int(words[0]) << 31) ^ int(words[1]))
    z = initial_logits(neutral_unit, candidates, recipe.init, generator)
    if start is not None:
        z = start_logits(start, z, recipe.restarts)
    shifts = torch.randint(0, length, (recipe.steps, clips), generator=generator) if recipe.time_shift else None
    return z, shifts


def draw_batch(
    neutral_unit: torch.Tensor, keys, k: int, n_exc: int, length: int, recipe: Recipe, seed: int,
    device: torch.device, start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`draw_randomness` for every target (one key each), laid out as the batch: starting logits
    `(N * K, P)` target-major and shifts `(steps, N * K * E)` (None without time shifts), on `device`."""
    draws = [draw_randomness(neutral_unit, k, k * n_exc, length, recipe, seed, key, start) for key in keys]
    z0 = torch.cat([d[0] for d in draws]).to(device)
    shifts = torch.cat([d[1] for d in draws], dim=1).to(device) if recipe.time_shift else None
    return z0, shifts
