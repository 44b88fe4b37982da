"""Timing helpers shared by the benchmarks: one wall-clock measurement, wall-clock and CUDA-event medians, and a
callable replayed as a CUDA graph.

Scripts run as `python benchmarks/X.py` import this as `timing` (Python puts the script's folder on sys.path).
`device` arguments take a `torch.device` or its name; on CUDA and MPS the device is synchronized around each
timed call, so queued work counts; None or a CPU needs no waiting.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def sync(device: torch.device | str | None = None) -> None:
    """Wait until `device` has run everything queued on it (CUDA, MPS); nothing to wait for on a CPU."""
    kind = torch.device(device).type if device is not None else "cpu"
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def warm_up(fn: Callable[[], object], calls: int = 3, device: torch.device | str | None = None) -> None:
    """`calls` untimed calls of `fn` (caches, allocator, kernels, FFT plans), then `sync(device)`."""
    for _ in range(calls):
        fn()
    sync(device)


def timed(fn: Callable[[], T], device: torch.device | str | None = None) -> tuple[T, float]:
    """`fn()`'s result and the wall-clock seconds of that one call (no warm-up): for measurements that are
    taken once (a model load, a first compiling call, a whole run)."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def wall_ms(fn: Callable[[], object], repeats: int, *, warmup: int = 1,
            device: torch.device | str | None = None) -> float:
    """Median wall-clock time (ms) of `fn` over `repeats` calls, after `warmup` untimed ones."""
    warm_up(fn, warmup, device)
    return statistics.median(1000 * timed(fn, device)[1] for _ in range(repeats))


def event_ms(fn: Callable[[], object], repeats: int = 30, *, warmup: int = 3) -> float:
    """Median CUDA-event time (ms) of `fn` on the current CUDA stream over `repeats` calls, after `warmup`
    untimed ones."""
    warm_up(fn, warmup)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def graphed(fn: Callable[[], object]) -> Callable[[], None]:
    """`fn` recorded as a CUDA graph (after 3 warm-up calls on a side stream, as PyTorch's recipe does); returns
    the graph's replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        warm_up(fn, 3)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay
