"""Replaying the optimization step as a CUDA graph.

A small batch's step on a GPU is bound by the launch cost of its many small kernels; replaying the step as
one recorded CUDA graph removes that cost. The step must be a fixed sequence of kernels with no reads back to
the host (see `state.LoopState`), and the chain and the embedder must declare themselves capturable
(`graph_safe`).
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

# Below this many steps, capturing a CUDA graph (a few eager warm-up steps plus the capture) costs more than
# replaying it saves.
GRAPH_MIN_STEPS = 20
# Eager steps before a capture: lazily built state (Adam's moments, FFT plans, cached noise and kernels) must
# exist before the capture starts, or the graph would rebuild it on every replay.
_GRAPH_WARMUP_STEPS = 2


def use_cuda_graph(cuda_graph: bool | None, chain, embedder, device: torch.device, steps: int) -> bool:
    """Whether to capture: never if `cuda_graph` is False; always if True (CUDA only, else ValueError); for
    None, on CUDA when chain and embedder are `graph_safe` and the run has at least `GRAPH_MIN_STEPS` steps."""
    if cuda_graph is False:
        return False
    if device.type != "cuda":
        if cuda_graph:
            raise ValueError(f"cuda_graph=True needs a CUDA device, the audio is on {device}")
        return False
    if cuda_graph:
        return True
    safe = getattr(chain, "graph_safe", False) and getattr(embedder, "graph_safe", False)
    return bool(safe) and steps >= GRAPH_MIN_STEPS


def capture(step: Callable[[], None], reset: Callable[[], None], steps: int, required: bool) -> Callable[[], None]:
    """Record `step` as a CUDA graph and return its replay; `reset` puts the loop state back afterwards, so the
    warm-up steps leave no trace. On failure, warn and return `step` itself (or raise if `required`).

    Called directly by `optimize` (the warning points at `optimize`'s caller)."""
    try:
        # Warm-up on a side stream, as PyTorch's whole-network capture recipe does.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(min(_GRAPH_WARMUP_STEPS, steps)):
                step()
        torch.cuda.current_stream().wait_stream(side)
        reset()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
    except RuntimeError as exc:
        # Out of memory is no capture problem: plain steps would need the same memory.
        if required or isinstance(exc, torch.OutOfMemoryError):
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        warnings.warn(f"CUDA graph capture failed, optimizing without it ({reason})", RuntimeWarning, stacklevel=3)
        torch.cuda.synchronize()
        reset()
        return step
    return graph.replay
