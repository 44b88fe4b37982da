"""Speed of fx effects vs dasp_pytorch 0.0.1, forward and forward+backward.

    python benchmarks/fx_speed.py [--device cpu|cuda] [--repeats 3] [--quick] [--dasp-batch16]
                                  [--no-dasp] [--chains eq,reverb ...] [--batches 1 16] [--fx-path DIR]

Chains default to eq, reverb, eq,reverb and distortion; dasp is timed only for chains of effects it has here
(eq, reverb), the others print "not run".

Audio: 10 s stereo at 48 kHz (``--quick``: 2 s, 1 repeat), batch 1 and 16, random unit
parameters.  Times are wall-clock medians (``timing.wall_ms``) over ``--repeats`` runs after
one warm-up run (reverb noise cache filled, FFT plans made).  dasp's time-domain reverb is
very slow on a CPU, so there dasp's reverb is measured at batch 1 only, without warm-up and
with ``--dasp-repeats`` runs (default 1), unless ``--dasp-batch16`` is given.
Prints a Markdown table; ratio = dasp time / fx time.  ``--fx-path DIR`` times the ``fx`` package found in
``DIR`` instead (e.g. an older commit's, from ``git archive HEAD fx | tar -x -C DIR``): run it and this
checkout's in turn for a before/after comparison.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable

import torch

if "--fx-path" in sys.argv:  # before `import fx`: time another checkout's fx
    sys.path.insert(0, sys.argv[sys.argv.index("--fx-path") + 1])
import fx  # noqa: E402
from timing import wall_ms  # noqa: E402


def _time(fn: Callable[[], None], device: str, repeats: int, warmup: bool) -> float:
    """Median seconds of `fn` over `repeats` runs, after one warm-up run if `warmup`."""
    return wall_ms(fn, repeats, warmup=int(warmup), device=device) / 1000


def _ours(spec: str, x: torch.Tensor, sr: int, batch: int, backward: bool) -> Callable[[], None]:
    chain = fx.Chain.from_spec(spec).to(x.device)
    u = torch.rand(batch, chain.num_params, device=x.device, generator=None)

    def run() -> None:
        p = u.clone().requires_grad_(backward)
        y = chain.process(x, sr, p, validate=False)
        if backward:
            y.square().mean().backward()

    return run


# Effects with a dasp_pytorch counterpart timed here (dasp's distortion has no oversampling or level match).
_DASP_EFFECTS = ("eq", "reverb")


def _dasp(spec: str, x: torch.Tensor, sr: int, batch: int, backward: bool) -> Callable[[], None]:
    from dasp_pytorch import NoiseShapedReverb, ParametricEQ

    procs = [{"eq": ParametricEQ, "reverb": NoiseShapedReverb}[n](sr) for n in spec.split(",")]
    us = [torch.rand(batch, p.num_params, device=x.device) for p in procs]

    def run() -> None:
        y = x.expand(batch, -1, -1)
        params = [u.clone().requires_grad_(backward) for u in us]
        for proc, p in zip(procs, params):
            y = proc.process_normalized(y, p)
        if backward:
            y.square().mean().backward()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dasp-repeats", type=int, default=None, help="runs for dasp (default: 1 on CPU, --repeats on CUDA)")
    ap.add_argument("--quick", action="store_true", help="2 s of audio, 1 repeat")
    ap.add_argument("--dasp-batch16", action="store_true", help="also time dasp at batch 16 on CPU (very slow)")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--sample-rate", type=int, default=48000)
    ap.add_argument("--no-dasp", action="store_true", help="time fx only")
    ap.add_argument("--chains", nargs="+", default=["eq", "reverb", "eq,reverb", "distortion"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--fx-path", help="directory holding the fx package to time (default: this checkout's)")
    args = ap.parse_args()

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available")
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    repeats = 1 if args.quick else args.repeats
    cpu = device == "cpu"
    dasp_repeats = args.dasp_repeats or (1 if cpu else repeats)
    sr = args.sample_rate
    torch.manual_seed(0)
    x = 0.1 * torch.randn(1, 2, int(seconds * sr), device=device)

    if cpu:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        hw = f"CPU {name}, {torch.get_num_threads()} threads"
    else:
        hw = f"GPU {torch.cuda.get_device_name()}"
    print(f"# fx ({fx.__file__}) vs dasp_pytorch: {seconds:g} s stereo @ {sr} Hz, {hw}, torch {torch.__version__}, "
          f"median of {repeats} (dasp: {dasp_repeats}{', no warm-up' if cpu else ''})\n")
    print("| chain | batch | pass | fx (s) | dasp (s) | dasp / fx |")
    print("|---|---|---|---|---|---|")
    for spec in args.chains:
        for batch in args.batches:
            for backward in (False, True):
                t_ours = _time(_ours(spec, x, sr, batch, backward), device, repeats, warmup=True)
                dasp_has = all(n in _DASP_EFFECTS for n in spec.split(","))
                run_dasp = dasp_has and not args.no_dasp
                run_dasp = run_dasp and (not cpu or batch == 1 or args.dasp_batch16 or spec == "eq")
                if run_dasp:
                    slow = cpu and "reverb" in spec
                    t_dasp = _time(
                        _dasp(spec, x, sr, batch, backward), device,
                        dasp_repeats if slow else repeats, warmup=not slow,
                    )
                    dasp_s, ratio = f"{t_dasp:.3f}", f"{t_dasp / t_ours:.1f}x"
                else:
                    dasp_s, ratio = "not run", "-"
                pass_name = "fwd+bwd" if backward else "fwd"
                print(f"| {spec} | {batch} | {pass_name} | {t_ours:.3f} | {dasp_s} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
