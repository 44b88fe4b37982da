"""How closely each export reproduces `text2fx render` (SNR in dB, render as the reference), on the demo's
synthesized music (stereo, panned) at -12 dB and on its mono-compatible (L = R) version.

    python benchmarks/export_agreement.py [--seconds 6]

Needs scipy and pedalboard (pip install -e ".[test]"). Deterministic; timings are not measured. The settings
are fixed, hand-written ones (not optimized: the point is the export, not the words).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.signal as ss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import text2fx  # noqa: E402
from demos.demo import SR, music_clip  # noqa: E402
from text2fx.export import export  # noqa: E402

EQ = {"low_shelf_gain_db": 4.0, "low_shelf_cutoff_freq": 150.0, "low_shelf_q_factor": 0.6,
      "band0_gain_db": -5.0, "band0_cutoff_freq": 400.0, "band0_q_factor": 1.5,
      "band1_gain_db": 6.0, "band1_cutoff_freq": 2500.0, "band1_q_factor": 3.0,
      "band2_gain_db": -3.0, "band2_cutoff_freq": 9000.0, "band2_q_factor": 0.8,
      "band3_gain_db": 0.0, "band3_cutoff_freq": 15000.0, "band3_q_factor": 1.0,
      "high_shelf_gain_db": -2.5, "high_shelf_cutoff_freq": 6000.0, "high_shelf_q_factor": 0.5}
REVERB = {**{f"band{k}_rt60_s": 1.2 - 0.08 * k for k in range(10)},
          **{f"band{k}_gain_db": -1.0 * k for k in range(10)}, "predelay_ms": 12.0, "mix": 30.0}
COMPRESSOR = {"threshold_db": -30.0, "ratio": 3.0, "attack_ms": 5.0, "release_ms": 150.0, "makeup_gain_db": 4.0,
              "knee_db": 6.0}
DISTORTION = {"drive_db": 12.0, "mix": 40.0}


def settings(*effects):
    return {"chain": ",".join(t for t, _ in effects), "seed": 0,
            "effects": [{"type": t, "params": p} for t, p in effects]}


def snr(ref, test) -> float:
    ref, test = np.asarray(ref, np.float64), np.asarray(test, np.float64)
    n = min(ref.shape[-1], test.shape[-1])
    ref, test = ref[..., :n], test[..., :n]
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((ref - test) ** 2)))


def padded(x, n):
    return np.concatenate([x, np.zeros((x.shape[0], n - x.shape[1]), np.float32)], axis=1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args()
    stereo = music_clip(args.seconds) * 0.25
    centred = np.repeat(stereo.mean(axis=0, keepdims=True), 2, axis=0)
    print(f"material: demo music clip, {args.seconds:g} s at {SR} Hz, peak {np.abs(stereo).max():.2f}")
    print("| export | chain | stereo | L = R |")
    print("|---|---|---|---|")

    eq_gain = settings(("eq", EQ), ("gain", {"gain_db": -2.0}))
    row = []
    for x in (stereo, centred):
        doc = export(eq_gain, "sos", sample_rate=SR)
        sos = np.array(doc["filters"][0]["sos"])
        row.append(snr(text2fx.render(x, SR, eq_gain, keep_length=True),
                       doc["gain"] * ss.sosfilt(sos, x.astype(np.float64), axis=-1)))
    print(f"| sos (scipy sosfilt) | eq,gain | {row[0]:.1f} | {row[1]:.1f} |")

    linear = settings(("eq", EQ), ("gain", {"gain_db": -2.0}), ("reverb", REVERB))
    ir4 = export(linear, "ir", sample_rate=SR, channels=4).audio
    ir2 = export(linear, "ir", sample_rate=SR, channels=2).audio
    for name, ir in (("ir, 4 channels (true stereo)", ir4), ("ir, 2 channels (L->L, R->R)", ir2)):
        row = []
        for x in (stereo, centred):
            ref = text2fx.render(x, SR, linear)
            if ir.shape[0] == 4:
                out = np.stack([ss.fftconvolve(x[0], ir[0]) + ss.fftconvolve(x[1], ir[2]),
                                ss.fftconvolve(x[0], ir[1]) + ss.fftconvolve(x[1], ir[3])])
            else:
                out = np.stack([ss.fftconvolve(x[c], ir[c]) for c in range(2)])
            row.append(snr(ref, out))
        print(f"| {name} (fftconvolve) | eq,gain,reverb | {row[0]:.1f} | {row[1]:.1f} |")

    for chain in (eq_gain, settings(("eq", EQ), ("reverb", REVERB)), settings(("compressor", COMPRESSOR)),
                  settings(("distortion", DISTORTION)), settings(("eq", EQ), ("reverb", REVERB), ("compressor", COMPRESSOR)),
                  settings(("eq", EQ), ("compressor", COMPRESSOR), ("distortion", DISTORTION), ("reverb", REVERB))):
        board = export(chain, "pedalboard", sample_rate=SR)
        row = []
        for x in (stereo, centred):
            ref = text2fx.render(x, SR, chain)
            row.append(snr(ref, board(padded(x, ref.shape[1]), SR)))
        print(f"| pedalboard | {chain['chain']} | {row[0]:.1f} | {row[1]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
