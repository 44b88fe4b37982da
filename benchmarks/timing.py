"""Timing helpers shared by the benchmarks: wall-clock and CUDA-event medians, and a callable replayed as a CUDA
graph."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def wall_ms(fn: Callable[[], None], repeats: int) -> float:
    """Median wall-clock time (ms) of `fn` over `repeats` calls, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def event_ms(fn: Callable[[], None], repeats: int = 30) -> float:
    """Median CUDA-event time (ms) of `fn` over `repeats` calls, after 3 untimed ones."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def graphed(fn: Callable[[], None]) -> Callable[[], None]:
    """`fn` recorded as a CUDA graph (after 3 warm-up calls on a side stream, as PyTorch's recipe does); returns
    the graph's replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay
