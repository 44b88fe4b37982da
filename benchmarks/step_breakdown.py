"""Where one optimization step's time goes on a GPU, and what TF32 would change.

On a 10 s stereo 48 kHz clip, chain EQ -> reverb, random-weight HTSAT-tiny CLAP, at batch 1 and 16, times
(medians of CUDA-event timings) the parts of a step: the chain forward+backward, CLAP's audio embedding
forward+backward, and the whole step as `text2fx.optimize` runs it; each part eagerly and as a replayed CUDA
graph. Then runs the optimizer with TF32 matrix products off (the engine's setting) and on, and reports the
step time and how far the parameters move apart: TF32 would only be worth adopting if both are convincing.

    python benchmarks/step_breakdown.py --workdir /tmp/t2fx-bench     # CUDA only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fx  # noqa: E402
from text2fx.clap import ClapEmbedder  # noqa: E402
from text2fx.optimize import Recipe, optimize  # noqa: E402
from text2fx.testing import random_clap_files  # noqa: E402

SR = 48000


def event_ms(fn: Callable[[], None], repeats: int = 30) -> float:
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


def measured(time_ms: Callable[[], float]) -> str:
    """One table cell: a variant that fails (an op without bf16 kernels, say) costs its cell, not the table."""
    try:
        return f"{time_ms():.2f}"
    except RuntimeError as exc:
        print(f"  ({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]})", file=sys.stderr)
        return "failed"


def graphed(fn: Callable[[], None]) -> Callable[[], None]:
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    tmp = tempfile.TemporaryDirectory()
    embedder = ClapEmbedder(*random_clap_files(args.workdir or tmp.name), device="cuda")
    chain = fx.Chain.from_spec("eq,reverb", seed=0).to("cuda")
    g = torch.Generator().manual_seed(0)

    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}\n")
    print("| part (ms) | batch | eager | CUDA graph |")
    print("|---|---:|---:|---:|")
    for batch in (1, 16):
        x = (0.1 * torch.randn(batch, 2, 10 * SR, generator=g)).cuda()
        z = torch.randn(batch, chain.num_params, generator=g).cuda().requires_grad_(True)
        wave = torch.randn(batch, 2, 10 * SR, generator=g).cuda().mul_(0.1).requires_grad_(True)

        def chain_step() -> None:
            z.grad = None
            chain.process(x, SR, torch.sigmoid(z), validate=False).square().mean().backward()

        def clap_step() -> None:
            wave.grad = None
            embedder.embed_audio(wave, SR).sum().backward()

        def whole_step() -> None:
            z.grad = None
            embedder.embed_audio(chain.process(x, SR, torch.sigmoid(z), validate=False), SR).sum().backward()

        def tf32_step() -> None:
            torch.backends.cuda.matmul.allow_tf32 = True
            whole_step()
            torch.backends.cuda.matmul.allow_tf32 = False

        def bf16_step() -> None:
            z.grad = None
            y = chain.process(x, SR, torch.sigmoid(z), validate=False)
            # no autocast weight cache: a captured graph must not refer to casts freed after the warm-up
            with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                emb = embedder.embed_audio(y, SR)
            emb.float().sum().backward()

        for name, fn in (("EQ -> reverb, fwd+bwd", chain_step), ("CLAP audio, fwd+bwd", clap_step),
                         ("both, fwd+bwd", whole_step), ("both, TF32 matmuls", tf32_step),
                         ("both, CLAP in bf16 autocast", bf16_step)):
            print(f"| {name} | {batch} | {measured(lambda: event_ms(fn))} | {measured(lambda: event_ms(graphed(fn)))} |",
                  flush=True)

    clips = (0.1 * torch.randn(1, 1, 2, 10 * SR, generator=g)).cuda()
    text = embedder.embed_text(["this sound is warm and bright"])
    anchor = embedder.embed_text(["this sound is not warm and bright"])
    outcomes = {}
    with torch.no_grad():
        exact = embedder.embed_audio(clips[0], SR)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = embedder.embed_audio(clips[0], SR).float()
    print(f"\nbf16 autocast vs fp32 embedding: cosine {torch.nn.functional.cosine_similarity(exact, low).item():.6f}")
    print("\n| matrix products | optimizer step, batch 1 (ms) | params after 100 steps: max diff to fp32 |")
    print("|---|---:|---:|")
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        run = lambda steps: optimize(chain, embedder, clips, SR, [0], text, anchor,  # noqa: E731
                                     Recipe(steps=steps, lr=0.01, restarts=1, excerpts=1, patience=None))
        run(20)
        start, mid, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        start.record()
        run(50)
        mid.record()
        outcomes[tf32] = run(100)[0].params
        end.record()
        end.synchronize()
        step_ms = (mid.elapsed_time(end) - start.elapsed_time(mid)) / 50
        diff = (outcomes[tf32] - outcomes[False]).abs().max().item()
        print(f"| {'TF32' if tf32 else 'fp32'} | {step_ms:.2f} | {diff:.2e} |")
    torch.backends.cuda.matmul.allow_tf32 = False
    return 0


if __name__ == "__main__":
    sys.exit(main())
