"""Text2FX demo: a few of the paper's prompts over EQ, reverb and EQ -> reverb, on clips made here.

    python demos/demo.py                      # writes demo_out/: input clips, outputs, settings, summary
    python demos/demo.py --device cuda --preset default
    python demos/demo.py --clap-ckpt path/to/630k-audioset-best.pt

Needs nothing downloaded except the CLAP checkpoint (and roberta-base tokenizer files), fetched once on
first use. Clips: synthesized music-like material, and speech from espeak-ng when it is installed.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
SR = 44100
# Two prompts per chain, from the paper's listener study (paper_prompts.tsv holds all 60).
DEMO_PROMPTS = {
    "eq": ["coming through an old telephone", "muffled"],
    "reverb": ["coming from a cathedral", "coming from a small and intimate sound booth"],
    "eq,reverb": ["warm and full-bodied", "like a distant radio broadcast with a warm lingering presence"],
}


def paper_prompts() -> list[dict]:
    with open(HERE / "paper_prompts.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def music_clip(seconds: float = 10.0, seed: int = 0) -> np.ndarray:
    """Stereo chord progression with plucked-string envelopes, a bass line and hi-hat noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    out = np.zeros((2, t.size))
    chords = [[220.0, 277.2, 329.6], [196.0, 246.9, 293.7], [174.6, 220.0, 261.6], [196.0, 246.9, 329.6]]
    beat = 0.5
    for k in range(int(seconds / beat)):
        start = int(k * beat * SR)
        n = min(t.size - start, int(1.5 * SR))
        tt = np.arange(n) / SR
        env = np.exp(-tt * 3.0)
        for j, f in enumerate(chords[(k // 4) % 4]):
            note = sum(np.sin(2 * np.pi * f * h * tt) / h ** 1.5 for h in range(1, 6)) * env * 0.08
            pan = 0.3 + 0.2 * j
            out[0, start : start + n] += note * (1 - pan)
            out[1, start : start + n] += note * pan
        bass_f = chords[(k // 4) % 4][0] / 2
        out[:, start : start + n] += 0.15 * np.sin(2 * np.pi * bass_f * tt) * np.exp(-tt * 5.0)
        m = min(t.size - start, int(0.05 * SR))
        out[:, start : start + m] += 0.05 * rng.standard_normal((2, m)) * np.exp(-np.arange(m) / SR * 80)
    return (0.8 * out / np.abs(out).max()).astype(np.float32)


def speech_clip() -> np.ndarray | None:
    """Speech from espeak-ng, or None when it is not installed."""
    if shutil.which("espeak-ng") is None:
        return None
    import soundfile as sf

    text = ("The quick brown fox jumps over the lazy dog. A sound engineer turns the knobs "
            "until the voice feels right for the scene.")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.T
    if sr != SR:  # espeak-ng speaks at 22.05 kHz; keep the demo's clips at one rate
        import torch

        from text2fx.clap.resample import Resampler

        audio = Resampler(SR)(torch.from_numpy(audio), sr).numpy()
    return (0.8 * audio / np.abs(audio).max()).astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    ap.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    ap.add_argument("--preset", choices=["auto", "default", "paper", "fast"], default="auto",
                    help="optimization recipe (default 'auto': 'default' on a GPU, 'fast' on a CPU)")
    ap.add_argument("--steps", type=int, help="override the preset's step count")
    ap.add_argument("--clap-ckpt", help="CLAP checkpoint (else $TEXT2FX_CLAP_CKPT, else downloaded once)")
    ap.add_argument("--tokenizer", help="roberta-base tokenizer folder (else $TEXT2FX_CLAP_TOKENIZER, else downloaded)")
    args = ap.parse_args()

    import soundfile as sf

    import text2fx
    from text2fx.errors import Text2FXError
    from text2fx.outputs import slug
    from text2fx.recipe import resolve_preset
    from text2fx.report import BYPASS_NOTE

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = {"music": music_clip()}
    speech = speech_clip()
    if speech is not None:
        clips["speech"] = speech
    else:
        print("espeak-ng not found: speech clip skipped (apt-get install espeak-ng to add it)")
    for name, audio in clips.items():
        sf.write(out / f"{name}.input.wav", audio.T, SR, subtype="PCM_16")

    try:
        engine = text2fx.Engine(checkpoint=args.clap_ckpt, tokenizer=args.tokenizer, device=args.device)
    except Text2FXError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    preset = resolve_preset(args.preset, engine.device)
    print(f"CLAP: {engine.embedder.name} on {engine.device}; preset '{preset}'")
    known = {(row["chain"], row["prompt"]) for row in paper_prompts()}
    missing = [(c, p) for c, ps in DEMO_PROMPTS.items() for p in ps if (c, p) not in known]
    if missing:
        raise SystemExit(f"demo prompts not in paper_prompts.tsv: {missing}")
    lines = ["clip\tchain\tprompt\tsimilarity_before\tsimilarity_after\toutput"]
    for clip_name, audio in clips.items():
        for chain, prompts in DEMO_PROMPTS.items():
            started = time.perf_counter()
            results = engine.apply(audio, SR, prompts, chain=chain, preset=preset, steps=args.steps)
            for r in results:
                stem = f"{clip_name}.{chain.replace(',', '+')}.{slug(r.prompt)}"
                r.save(out / f"{stem}.wav", subtype="PCM_16", overwrite=True)
                lines.append(f"{clip_name}\t{chain}\t{r.prompt}\t{r.similarity_before:.4f}\t"
                             f"{r.similarity_after:.4f}\t{stem}.wav")
                print(f"{clip_name:<7} {chain:<10} {r.prompt[:48]:<48} CLAP sim "
                      f"{r.similarity_before:+.3f} -> {r.similarity_after:+.3f}")
                if r.bypassed:
                    print(f"        {BYPASS_NOTE}")
            print(f"  ({time.perf_counter() - started:.1f} s for {len(prompts)} prompts, batched)")
    (out / "summary.tsv").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}/ (inputs, outputs, settings JSON, summary.tsv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
