"""What a warm server saves: `text2fx serve` answering jobs one after another, against the plain command.

Starts a real `text2fx serve` child process (its start-up timed until its server file appears: model load and
the warm-up job included), then times, by the wall clock, on one 10 s stereo 48 kHz clip with the same options:

- `request N`: a job sent with `text2fx.client.Client.apply` from this process (request 1 is the first the
  server answers; with --no-warmup it pays the one-time costs the warm-up otherwise pays at start);
- `--server command`: `python -m text2fx CLIP PROMPT ... --server` in a child process, start to exit (Python
  start-up, the command's imports and checks, the request): what a shell loop or a DAW calling the command pays;
- `local command`: the same command without --server (loads the model itself), unless --no-local.

The fixed cost a server removes is `local command` minus `--server command`. The CLAP checkpoint has random
weights unless --clap-ckpt names a real one (speed does not depend on the weights; nothing here measures
quality). Run on an idle machine:

    python benchmarks/serve_latency.py [--device cpu|cuda] [--steps 1] [--requests 3] [--workdir DIR] [--json F]
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
PROMPT = "warm and bright"


def write_clip(path: Path, seconds: float) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    tone = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    sf.write(str(path), np.stack([tone, 0.7 * tone]).T + 0.02 * rng.standard_normal((t.size, 2)), SR)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="the server's and the command's device (default cpu)")
    ap.add_argument("--steps", type=int, default=1, help="optimization steps per job (default 1: the fixed cost "
                    "shows best)")
    ap.add_argument("--chain", default="eq,reverb")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    ap.add_argument("--requests", type=int, default=3, help="jobs sent through the client (default 3)")
    ap.add_argument("--no-warmup", action="store_true", help="start the server without its warm-up job")
    ap.add_argument("--no-local", action="store_true", help="skip the local command (it loads the model)")
    ap.add_argument("--clap-ckpt", type=Path, help="a real checkpoint (default: a random-weight one)")
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--workdir", type=Path, help="keep the random checkpoint here between runs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    from text2fx.client import Client
    from text2fx.testing import random_clap_files

    random_weights = args.clap_ckpt is None
    work = args.workdir or Path(tempfile.gettempdir()) / "t2fx-bench"
    if random_weights:
        checkpoint, tokenizer = random_clap_files(work)
    else:
        checkpoint, tokenizer = args.clap_ckpt, args.tokenizer
    model = ["--clap-ckpt", str(checkpoint)] + (["--tokenizer", str(tokenizer)] if tokenizer else [])
    job = ["--chain", args.chain, "--steps", str(args.steps), "--restarts", "1", "--excerpts", "1", "--overwrite",
           "--quiet", "--device", args.device]
    rows: list[tuple[str, float]] = []

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = tmp / "clip.wav"
        write_clip(clip, args.seconds)
        server_file = tmp / "server.json"
        env = {**os.environ, "TEXT2FX_SERVER_FILE": str(server_file)}
        env.pop("TEXT2FX_SERVER", None)
        started = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "text2fx", "serve", "--port", "0", "--token-file",
                                   str(server_file), "--device", args.device, "--quiet", *model,
                                   *(["--no-warmup"] if args.no_warmup else [])], env=env)
        try:
            while not server_file.exists():
                if server.poll() is not None:
                    raise SystemExit(f"the server exited with {server.returncode}")
                time.sleep(0.05)
            rows.append(("server start (model load" + ("" if args.no_warmup else " + warm-up") + ")",
                         time.perf_counter() - started))
            client = Client(server_file=server_file)
            for k in range(args.requests):
                t0 = time.perf_counter()
                client.apply(clip, PROMPT, chain=args.chain, steps=args.steps, restarts=1, excerpts=1,
                             output=tmp / f"request{k}.wav", overwrite=True)
                rows.append((f"request {k + 1} (client, this process)", time.perf_counter() - t0))
            for k in range(2):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "text2fx", str(clip), PROMPT, *job, "-o",
                                str(tmp / "cli.wav"), "--server"], env=env, check=True)
                rows.append((f"--server command, run {k + 1}", time.perf_counter() - t0))
        finally:
            server.terminate()
            server.wait()
        if not args.no_local:
            for k in range(2):  # the first also pages the checkpoint in, as a user's first run of the day
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "text2fx", str(clip), PROMPT, *job, *model, "-o",
                                str(tmp / "local.wav")], env=env, check=True)
                rows.append((f"local command (loads the model), run {k + 1}", time.perf_counter() - t0))

    label = "random weights - plumbing, not quality" if random_weights else str(checkpoint)
    print(f"\n{args.seconds:g} s stereo {SR} Hz clip, chain {args.chain}, {args.steps} step(s), device {args.device}; "
          f"CLAP: {label}")
    print("| what | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "steps": args.steps, "seconds": args.seconds,
                                         "chain": args.chain, "random_weights": random_weights,
                                         "rows": [{"what": n, "seconds": s} for n, s in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
