"""Throughput of `text2fx batch`: items per minute with 1 worker, 2 local worker processes and 2 Ray actors,
on one manifest, in one run.

Each mode runs the whole manifest into a fresh folder (`text2fx.batch.run_batch`, what the command calls),
timed by the wall clock from the call to its return: worker start-up and model load included ("total"), and
from the first finished task to the end ("steady": load and warm-up excluded). The CLAP checkpoint has random
weights (speed does not depend on them): nothing here measures quality.

    python benchmarks/batch_throughput.py [--items 12] [--steps 10] [--max-batch 3] [--modes 1,2,ray2]
        [--device cpu] [--ray local|auto|HOST:PORT] [--workdir DIR]

On a multi-GPU cluster: `--device cuda --ray auto --modes 1,ray2,ray8 --items 256 --steps 300 --max-batch 16`
(rayN: N actors, each requesting one GPU; inputs, outputs and model files must be at the same paths on every
node, e.g. a shared file system under --workdir).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from text2fx.batch.runner import run_batch
from text2fx.options import EngineOptions
from text2fx.testing import random_clap_files

PROMPTS = ["warm and bright", "dark and muffled", "in a large cathedral", "coming through an old telephone"]


def make_manifest(folder: Path, items: int, seconds: float, sr: int = 48000) -> Path:
    rng = np.random.default_rng(0)
    lines = ["input,prompt"]
    for k in range(items):
        t = np.arange(int(seconds * sr)) / sr
        x = 0.3 * np.sin(2 * np.pi * (110 + 20 * k) * t)[None] + 0.05 * rng.standard_normal((2, t.size))
        sf.write(folder / f"clip{k:03d}.wav", x.T.astype(np.float32), sr, subtype="PCM_24")
        lines.append(f"clip{k:03d}.wav,{PROMPTS[k % len(PROMPTS)]}")
    path = folder / "items.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_mode(mode: str, manifest: Path, out: Path, args, files) -> dict:
    ray = args.ray if mode.startswith("ray") else None
    workers = int(mode[3:]) if ray else int(mode)
    options = EngineOptions(checkpoint=str(files[0]), tokenizer=str(files[1]), device=args.device,
                            max_batch=args.max_batch)
    first = []
    started = time.perf_counter()
    outcome = run_batch(manifest, out, {"steps": args.steps, "restarts": 1, "excerpts": 1, "chain": "eq,reverb",
                                        "preset": "fast"},
                        options, workers=workers, ray=ray,
                        after_task=lambda pool, in_flight: first.append(time.perf_counter()) if not first else None)
    total = time.perf_counter() - started
    done = outcome.count("done")
    assert done == args.items, [e.error for e in outcome.entries if e.error]
    first_rows = args.max_batch  # the rows of the first finished task (max_batch clips, one clip per row here)
    steady = (done - first_rows) / (total - (first[0] - started)) * 60 if first and done > first_rows else float("nan")
    return {"mode": mode, "total_s": total, "items_per_min": done / total * 60, "steady_items_per_min": steady,
            "first_result_s": first[0] - started if first else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=12)
    p.add_argument("--seconds", type=float, default=2.0, help="clip length")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--max-batch", type=int, default=3)
    p.add_argument("--modes", default="1,2,ray2", help="comma-separated: N (local workers) or rayN (Ray actors)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--ray", default="local", help="Ray address for the rayN modes (local: a loopback instance here)")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "text2fx-bench"))
    args = p.parse_args()

    files = random_clap_files(args.workdir)
    modes = args.modes.split(",")
    ray_started = None
    if any(m.startswith("ray") for m in modes) and args.ray == "local":
        import ray

        t = time.perf_counter()
        ray.init(address="local", include_dashboard=False, num_cpus=os.cpu_count(), _node_ip_address="127.0.0.1",
                 log_to_driver=False, configure_logging=False)
        ray_started = time.perf_counter() - t
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        manifest = make_manifest(tmp, args.items, args.seconds)
        rows = [run_mode(m, manifest, tmp / f"out-{m}", args, files) for m in modes]
    if ray_started is not None:
        import ray

        ray.shutdown()
    print(f"{args.items} items ({args.seconds:g} s stereo 48 kHz clips, eq,reverb, {args.steps} steps, 1 restart), "
          f"max_batch {args.max_batch}, device {args.device}, {os.cpu_count()} cores"
          + (f"; local Ray started in {ray_started:.1f} s (not counted)" if ray_started is not None else ""))
    print("| mode | wall time (s) | items/min | first result (s) | items/min after the first result |")
    print("|---|---|---|---|---|")
    for r in rows:
        name = (f"Ray, {r['mode'][3:]} actors" if r["mode"].startswith("ray")
                else f"{r['mode']} local worker{'s' if r['mode'] != '1' else ' (in process)'}")
        print(f"| {name} | {r['total_s']:.1f} | {r['items_per_min']:.1f} | {r['first_result_s']:.1f} | "
              f"{r['steady_items_per_min']:.1f} |")


if __name__ == "__main__":
    main()
