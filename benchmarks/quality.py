"""Quality benchmarks: does the optimizer find good settings, how many steps does it need, and do the words
move the sound the right way.

    python benchmarks/quality.py known [--embedder features|clap-random|clap] [--chain eq --chain reverb ...]
                                       [--preset fast --preset default ...] [--draws 4] [--out DIR] [--quick]
    python benchmarks/quality.py ttq [--preset ...] [--long-steps 400] [--out DIR]
    python benchmarks/quality.py study --clap-ckpt 630k-audioset-best.pt [--tokenizer DIR] [--out DIR]
    python benchmarks/quality.py study --random-weights --prompts 4 --steps 10      # plumbing only

`known` (a known-answer test): a clip is processed with known settings p* (drawn uniformly from the middle
90 % of every parameter's range in the optimizer's unit space: log scale for frequencies, Q and decay times),
the target is the embedder's audio embedding of that processed clip, and the optimizer runs from its usual
starting points (`text2fx.optimize.optimize`, the engine's preset, seed and random streams) with the cosine
loss toward that embedding. Reported per item: the loss at the start (the unprocessed input) and at the end,
the Euclidean distance of the result's embedding to the target, and how far the found settings are from p*
in terms a person hears:
  * EQ: RMS and max difference (dB) of the two magnitude responses over 50 Hz-16 kHz (200 log-spaced
    points), computed here from the settings with the RBJ cookbook formulas and `scipy.signal.sosfreqz`
    (independent of `fx`); also the RMS with the mean difference removed ("shape"), since the feature
    embedder is level-invariant by design and cannot see a broadband gain.
  * reverb: RT60 error per octave band as |log2(found / true)| (octaves; 0.26 is a 20 % error), summarised
    as the median over the bands 125 Hz-8 kHz; wet/dry level error (dB) from the mix (equal-power law:
    wet/dry = tan(pi m / 200), limited to +-40 dB); wet level per band (band gain + wet/dry) error, median
    over 125 Hz-8 kHz.
Every metric is also given for the run's first starting point (what a random guess scores), for scale.
Embedders: `features` (`text2fx.features.FeatureEmbedder`, a meaningful geometry without training), and
CLAP: `clap-random` (the architecture with random weights: "random weights - plumbing, not quality") or
`clap` with `--clap-ckpt` (real weights). Clips: speech from `espeak-ng` when installed (skipped, saying
so, when not), and seeded music-like synthesis (harmonic notes with decays, a bass line, noise hits).

`ttq` (time to quality): for each preset and variant (as is; without restarts; without excerpts), on
known-answer items with the feature embedder: a long run of the preset's recipe without early stop records
the best loss so far at every step; the reference loss of an item is the lowest any variant reached. Steps to
quality = the first step whose best-so-far loss is within 5 % of the reduction from the unprocessed input's
loss to the reference (i.e. reached 95 % of it); seconds = steps x the measured seconds per step (note the
machine's load). Also: where the preset's own budget and early stop would end, and the share of the
reduction reached there. Clips are longer than three feature windows (`--window` s) so that excerpts matter.

`study` (the paper's listening-study prompts as an automatic benchmark): the 60 prompts of
`text2fx/data/paper_prompts.tsv` with their chains, over a set of clips, for the losses cosine, directional,
best and the `random` preset (random settings, no optimization: the paper's control). Per chain and loss:
the CLAP similarity gain (after - before, with the prompt as the template phrases it); retrieval (for each
output, the rank of its own prompt among the 60 by CLAP similarity of the output: R@1, R@5, median rank);
and acoustic movement for prompts with an expected direction (`DIRECTIONS`), as the share of outputs whose
measure moved the expected way between input and output. With `--random-weights` (a random CLAP from
`text2fx.testing`) every number is plumbing, not quality, and the tables say so.

All three are seeded and deterministic (on a CPU), write one JSON line per item to `OUT/<mode>.jsonl`, skip
items already there (resumable: an item is keyed by everything that defines it), and print the summary and
write it as Markdown (`OUT/<mode>.md`). `known --quick` is the CI guard: four items (the music clip, eq and
reverb, two draws each) on the feature embedder with preset fast and one torch thread, failing (exit 1)
when the median EQ shape error or final / starting loss exceeds `QUICK_LIMITS`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 48000
VERSION = 1  # part of every item's key: bump when a metric's definition changes
SPEECH_TEXT = ("The quick brown fox jumps over the lazy dog, while seven bright birds sing in the morning rain.")
# EQ curves are compared over this range (Hz), at this many log-spaced points.
EQ_RANGE_HZ, EQ_POINTS = (50.0, 16000.0), 200
# Reverb octave bands (of fx's 31.25 Hz ... 16 kHz) that the summaries use: 125 Hz ... 8 kHz.
REVERB_BANDS = range(2, 9)
WET_DRY_LIMIT_DB = 40.0
# Unit-space margin of the drawn p*: the middle 90 % of each range.
DRAW_MARGIN = 0.05
# The --quick guard's limits on the median over its items (feature embedder, preset fast, the 2 s music clip).
# Measured (benchmarks/RESULTS.md, "quality: known answer"): EQ shape RMS 1.79 dB (a random guess: 6.24) and
# final / starting loss 0.045 with one torch thread, 0.12 with two: the reverb items' optimization paths fork
# on float-level differences (as on a GPU), so the limits leave room for other platforms and stay far from
# what a broken optimizer scores (a loss ratio near 1, a random guess's EQ error). The reverb's setting errors
# are not guarded: they moved by 2-5 dB per item between those two runs.
QUICK_LIMITS = {"eq_shape_rms_db": 3.0, "loss_ratio": 0.3}
RANDOM_LABEL = "random weights - plumbing, not quality"


# --- clips ------------------------------------------------------------------------------------------------


def speech_clip(seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray | None:
    """Speech from espeak-ng (deterministic for a given espeak-ng version), mono `(samples,)` float32 at
    `sample_rate`, trimmed or repeated to `seconds`; None when espeak-ng is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    import soundfile as sf
    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-v", "en-us", "-s", "160", "-w", str(path), SPEECH_TEXT], check=True,
                       capture_output=True)
        audio, sr = sf.read(path, dtype="float64")
    g = math.gcd(int(sr), sample_rate)
    audio = resample_poly(audio, sample_rate // g, int(sr) // g)
    return _fit(audio, seconds, sample_rate)


def music_clip(seconds: float, seed: int = 0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Music-like synthesis, seeded: harmonic notes with decaying envelopes (a melody), a bass line and short
    noise hits, mono `(samples,)` float32 at `sample_rate`."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    out = np.zeros(n)
    beat = 0.25
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16])
    for k in range(int(seconds / beat)):
        start = int(k * beat * sample_rate)
        tt = t[: n - start]
        f0 = 220.0 * 2 ** (rng.choice(scale) / 12)
        env = np.exp(-tt / rng.uniform(0.15, 0.5)) * (1 - np.exp(-tt / 0.005))
        note = sum((0.6 ** h) * np.sin(2 * np.pi * f0 * (h + 1) * tt + rng.uniform(0, 2 * np.pi)) for h in range(8))
        out[start:] += 0.3 * env * note
        if k % 2 == 0:  # bass on every other beat
            fb = 55.0 * 2 ** (rng.choice(scale[:4]) / 12)
            out[start:] += 0.4 * np.exp(-tt / 0.4) * np.sin(2 * np.pi * fb * tt)
        if k % 4 == 2:  # a noise hit (snare-like)
            m = min(len(tt), int(0.15 * sample_rate))
            out[start : start + m] += 0.3 * rng.standard_normal(m) * np.exp(-tt[:m] / 0.04)
    return _fit(out, seconds, sample_rate)


def _fit(audio: np.ndarray, seconds: float, sample_rate: int) -> np.ndarray:
    n = int(seconds * sample_rate)
    audio = np.tile(audio, math.ceil(n / len(audio)))[:n]
    return (0.5 * audio / np.max(np.abs(audio))).astype(np.float32)


def clips(names: list[str], seconds: float) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        if name == "speech":
            audio = speech_clip(seconds)
            if audio is None:
                print("espeak-ng is not installed: skipping the speech clip (apt-get install espeak-ng)",
                      file=sys.stderr)
                continue
            out[name] = audio
        elif name.startswith("music"):
            out[name] = music_clip(seconds, seed=int(name[5:] or 0))
        else:
            raise SystemExit(f"unknown clip {name!r}: speech, music, music1, music2, ...")
    return out


# --- settings -> curves, independently of fx ---------------------------------------------------------------


def rbj_sos(params: dict, sample_rate: float) -> np.ndarray:
    """Second-order sections `(6, 6)` of the six-band EQ from its physical settings: the RBJ Audio EQ
    Cookbook formulas (low shelf, 4 peaking, high shelf; Q as the cookbook's Q), written out here."""
    sos = []
    for section, kind in zip(("low_shelf", "band0", "band1", "band2", "band3", "high_shelf"),
                             ("low_shelf",) + ("peaking",) * 4 + ("high_shelf",)):
        gain, freq, q = (params[f"{section}_{k}"] for k in ("gain_db", "cutoff_freq", "q_factor"))
        a = 10 ** (gain / 40)
        w0 = 2 * np.pi * min(freq, 0.46 * sample_rate) / sample_rate
        alpha, c = np.sin(w0) / (2 * q), np.cos(w0)
        if kind == "peaking":
            b = [1 + alpha * a, -2 * c, 1 - alpha * a]
            den = [1 + alpha / a, -2 * c, 1 - alpha / a]
        else:
            s = 1 if kind == "low_shelf" else -1  # the high shelf is the low shelf with cos w0 negated
            r = 2 * np.sqrt(a) * alpha
            b = [a * ((a + 1) - s * (a - 1) * c + r), s * 2 * a * ((a - 1) - s * (a + 1) * c),
                 a * ((a + 1) - s * (a - 1) * c - r)]
            den = [(a + 1) + s * (a - 1) * c + r, -s * 2 * ((a - 1) + s * (a + 1) * c), (a + 1) + s * (a - 1) * c - r]
        sos.append(np.array(b + den) / den[0])
    return np.array(sos)


def eq_curve_db(params: dict, sample_rate: float) -> np.ndarray:
    """The EQ's magnitude response (dB) at `EQ_POINTS` log-spaced frequencies over `EQ_RANGE_HZ`."""
    from scipy.signal import sosfreqz

    freqs = np.geomspace(*EQ_RANGE_HZ, EQ_POINTS)
    _, h = sosfreqz(rbj_sos(params, sample_rate), worN=freqs, fs=sample_rate)
    return 20 * np.log10(np.abs(h))


def wet_dry_db(mix_pct: float) -> float:
    """Wet-to-dry level ratio (dB) of the reverb's equal-power mix law, limited to +-`WET_DRY_LIMIT_DB`."""
    m = np.pi * mix_pct / 200
    with np.errstate(divide="ignore"):
        ratio = 20 * np.log10(np.sin(m)) - 20 * np.log10(np.cos(m))
    return float(np.clip(ratio, -WET_DRY_LIMIT_DB, WET_DRY_LIMIT_DB))


def setting_errors(true: list[dict], found: list[dict], sample_rate: float) -> dict:
    """Errors of `found` against `true` settings (one `{type, params}` per effect, physical units)."""
    out = {}
    for t, f in zip(true, found):
        tp, fp = t["params"], f["params"]
        if t["type"] == "eq":
            diff = eq_curve_db(fp, sample_rate) - eq_curve_db(tp, sample_rate)
            out.update(eq_rms_db=float(np.sqrt(np.mean(diff**2))), eq_max_db=float(np.max(np.abs(diff))),
                       eq_shape_rms_db=float(np.std(diff)))
        elif t["type"] == "reverb":
            rt = [abs(math.log2(fp[f"band{k}_rt60_s"] / tp[f"band{k}_rt60_s"])) for k in range(10)]
            wd_t, wd_f = wet_dry_db(tp["mix"]), wet_dry_db(fp["mix"])
            wet = [abs((fp[f"band{k}_gain_db"] + wd_f) - (tp[f"band{k}_gain_db"] + wd_t)) for k in range(10)]
            out.update(rt60_err_oct_bands=rt, rt60_err_oct=float(np.median([rt[k] for k in REVERB_BANDS])),
                       mix_err_db=abs(wd_f - wd_t), wet_band_err_db=float(np.median([wet[k] for k in REVERB_BANDS])))
    return out


# --- embedders ----------------------------------------------------------------------------------------------


def make_embedder(name: str, args, window_s: float):
    """`features` (window `window_s`), `clap-random`, or `clap` (`--clap-ckpt`)."""
    if name == "features":
        from text2fx.features import FeatureEmbedder

        return FeatureEmbedder(window_seconds=window_s)
    from text2fx.clap import ClapEmbedder

    if name == "clap-random":
        from text2fx.testing import random_clap_files

        checkpoint, tokenizer = random_clap_files(args.workdir)
        return ClapEmbedder(checkpoint, tokenizer, device="cpu")
    if name == "clap":
        return ClapEmbedder(args.clap_ckpt, args.tokenizer, device=args.device)
    raise SystemExit(f"unknown embedder {name!r}: features, clap-random, clap")


def embedder_label(name: str) -> str:
    return {"features": "features", "clap-random": f"CLAP ({RANDOM_LABEL})", "clap": "CLAP"}[name]


# --- results files ------------------------------------------------------------------------------------------


def item_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps({**spec, "v": VERSION}, sort_keys=True).encode()).hexdigest()[:16]


class Results:
    """One JSON object per line at `path`, keyed by `key`; `done(key)` for resuming, `add` appends and flushes."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by an interrupted run: redone
                    continue
                self.rows[row["key"]] = row

    def done(self, key: str) -> bool:
        return key in self.rows

    def add(self, row: dict) -> None:
        self.rows[row["key"]] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def write_markdown(path: Path, text: str) -> None:
    from text2fx.audio_io import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def med_max(values) -> tuple[float, float]:
    v = [x for x in values if x is not None]
    return (float(np.median(v)), float(np.max(v))) if v else (math.nan, math.nan)


# --- known answer -------------------------------------------------------------------------------------------


def draw_settings(chain, key: int, seed: int):
    """p* for one item: `(P,)` unit vector, uniform in the middle of every range, from its own seeded stream."""
    import torch

    rng = np.random.default_rng([seed, key])
    u = rng.uniform(DRAW_MARGIN, 1 - DRAW_MARGIN, chain.num_params)
    return torch.tensor(u, dtype=torch.float32)


def known_item(embedder, audio: np.ndarray, chain_spec: str, recipe, seed: int, key: int) -> dict:
    """Run one known-answer item (see the module docstring) and measure it."""
    import fx
    import torch

    from text2fx.optimize import optimize
    from text2fx.optimize.randomness import draw_randomness

    sr = SAMPLE_RATE
    chain = fx.Chain.from_spec(chain_spec, seed=seed)
    u_true = draw_settings(chain, key, seed)
    x = torch.from_numpy(audio)[None, None]  # (1, 1, samples)
    with torch.no_grad():
        processed = chain.process(x, sr, u_true[None])
    from text2fx.inputs import ArraySource, prepare

    # the windows the optimizer hears (the loudest of the unprocessed clip), and the target: the embedding of
    # the processed clip at those windows (their mean, normalized)
    prep = prepare(ArraySource(audio[None], sr), recipe.excerpts, embedder.window_samples / embedder.sample_rate)
    excerpts = torch.from_numpy(prep.excerpts)[None]
    with torch.no_grad():
        emb = embedder.embed_audio(processed.expand(len(prep.offsets), -1, -1), sr, prep.offsets)
        target = torch.nn.functional.normalize(emb.mean(0, keepdim=True), dim=-1)
    started = time.perf_counter()
    (outcome,) = optimize(chain, embedder, excerpts, sr, [0], target, target, recipe, seed, target_keys=[key])
    seconds = time.perf_counter() - started
    z0, _ = draw_randomness(chain.neutral_unit(), recipe.restarts, recipe.restarts * excerpts.shape[1],
                            excerpts.shape[-1], recipe, seed, key)
    u_start = torch.sigmoid(z0[0])
    with torch.no_grad():
        found = chain.process(excerpts[0], sr, outcome.params[None].expand(excerpts.shape[1], -1))
        found_emb = embedder.embed_audio(found, sr).mean(0)
        found_emb = torch.nn.functional.normalize(found_emb, dim=-1)
    true_settings = chain.to_dict(u_true, sr)["effects"]
    row = {
        "loss_start": 1.0 - outcome.similarity_before,
        "loss_final": outcome.loss_value,
        "distance": float((found_emb - target[0]).norm()),
        "bypassed": outcome.bypassed,
        "steps_run": outcome.steps_run,
        "seconds": seconds,
        "true": true_settings,
        "found": chain.to_dict(outcome.params, sr)["effects"],
        "errors": setting_errors(true_settings, chain.to_dict(outcome.params, sr)["effects"], sr),
        "errors_start": setting_errors(true_settings, chain.to_dict(u_start, sr)["effects"], sr),
    }
    return row


def run_known(args) -> int:
    from text2fx.recipe import PRESETS, Recipe

    out = Path(args.out)
    results = Results(out / "known.jsonl")
    seconds = args.seconds
    audio = clips(args.clips, seconds)
    chains = args.chain or ["eq", "reverb", "eq,reverb"]
    presets = args.preset or ["fast", "default"]
    embedders = args.embedder or ["features"]
    wanted = []
    for emb_name in embedders:
        embedder = None
        for preset in presets:
            changes = {"loss": "cosine"}
            if args.steps:
                changes["steps"] = args.steps
            recipe = Recipe.from_preset(preset, **changes)
            for clip_name, clip in audio.items():
                for chain_spec in chains:
                    for draw in range(args.draws):
                        spec = {"embedder": emb_name, "checkpoint": args.clap_ckpt if emb_name == "clap" else None,
                                "clip": clip_name, "seconds": seconds, "chain": chain_spec, "preset": preset,
                                "recipe": {k: getattr(recipe, k) for k in recipe.__dataclass_fields__},
                                "draw": draw, "seed": args.seed, "window": args.window}
                        key = item_key(spec)
                        wanted.append(key)
                        if results.done(key):
                            continue
                        if embedder is None:
                            embedder = make_embedder(emb_name, args, args.window or seconds)
                        draw_key = int(hashlib.sha256(f"{clip_name}/{chain_spec}/{draw}".encode()).hexdigest()[:8], 16)
                        row = known_item(embedder, clip, chain_spec, recipe, args.seed, draw_key)
                        results.add({"key": key, **spec, **row})
                        e = row["errors"]
                        print(f"{emb_name} {preset} {clip_name} {chain_spec} #{draw}: loss {row['loss_start']:.4f} -> "
                              f"{row['loss_final']:.4f}, " + ", ".join(f"{k} {v:.3g}" for k, v in e.items()
                                                                        if isinstance(v, float)) +
                              f"  ({row['seconds']:.1f} s, {row['steps_run']} steps)", flush=True)
    rows = [results.rows[k] for k in wanted if k in results.rows]
    text = known_summary(rows, PRESETS)
    print(text)
    write_markdown(out / ("known-quick.md" if args.quick else "known.md"), text + "\n")
    if args.quick:
        failed = []
        for metric, limit in QUICK_LIMITS.items():
            values = [r["loss_final"] / r["loss_start"] if metric == "loss_ratio" else r["errors"][metric]
                      for r in rows if metric == "loss_ratio" or metric in r["errors"]]
            if values and float(np.median(values)) > limit:
                failed.append(f"median {metric} {float(np.median(values)):.3g} > {limit}")
        if failed:
            print("known-answer guard FAILED: " + "; ".join(failed), file=sys.stderr)
            return 1
        print("known-answer guard passed: " + ", ".join(f"median {m} <= {v}" for m, v in QUICK_LIMITS.items()))
    return 0


KNOWN_METRICS = [("loss_start", "loss start"), ("loss_final", "loss end"), ("distance", "distance"),
                 ("eq_shape_rms_db", "EQ shape RMS dB"), ("eq_rms_db", "EQ RMS dB"), ("eq_max_db", "EQ max dB"),
                 ("rt60_err_oct", "RT60 err oct"), ("mix_err_db", "wet/dry err dB"),
                 ("wet_band_err_db", "wet band err dB")]


def known_summary(rows: list[dict], presets) -> str:
    """Markdown: per embedder, chain and preset, the median and worst (max) of every metric, with the random
    starting point's median in brackets."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        preset = r["preset"]
        if r["recipe"]["steps"] != presets[preset].steps:
            preset = f"{preset}, {r['recipe']['steps']} steps"
        groups.setdefault((r["embedder"], r["chain"], preset), []).append(r)
    parts = []
    for emb in sorted({g[0] for g in groups}):
        header = ["chain", "preset", "n", "bypassed"] + [label for _, label in KNOWN_METRICS]
        body = []
        for (e, chain, preset), items in sorted(groups.items()):
            if e != emb:
                continue
            cells = [chain, preset, len(items), sum(r["bypassed"] for r in items)]
            for metric, _ in KNOWN_METRICS:
                if metric in ("loss_start", "loss_final", "distance"):
                    values = [r[metric] for r in items]
                    start = None
                else:
                    values = [r["errors"].get(metric) for r in items]
                    start = [r["errors_start"].get(metric) for r in items]
                m, w = med_max(values)
                if math.isnan(m):
                    cells.append("-")
                    continue
                text = f"{m:.3g} / {w:.3g}"
                if start is not None:
                    text += f" ({med_max(start)[0]:.3g})"
                cells.append(text)
            body.append(cells)
        title = f"Known answer, embedder {embedder_label(emb)}: median / worst over items (random start's median)"
        parts.append(f"{title}\n\n{table(header, body)}")
    return "\n\n".join(parts)


# --- time to quality -----------------------------------------------------------------------------------------


def ttq_variants(presets: list[str]) -> list[tuple[str, str, dict]]:
    """(preset, variant label, recipe changes) for each preset: as is, and without restarts / excerpts where
    the preset has them; for `fast` also with 4 restarts and with half and twice its learning rate."""
    from text2fx.recipe import PRESETS

    out = []
    for name in presets:
        p = PRESETS[name]
        out.append((name, "as is", {}))
        if p.restarts > 1:
            out.append((name, "restarts 1", {"restarts": 1}))
        if p.excerpts > 1:
            out.append((name, "excerpts 1", {"excerpts": 1}))
        if name == "fast":  # the CPU preset: would restarts or another rate pay for themselves?
            out.append((name, "restarts 4", {"restarts": 4}))
            out += [(name, f"lr {p.lr * f:g}", {"lr": p.lr * f}) for f in (0.5, 2.0)]
    return out


def early_stop_step(histories: np.ndarray, patience: int | None, min_delta: float, check_every: int, steps: int) -> int:
    """Steps a run with this early stop would take, replayed from `(steps_run, candidates)` losses (the rule of
    `text2fx.optimize.state.LoopState.stalled`)."""
    if patience is None:
        return min(steps, len(histories))
    progress_loss = np.full(histories.shape[1], np.inf)
    progress_step = np.zeros(histories.shape[1], dtype=int)
    for i in range(min(steps, len(histories))):
        better = histories[i] < progress_loss - min_delta
        progress_loss = np.where(better, histories[i], progress_loss)
        progress_step = np.where(better, i, progress_step)
        done = i + 1
        if (done % check_every == 0 or done == steps) and np.all(i - progress_step >= patience):
            return done
    return min(steps, len(histories))


def run_ttq(args) -> int:
    import fx
    import torch

    from text2fx.inputs import ArraySource, prepare
    from text2fx.optimize import optimize
    from text2fx.recipe import PRESETS, Recipe

    out = Path(args.out)
    results = Results(out / "ttq.jsonl")
    seconds = args.seconds
    audio = clips(args.clips, seconds)
    chains = args.chain or ["eq", "eq,reverb"]
    presets = args.preset or ["fast", "default", "paper"]
    embedder = None
    wanted = []
    for clip_name, clip in audio.items():
        for chain_spec in chains:
            for draw in range(args.draws):
                for preset, variant, changes in ttq_variants(presets):
                    if args.variant and variant not in args.variant:
                        continue
                    base = PRESETS[preset]
                    long_steps = max(args.long_steps, base.steps)
                    recipe = Recipe.from_preset(preset, loss="cosine", steps=long_steps, patience=None, **changes)
                    spec = {"clip": clip_name, "seconds": seconds, "chain": chain_spec, "draw": draw, "preset": preset,
                            "variant": variant, "recipe": {k: getattr(recipe, k) for k in recipe.__dataclass_fields__},
                            "seed": args.seed, "window": args.window}
                    key = item_key(spec)
                    wanted.append(key)
                    if results.done(key):
                        continue
                    if embedder is None:
                        embedder = make_embedder("features", args, args.window)
                    sr = SAMPLE_RATE
                    chain = fx.Chain.from_spec(chain_spec, seed=args.seed)
                    draw_key = int(hashlib.sha256(f"ttq/{clip_name}/{chain_spec}/{draw}".encode()).hexdigest()[:8], 16)
                    u_true = draw_settings(chain, draw_key, args.seed)
                    x = torch.from_numpy(clip)[None, None]
                    with torch.no_grad():
                        processed = chain.process(x, sr, u_true[None])
                    # the loudest windows of the unprocessed clip, and the target: the processed clip at the
                    # same windows (its embedding averaged), fixed for every variant of this item
                    prep = prepare(ArraySource(clip[None], sr), 3, args.window)
                    with torch.no_grad():
                        emb = embedder.embed_audio(processed.expand(len(prep.offsets), -1, -1), sr, prep.offsets)
                        target = torch.nn.functional.normalize(emb.mean(0, keepdim=True), dim=-1)
                    excerpts = torch.from_numpy(prep.excerpts[: recipe.excerpts])[None]
                    started = time.perf_counter()
                    (outcome,) = optimize(chain, embedder, excerpts, sr, [0], target, target, recipe, args.seed,
                                          target_keys=[draw_key])
                    elapsed = time.perf_counter() - started
                    # the loss of the unprocessed input against the 3-window target, the same for every variant
                    with torch.no_grad():
                        all_exc = torch.from_numpy(prep.excerpts)
                        neutral = torch.nn.functional.normalize(embedder.embed_audio(all_exc, sr).mean(0), dim=-1)
                        found = torch.nn.functional.normalize(embedder.embed_audio(
                            chain.process(all_exc, sr, outcome.candidate_params[None].expand(len(all_exc), -1)), sr
                        ).mean(0), dim=-1)
                    row = {"key": key, **spec, "histories": outcome.histories, "seconds": elapsed,
                           "seconds_per_step": elapsed / outcome.steps_run,
                           "loss_neutral": float(1 - (neutral * target[0]).sum()),
                           "loss_found_all_windows": float(1 - (found * target[0]).sum())}
                    results.add(row)
                    print(f"ttq {clip_name} {chain_spec} #{draw} {preset} ({variant}): "
                          f"{min(map(min, outcome.histories)):.4f} in {elapsed:.1f} s", flush=True)
    rows = [results.rows[k] for k in wanted if k in results.rows]
    text = ttq_summary(rows, PRESETS)
    print(text)
    write_markdown(out / "ttq.md", text + "\n")
    return 0


def ttq_summary(rows: list[dict], presets) -> str:
    items: dict[tuple, list[dict]] = {}
    for r in rows:
        items.setdefault((r["clip"], r["chain"], r["draw"]), []).append(r)
    per_variant: dict[tuple, dict[str, list]] = {}
    for runs in items.values():
        # the reference: the lowest loss any variant of this item reached (the long runs)
        ref = min(min(map(min, r["histories"])) for r in runs)
        start = runs[0]["loss_neutral"]
        if not start > ref:
            continue
        threshold = ref + 0.05 * (start - ref)
        for r in runs:
            h = np.array(r["histories"]).T  # (steps, candidates)
            best = np.minimum.accumulate(h.min(1))
            reached = np.nonzero(best <= threshold)[0]
            steps = int(reached[0]) + 1 if reached.size else None
            p = presets[r["preset"]]
            budget = p.steps
            end = early_stop_step(h, p.patience, p.min_delta, p.check_every, budget)
            share_at_end = float((start - best[end - 1]) / (start - ref))
            s = per_variant.setdefault((r["preset"], r["variant"], r["chain"]), {
                "steps": [], "seconds": [], "sps": [], "end": [], "share": [], "reached_in_budget": []})
            s["steps"].append(steps)
            s["sps"].append(r["seconds_per_step"])
            s["seconds"].append(None if steps is None else steps * r["seconds_per_step"])
            s["end"].append(end)
            s["share"].append(share_at_end)
            s["reached_in_budget"].append(steps is not None and steps <= end)
    header = ["preset", "variant", "chain", "items", "steps to 95 % (median / worst)", "s to 95 % (median)",
              "s/step", "reached (long run)", "preset's end step (median)", "share at preset's end (median / worst)",
              "reached within preset"]
    body = []
    for (preset, variant, chain), s in sorted(per_variant.items()):
        n = len(s["steps"])
        steps = [v for v in s["steps"] if v is not None]
        secs = [v for v in s["seconds"] if v is not None]
        body.append([preset, variant, chain, n,
                     f"{np.median(steps):.0f} / {max(steps)}" if steps else "-",
                     float(np.median(secs)) if secs else math.nan, float(np.median(s["sps"])),
                     f"{len(steps)}/{n}", float(np.median(s["end"])),
                     f"{np.median(s['share']):.3f} / {min(s['share']):.3f}",
                     f"{sum(s['reached_in_budget'])}/{n}"])
    note = ("Time to quality, feature embedder (known-answer items; reference = the lowest loss any variant "
            "reached in its long run; 'worst' steps are among items that reached it)")
    return f"{note}\n\n{table(header, body)}"


# --- the paper's study -------------------------------------------------------------------------------------

# Prompts with an expected acoustic direction: (words, measure, +1 up / -1 down). A prompt counts under every
# rule one of whose words it contains (as a whole word).
DIRECTIONS = [
    (("bright", "tinny", "shrill", "crisp"), "centroid", +1),
    (("dark", "muffled", "underwater", "blanket", "deep", "bassy", "boomy"), "centroid", -1),
    (("telephone", "radio"), "telephone_share", +1),
    (("cathedral", "hall", "hallway", "cavernous", "cavern", "reverberant", "echoey", "echo", "canyon", "spacious"),
     "decay", +1),
    (("dry", "booth"), "decay", -1),
    (("compressed", "punchy"), "crest", -1),
]
MEASURES = {
    "centroid": "spectral centroid (Hz) of the whole clip, 50 Hz-16 kHz",
    "telephone_share": "share of the energy in 300-3400 Hz",
    "decay": "decay time: 60 dB over the fall-weighted mean fall rate (dB/s) of the 20 ms frame level over 200 ms (s)",
    "crest": "crest factor: peak / RMS (dB)",
}


def acoustic_measures(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """The study's acoustic measures of mono `audio` `(samples,)` (numpy; independent of the embedders)."""
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / sample_rate)
    band = (freqs >= 50) & (freqs <= 16000)
    centroid = float((spectrum[band] * freqs[band]).sum() / spectrum[band].sum())
    phone = (freqs >= 300) & (freqs <= 3400)
    share = float(spectrum[phone].sum() / spectrum[band].sum())
    hop = int(0.01 * sample_rate)
    frame = 2 * hop
    frames = np.lib.stride_tricks.sliding_window_view(audio, frame)[::hop]
    energy = (frames**2).mean(1)
    level = 10 * np.log10(energy + energy.mean() * 1e-5)
    lag = 20  # 200 ms: long enough that a decay's fall outweighs the level's frame-to-frame jitter
    fall = np.maximum(level[:-lag] - level[lag:], 0)
    rate = (fall**2).sum() / max(fall.sum(), 1e-9) / (lag * hop / sample_rate)  # dB/s
    crest = float(20 * np.log10(np.abs(audio).max() / np.sqrt(np.mean(audio**2))))
    return {"centroid": centroid, "telephone_share": share, "decay": float(60.0 / max(rate, 1e-6)), "crest": crest}


def expected_moves(prompt: str) -> list[tuple[str, int]]:
    words = set(prompt.lower().replace(",", " ").replace("-", " ").split())
    return [(measure, sign) for keys, measure, sign in DIRECTIONS if words & set(keys)]


def study_prompts() -> list[tuple[str, str]]:
    lines = (ROOT / "text2fx" / "data" / "paper_prompts.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [(line.split("\t")[0], line.split("\t")[2]) for line in lines if line.strip()]


def run_study(args) -> int:
    import torch

    from text2fx.engine import Engine
    from text2fx.options import DEFAULT_TEMPLATE

    out = Path(args.out)
    results = Results(out / "study.jsonl")
    all_prompts = study_prompts()
    names = [p for _, p in all_prompts]
    chosen = all_prompts if not args.prompts else _spread(all_prompts, args.prompts)
    audio = clips(args.clips, args.seconds)
    losses = args.loss or ["cosine", "directional", "best", "random"]
    if args.random_weights:
        from text2fx.testing import random_clap_files

        checkpoint, tokenizer = random_clap_files(args.workdir)
        model = f"random:{checkpoint.name}"
    else:
        if not args.clap_ckpt:
            raise SystemExit("study needs --clap-ckpt PATH (real weights) or --random-weights (plumbing only)")
        checkpoint, tokenizer, model = args.clap_ckpt, args.tokenizer, Path(args.clap_ckpt).name
    engine = None
    text_emb = None
    wanted = []
    for clip_name, clip in audio.items():
        for mode in losses:
            preset = "random" if mode == "random" else args.preset
            by_chain: dict[str, list[str]] = {}
            for chain_spec, prompt in chosen:
                by_chain.setdefault(chain_spec, []).append(prompt)
            for chain_spec, prompts in by_chain.items():
                specs = {p: {"clip": clip_name, "seconds": args.seconds, "model": model, "chain": chain_spec,
                             "prompt": p, "mode": mode, "preset": preset, "steps": args.steps, "seed": args.seed}
                         for p in prompts}
                todo = [p for p in prompts if not results.done(item_key(specs[p]))]
                wanted += [item_key(specs[p]) for p in prompts]
                if not todo:
                    continue
                if engine is None:
                    engine = Engine(checkpoint=checkpoint, tokenizer=tokenizer, device=args.device)
                    with torch.no_grad():
                        text_emb = engine.embedder.embed_text([DEFAULT_TEMPLATE.format(prompt=p) for p in names]).cpu()
                changes = {} if mode == "random" else {"loss": mode}
                if args.steps and mode != "random":
                    changes["steps"] = args.steps
                started = time.perf_counter()
                outputs = engine.apply(clip, SAMPLE_RATE, todo, chain=chain_spec, preset=preset, seed=args.seed,
                                       keep_length=True, **changes)
                elapsed = time.perf_counter() - started
                outputs = outputs if isinstance(outputs, list) else [outputs]
                with torch.no_grad():
                    x = torch.from_numpy(clip)[None, None]
                    before = engine.embedder.embed_audio(x.to(engine.device), SAMPLE_RATE).cpu()[0]
                    after = engine.embedder.embed_audio(torch.from_numpy(np.stack([r.audio for r in outputs])).to(
                        engine.device), SAMPLE_RATE).cpu()
                m_in = acoustic_measures(clip, SAMPLE_RATE)
                for prompt, result, emb in zip(todo, outputs, after):
                    own = names.index(prompt)
                    sims = (text_emb @ emb).numpy()
                    rank = int((sims > sims[own]).sum()) + 1
                    m_out = acoustic_measures(result.audio.mean(0), SAMPLE_RATE)
                    moves = [{"measure": m, "expected": s, "before": m_in[m], "after": m_out[m],
                              "right_way": bool((m_out[m] - m_in[m]) * s > 0)} for m, s in expected_moves(prompt)]
                    row = {"key": item_key(specs[prompt]), **specs[prompt],
                           "similarity_before": float(text_emb[own] @ before),
                           "similarity_after": float(sims[own]), "rank": rank, "bypassed": result.bypassed,
                           "moves": moves, "params": result.params, "seconds": elapsed / len(todo)}
                    results.add(row)
                print(f"study {clip_name} {mode} {chain_spec}: {len(todo)} prompts in {elapsed:.1f} s", flush=True)
    rows = [results.rows[k] for k in wanted if k in results.rows]
    text = study_summary(rows, args.random_weights)
    print(text)
    write_markdown(out / "study.md", text + "\n")
    return 0


def _spread(items: list, n: int) -> list:
    """`n` items spread evenly over the list (a deterministic subset covering every chain and category)."""
    idx = sorted({round(i * (len(items) - 1) / max(n - 1, 1)) for i in range(n)})
    return [items[i] for i in idx]


def study_summary(rows: list[dict], random_weights: bool) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["chain"], r["mode"]), []).append(r)
    header = ["chain", "loss", "outputs", "bypassed", "similarity gain (median)", "R@1", "R@5", "median rank",
              "moved the right way"]
    body = []
    for (chain, mode), items in sorted(groups.items()):
        ranks = np.array([r["rank"] for r in items])
        gains = [r["similarity_after"] - r["similarity_before"] for r in items]
        moves = [m["right_way"] for r in items for m in r["moves"]]
        body.append([chain, "random (control)" if mode == "random" else mode, len(items),
                     sum(r["bypassed"] for r in items), float(np.median(gains)), float(np.mean(ranks <= 1)),
                     float(np.mean(ranks <= 5)), float(np.median(ranks)),
                     f"{sum(moves)}/{len(moves)}" if moves else "-"])
    label = f" ({RANDOM_LABEL})" if random_weights else ""
    note = (f"Paper study{label}: rank of each output's own prompt among the 60 by CLAP similarity; movement = "
            f"outputs whose measure moved the expected way (see DIRECTIONS)")
    return f"{note}\n\n{table(header, body)}"


# --- command line -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["known", "ttq", "study"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "quality_out"), help="results folder")
    ap.add_argument("--embedder", action="append", choices=["features", "clap-random", "clap"],
                    help="known: embedders (repeatable; default features)")
    ap.add_argument("--chain", action="append", help="chains (repeatable), e.g. --chain eq --chain eq,reverb")
    ap.add_argument("--preset", action="append", help="presets (repeatable); study: the one preset optimized with")
    ap.add_argument("--loss", action="append", choices=["cosine", "directional", "best", "random"],
                    help="study: losses (repeatable; default all four, random = the random-settings control)")
    ap.add_argument("--clips", default="speech,music", help="comma-separated: speech, music, music1, ...")
    ap.add_argument("--seconds", type=float, default=None, help="clip length (default: known 3, ttq 9, study 10)")
    ap.add_argument("--window", type=float, default=None,
                    help="feature embedder window, s (default: known the clip length, ttq 3)")
    ap.add_argument("--draws", type=int, default=None, help="settings p* drawn per clip and chain (default: 4; ttq 1)")
    ap.add_argument("--steps", type=int, help="override the presets' step count (few steps for CLAP on a CPU)")
    ap.add_argument("--long-steps", type=int, default=400, help="ttq: steps of the long runs (at least the preset's)")
    ap.add_argument("--variant", action="append", help="ttq: only these variants (repeatable), e.g. 'as is', 'lr 0.08'")
    ap.add_argument("--prompts", type=int, help="study: a subset of this many prompts, spread over the 60")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clap-ckpt", help="real CLAP checkpoint (embedder clap, study)")
    ap.add_argument("--tokenizer", help="roberta-base tokenizer folder for --clap-ckpt")
    ap.add_argument("--random-weights", action="store_true", help="study: a random-weight CLAP (plumbing only)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "text2fx-bench"),
                    help="where the random-weight CLAP files are made once and reused")
    ap.add_argument("--quick", action="store_true", help="known: the CI guard (a handful of items, < 1 min on a CPU)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 on a shared machine)")
    args = ap.parse_args(argv)
    if args.quick and not args.threads:
        args.threads = 1  # 35 s of one core; two threads on a busy CI runner spin more than they gain
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.quick:
        if args.mode != "known":
            raise SystemExit("--quick is for known")
        args.embedder, args.preset = ["features"], ["fast"]
        args.chain = args.chain or ["eq", "reverb"]
        args.clips = "music" if args.clips == "speech,music" else args.clips
        args.draws = args.draws or 2
        args.seconds = args.seconds or 2.0
    args.clips = [c.strip() for c in args.clips.split(",") if c.strip()]
    defaults = {"known": (3.0, None, 4), "ttq": (9.0, 3.0, 1), "study": (10.0, None, 1)}[args.mode]
    args.seconds = args.seconds or defaults[0]
    args.window = args.window or defaults[1] or args.seconds
    args.draws = args.draws or defaults[2]
    if args.mode == "study" and not args.preset:
        args.preset = "auto"
    elif args.mode == "study":
        args.preset = args.preset[0]
    return {"known": run_known, "ttq": run_ttq, "study": run_study}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
