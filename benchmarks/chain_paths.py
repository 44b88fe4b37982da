"""A linear chain's two ways to run, forward+backward: effect by effect, or as one product of frequency responses
(`fx.Chain.process`), whole or as the channel mean only (`mono=True`, what the optimizer asks for when CLAP
listens).

Audio: 10 s stereo at 48 kHz, chain EQ -> reverb, random unit parameters; the loss is the mean square of the
output's channel mean. "effect by effect" runs each effect's own `process` in turn, as `Chain.process` runs a
chain that is not linear (the effects themselves are today's, so this isolates the chain-level path). Times are
medians after warm-up runs (`timing.py`): wall clock on a CPU; on CUDA, CUDA-event times of plain calls and of
the same call replayed as a CUDA graph (as the optimizer runs its steps). Also prints how far each path's
output is from effect by effect (max abs difference over max abs value).

    python benchmarks/chain_paths.py [--device cpu|cuda] [--batches 1,4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import sys

import torch

import fx
from timing import event_ms, graphed, wall_ms

SR = 48000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default=None, help="comma-separated (default: 1,4 on a CPU, 1,16 on CUDA)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (default: 3 on a CPU, 30 on CUDA)")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    batches = [int(b) for b in (args.batches or ("1,16" if cuda else "1,4")).split(",")]
    repeats = args.repeats or (30 if cuda else 3)
    name = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    print(f"device: {args.device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads\n")

    chain = fx.Chain.from_spec("eq,reverb", seed=0).to(args.device)
    g = torch.Generator().manual_seed(0)
    columns = "plain (ms) | CUDA graph (ms)" if cuda else "ms"
    print(f"| path | batch | {columns} | difference |")
    print("|---|---:|" + "---:|" * (2 if cuda else 1) + "---:|")
    for batch in batches:
        x = (0.1 * torch.randn(batch, 2, 10 * SR, generator=g)).to(args.device)
        z = torch.randn(batch, chain.num_params, generator=g).to(args.device).requires_grad_(True)

        def one_by_one() -> torch.Tensor:
            y = x
            for effect, p in zip(chain, chain.unit_to_physical(torch.sigmoid(z))):
                y = effect.process(y, SR, p)
            return y.mean(1)

        paths = {
            "effect by effect": one_by_one,
            "one spectral product": lambda: chain.process(x, SR, torch.sigmoid(z), validate=False).mean(1),
            "one spectral product, mono": lambda: chain.process(x, SR, torch.sigmoid(z), validate=False, mono=True)[:, 0],
        }
        with torch.no_grad():
            reference = one_by_one()
        for label, path in paths.items():
            with torch.no_grad():
                diff = ((path() - reference).abs().max() / reference.abs().max()).item()

            def step(path=path) -> None:
                z.grad = None
                path().square().mean().backward()

            if cuda:
                times = f"{event_ms(step, repeats):.2f} | {event_ms(graphed(step), repeats):.2f}"
            else:
                times = f"{wall_ms(step, repeats):.0f}"
            print(f"| {label} | {batch} | {times} | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
