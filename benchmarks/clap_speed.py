"""CLAP audio-embedding speed: text2fx.clap.ClapEmbedder next to laion-clap's own path, plus model load time.

Times the audio embedding of 10 s clips at 48 kHz (no resampling on either side) at several batch sizes,
forward only (no_grad) and forward+backward (gradient to the waveform, as in Text2FX's optimisation loop),
for `ClapEmbedder.embed_audio` and `CLAP_Module.get_audio_embedding_from_data(use_tensor=True)` on the same
random-weight checkpoint (built by text2fx.testing; no network needed). Prints a Markdown table.

    python benchmarks/clap_speed.py --device cpu --quick
    python benchmarks/clap_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from text2fx.clap import ClapEmbedder
from text2fx.testing import laion_reference_module, random_clap_files
from timing import timed, wall_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps (default: cpu)")
    parser.add_argument("--batches", default="1,4,16", help="comma-separated batch sizes (default: 1,4,16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell, after one warm-up (default: 5)")
    parser.add_argument("--quick", action="store_true", help="batches 1,4 and 2 repeats (for small CPUs)")
    parser.add_argument("--workdir", type=Path, help="where to write the random checkpoint (default: a temp dir)")
    args = parser.parse_args()
    batches = [1, 4] if args.quick else [int(b) for b in args.batches.split(",")]
    repeats = 2 if args.quick else args.repeats
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, tokenizer_dir = random_clap_files(args.workdir or tmp)

        # A fresh interpreter, as a CLI run sees it: includes importing torch, transformers and clap_module.
        code = (
            "import time; t = time.perf_counter(); from text2fx.clap import ClapEmbedder; "
            f"ClapEmbedder({str(checkpoint)!r}, {str(tokenizer_dir)!r}, device={str(device)!r}); "
            "print(time.perf_counter() - t)"
        )
        repo = Path(__file__).resolve().parents[1]
        cold = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
        first_load = float(cold.stdout.split()[-1])
        ours, load = timed(lambda: ClapEmbedder(checkpoint, tokenizer_dir, device=device), device)
        # includes `import laion_clap` (its tokenizers patched out)
        laion, laion_load = timed(lambda: laion_reference_module(checkpoint, tokenizer_dir, device), device)

        rows = []
        for batch in batches:
            audio = 0.1 * torch.randn(batch, 1, ours.window_samples, generator=torch.Generator().manual_seed(batch))
            audio = audio.to(device)

            def ours_forward() -> None:
                with torch.no_grad():
                    ours.embed_audio(audio, ours.sample_rate)

            def laion_forward() -> None:
                with torch.no_grad():
                    laion.get_audio_embedding_from_data(audio[:, 0], use_tensor=True)

            def ours_backward() -> None:
                x = audio.clone().requires_grad_(True)
                ours.embed_audio(x, ours.sample_rate).sum().backward()

            def laion_backward() -> None:
                x = audio[:, 0].clone().requires_grad_(True)
                laion.get_audio_embedding_from_data(x, use_tensor=True).sum().backward()

            for mode, mine, theirs in [("forward", ours_forward, laion_forward), ("fwd+bwd", ours_backward, laion_backward)]:
                t_ours = wall_ms(mine, repeats, device=device)
                t_laion = wall_ms(theirs, repeats, device=device)
                rows.append((batch, mode, t_ours, t_laion))
                print(f"  batch {batch:2d} {mode}: text2fx {t_ours:.0f} ms, laion-clap {t_laion:.0f} ms", file=sys.stderr)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"Device: {name}; torch {torch.__version__}; {torch.get_num_threads()} threads; median of {repeats} runs\n")
    print(f"Model load: text2fx {load:.2f} s (fresh process, with imports: {first_load:.2f} s); "
          f"laion-clap CLAP_Module + load_ckpt {laion_load:.2f} s (with its import)\n")
    print("| batch | pass | text2fx ms | laion-clap ms | laion / text2fx |")
    print("|---:|---|---:|---:|---:|")
    for batch, mode, t_ours, t_laion in rows:
        print(f"| {batch} | {mode} | {t_ours:.0f} | {t_laion:.0f} | {t_laion / t_ours:.2f} |")


if __name__ == "__main__":
    main()
