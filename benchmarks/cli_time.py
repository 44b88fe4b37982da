"""How long a user waits: the `text2fx` command, start to finish, on a 10 s stereo 48 kHz clip.

Each run is the real command in a child process (`python -m text2fx clip.wav "warm and bright" ...`), timed
by the wall clock from its start to its exit: Python start-up, imports, device set-up, model load, the
optimization (CUDA graph capture included) and rendering and writing the files. A first, untimed one-step
run pages the checkpoint in and warms the import caches, as a user's second run would find them. The CLAP
checkpoint has random weights (speed does not depend on them): nothing here measures quality. Steps run
are read from the written reports (early stopping ends a preset's run before its step budget).

    python benchmarks/cli_time.py [--device cpu|cuda] [--runs help,auto,auto-bf16,paper,prompts16] [--workdir DIR]

On a CPU the default preset is "fast" (100 steps), but "paper" (600 steps) and "prompts16" take many minutes
there: pick --runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 48000
PROMPTS = [
    "warm and bright", "dark and muffled", "in a large cathedral", "coming through an old telephone",
    "crisp and airy", "boomy", "thin and tinny", "in a small bathroom", "distant", "intimate and close",
    "underwater", "harsh", "smooth", "metallic", "like a vinyl record", "in a concert hall",
]
RUNS = {  # name -> (what it is, extra command-line arguments)
    "help": ("`text2fx --help`", ["--help"]),
    "auto": ("1 prompt, default preset for the device", []),
    "auto-bf16": ("1 prompt, default preset, --precision bfloat16", ["--precision", "bfloat16"]),
    "paper": ("1 prompt, --preset paper (600 steps)", ["--preset", "paper"]),
    "prompts16": ("16 prompts in one command, default preset", [a for p in PROMPTS for a in ("-p", p)]),
}


def write_clip(path: Path) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(10 * SR) / SR
    tone = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    sf.write(str(path), np.stack([tone, 0.7 * tone]).T + 0.02 * rng.standard_normal((t.size, 2)), SR)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="passed to the command (default: its own choice)")
    ap.add_argument("--runs", default="help,auto,auto-bf16,paper,prompts16",
                    help=f"comma-separated, from {', '.join(RUNS)}")
    ap.add_argument("--workdir", type=Path, help="keep the random checkpoint here between runs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    names = args.runs.split(",")
    if not set(names) <= set(RUNS):
        ap.error(f"--runs takes {', '.join(RUNS)}")

    from text2fx.testing import random_clap_files

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint, tokenizer = random_clap_files(args.workdir or tmp)
        clip = tmp / "clip.wav"
        write_clip(clip)
        env = dict(os.environ, TEXT2FX_CLAP_CKPT=str(checkpoint), TEXT2FX_CLAP_TOKENIZER=str(tokenizer))
        device = ["--device", args.device] if args.device else []

        def run(name: str, extra: list[str]) -> float:
            out = tmp / name
            out.mkdir(exist_ok=True)
            positional = [str(clip)] if extra[:1] == ["-p"] or extra == ["--help"] else [str(clip), PROMPTS[0]]
            cmd = [sys.executable, "-m", "text2fx", *positional, *extra, *device, "-o", str(out), "-q"]
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
            return wall

        run("warm-up", ["--steps", "1"])
        print("| run | wall clock (s) | steps run | device | precision |\n|---|---:|---:|---|---|")
        for name in names:
            what, extra = RUNS[name]
            wall = run(name, extra)
            reports = [json.loads(p.read_text()) for p in sorted((tmp / name).glob("*.json"))]
            opt = [r["optimization"] for r in reports]
            steps = ",".join(sorted({str(o["steps_run"]) for o in opt})) or "-"
            dev = ",".join(sorted({r["clap"]["device"] for r in reports})) or "-"
            precision = ",".join(sorted({o["precision"] for o in opt})) or "-"
            results[name] = {"wall_s": wall, "steps_run": steps, "device": dev, "precision": precision}
            print(f"| {what} | {wall:.2f} | {steps} | {dev} | {precision} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
