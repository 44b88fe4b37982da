"""What `torch.compile` would buy the optimizer's step, and what it would cost to compile: a probe, not an
engine feature (the engine does not compile).

For each part, forward+backward on a 10 s stereo 48 kHz clip: the chain EQ -> reverb (the channel mean, as
the optimizer asks for it) and, with --clap, the random-weight HTSAT-tiny CLAP audio embedding. Reports the
number of graphs and graph breaks TorchDynamo finds, the time of the first compiled call (the compile), the
steady-state time eagerly and compiled (on CUDA both also replayed as CUDA graphs, as the optimizer runs
steps), and the largest difference of the compiled output. The compile time is what a user would wait on
the first run (inductor caches compiled kernels on disk for later processes). Results: `benchmarks/RESULTS.md`.

    python benchmarks/compile_probe.py [--device cpu|cuda] [--batches 1,16] [--clap] [--precision float32,bfloat16]
        [--workdir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

import fx
from timing import event_ms, graphed, sync, timed, wall_ms

SR = 48000


def probe(label: str, loss: Callable[[torch.Tensor], torch.Tensor], leaf: torch.Tensor, cuda: bool,
          repeats: int) -> None:
    explained = torch._dynamo.explain(loss)(leaf)
    reasons = "; ".join(sorted({str(b.reason).splitlines()[0][:100] for b in explained.break_reasons})) or "-"
    compiled = torch.compile(loss)

    def step(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            leaf.grad = None
            fn(leaf).backward()
        return run

    def first_call() -> torch.Tensor:
        out = compiled(leaf)  # with gradients on, as timed below: a call under no_grad would compile again
        out.backward()
        return out

    got, compile_s = timed(first_call, leaf.device)
    want = loss(leaf).detach()
    diff = ((got.detach() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
    if cuda:
        times = [f"{event_ms(fn, repeats):.2f}" for fn in (step(loss), step(compiled))]
        for fn in (step(loss), step(compiled)):
            try:
                times.append(f"{event_ms(graphed(fn), repeats):.2f}")
            except RuntimeError as exc:  # torch.AcceleratorError is one; the cell says why, the table goes on
                sync(leaf.device)
                times.append("capture failed: " + " ".join(str(exc).split())[:80])
    else:
        times = [f"{wall_ms(fn, repeats):.0f}" for fn in (step(loss), step(compiled))]
    print(f"| {label} | {explained.graph_count} | {explained.graph_break_count} | {compile_s:.1f} | "
          + " | ".join(times) + f" | {diff:.1e} | {reasons} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default=None, help="comma-separated (default: 1 on a CPU, 1,16 on CUDA)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (default: 3 on a CPU, 20 on CUDA)")
    ap.add_argument("--clap", action="store_true", help="also probe the CLAP audio embedding")
    ap.add_argument("--precision", default="float32",
                    help="the CLAP embedder's precisions, comma-separated: float32, bfloat16 (default float32)")
    ap.add_argument("--workdir", type=Path, help="keep the random CLAP checkpoint here between runs")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    batches = [int(b) for b in (args.batches or ("1,16" if cuda else "1")).split(",")]
    repeats = args.repeats or (20 if cuda else 3)
    name = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"device: {args.device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    times = "eager (ms) | compiled (ms) | eager, CUDA graph (ms) | compiled, CUDA graph (ms)" if cuda else \
        "eager (ms) | compiled (ms)"
    print(f"| part | graphs | breaks | first call (s) | {times} | difference | break reasons |")
    print("|---|---:|---:|---:|" + "---:|" * (4 if cuda else 2) + "---:|---|")

    chain = fx.Chain.from_spec("eq,reverb", seed=0).to(args.device)
    embedders = {}
    if args.clap:
        from text2fx.clap import ClapEmbedder
        from text2fx.testing import random_clap_files

        tmp = tempfile.TemporaryDirectory()
        files = random_clap_files(args.workdir or tmp.name)
        embedders = {p: ClapEmbedder(*files, device=args.device, precision=p) for p in args.precision.split(",")}
    g = torch.Generator().manual_seed(0)
    for batch in batches:
        x = (0.1 * torch.randn(batch, 2, 10 * SR, generator=g)).to(args.device)
        z = torch.randn(batch, chain.num_params, generator=g).to(args.device).requires_grad_(True)
        chain.process(x, SR, torch.sigmoid(z), validate=False)  # the reverb's noise table, made once
        probe(f"EQ -> reverb, batch {batch}",
              lambda z: chain.process(x, SR, torch.sigmoid(z), validate=False, mono=True).square().mean(),
              z, cuda, repeats)
        torch._dynamo.reset()
        wave = (0.1 * torch.randn(batch, 1, 10 * SR, generator=g)).to(args.device).requires_grad_(True)
        for precision, embedder in embedders.items():
            probe(f"CLAP audio ({precision}), batch {batch}", lambda w: embedder.embed_audio(w, SR).sum(),
                  wave, cuda, repeats)
            torch._dynamo.reset()
    return 0


if __name__ == "__main__":
    sys.exit(main())
