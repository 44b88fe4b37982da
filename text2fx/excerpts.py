"""Choosing which windows of a long input the optimizer listens to.

The embedder hears a fixed window (10 s for CLAP). For longer inputs the optimizer averages its loss over a
few windows, chosen deterministically: the loudest ones that do not overlap, so that silence and fades are
not what the effects get tuned on.
"""

from __future__ import annotations

import math

import numpy as np

_QUIET_RATIO = 1e-4  # -40 dB in energy


def choose_offsets(frames: int, window: int, energies: np.ndarray, block: int, count: int) -> list[int]:
    """Start frames of up to `count` non-overlapping windows of `window` frames, loudest first picked.

    Args:
        frames: input length in frames.
        window: window length in frames.
        energies: energy of consecutive `block`-frame blocks of the input (last may be partial).
        block: block length in frames; candidate windows start every half window, on block boundaries,
            plus one window ending exactly at the input's end.
        count: how many windows at most.

    Returns:
        Sorted start frames. `[0]` when the input is no longer than one window. Windows more than 40 dB
        quieter than the loudest are never chosen, so there may be fewer than `count`.
    """
    if frames <= window:
        return [0]
    hop = max(block, (window // 2) // block * block)
    starts = sorted(set(range(0, frames - window + 1, hop)) | {frames - window})
    cumulative = np.concatenate([[0.0], np.cumsum(energies)])

    def energy(start: int) -> float:
        # Blocks overlapping [start, start + window), weighted by how much of each block the window covers.
        first, last = start / block, (start + window) / block
        lo, hi = int(math.floor(first)), min(int(math.ceil(last)), len(energies))
        total = cumulative[hi] - cumulative[lo]
        total -= energies[lo] * (first - lo) if lo < len(energies) else 0.0
        if hi - 1 >= 0 and last < hi:
            total -= energies[hi - 1] * (hi - last)
        return total

    order = sorted(starts, key=lambda s: (-energy(s), s))
    loudest = energy(order[0])
    chosen: list[int] = []
    for s in order:
        if energy(s) < loudest * _QUIET_RATIO:
            break  # the rest are near silence: tuning effects on them would only add noise to the loss
        if all(abs(s - c) >= window for c in chosen):
            chosen.append(s)
        if len(chosen) == count:
            break
    return sorted(chosen)
