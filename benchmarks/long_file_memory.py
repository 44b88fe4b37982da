"""Peak memory of the `text2fx` command on a long file (default: 1 hour, stereo, 48 kHz, 16-bit WAV).

Writes the file block by block, then runs the real command (random-weight CLAP checkpoint from
text2fx.testing, a few steps: the optimization itself only ever sees 10 s windows, so its memory does not
depend on the file's length; the rendering is what must stay bounded) in a child process and reports the
child's peak resident memory (ru_maxrss) and wall time. Target: under 4 GB for the 1-hour file.

    python benchmarks/long_file_memory.py                 # 1 hour (~660 MB of temporary WAV)
    python benchmarks/long_file_memory.py --minutes 5
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 48000


def write_long_file(path: Path, minutes: float) -> None:
    rng = np.random.default_rng(0)
    block = 60 * SR
    t = np.arange(block) / SR
    with sf.SoundFile(str(path), "w", samplerate=SR, channels=2, subtype="PCM_16") as f:
        for k in range(int(np.ceil(minutes))):
            n = int(min(1.0, minutes - k) * block)
            tone = 0.2 * np.sin(2 * np.pi * (110 + 10 * (k % 12)) * t[:n])
            x = np.stack([tone, 0.8 * tone]) + 0.02 * rng.standard_normal((2, n))
            f.write(x.T.astype(np.float32))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--chain", default="eq,reverb")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--workdir", type=Path, help="keep the random checkpoint here between runs")
    args = ap.parse_args()

    from text2fx.testing import make_random_clap_checkpoint, make_test_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        workdir = args.workdir or tmp
        workdir.mkdir(parents=True, exist_ok=True)
        checkpoint = workdir / "random-tiny.pt"
        if not checkpoint.exists():
            make_random_clap_checkpoint(checkpoint, "tiny", seed=0)
        tokenizer = make_test_tokenizer(workdir / "tokenizer")
        src = tmp / "long.wav"
        write_long_file(src, args.minutes)
        out = tmp / "long.out.wav"
        cmd = [sys.executable, "-m", "text2fx", str(src), "warm and bright", "--chain", args.chain, "-o", str(out),
               "--clap-ckpt", str(checkpoint), "--tokenizer", str(tokenizer), "--device", "cpu",
               "--steps", str(args.steps), "--restarts", "1", "--quiet"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 2**30
        info = sf.info(str(out))
        assert (info.frames, info.channels, info.samplerate) == (sf.info(str(src)).frames, 2, SR)
        print(f"{args.minutes:g} min stereo {SR} Hz 16-bit, chain {args.chain}, {args.steps} steps: "
              f"peak RSS {peak_gb:.2f} GB, wall {wall:.0f} s, input {src.stat().st_size / 2**20:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
