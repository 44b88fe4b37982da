"""End-to-end speed: the paper's code path (rebuilt here as the baseline) vs the Text2FX engine.

One synthetic 10 s stereo 48 kHz clip, chain EQ -> reverb, cosine loss, Adam lr 0.01, random init.

(a) Baseline, as the paper's code runs it: mono downmix; each step a random circular shift (torch.roll),
    dasp-pytorch `ParametricEQ` then `NoiseShapedReverb` through `process_normalized(x, sigmoid(params))`,
    laion-clap `CLAP_Module.get_audio_embedding_from_data(x, use_tensor=True)`, `1 - cos` to the text
    embedding, backward, Adam step, `loss.item()` for the progress bar; batch 1.
(b) The engine (`Engine.apply`, preset "paper": 600 steps, lr 0.01, random init, cosine loss), stereo, on
    the same clip and the same random-weight CLAP checkpoint.
(c) The engine with 16 prompts in one batch.
On a GPU (default --modes eager,graph), (b) and (c) are measured twice: plain, then replaying each step as a CUDA
graph. Modes ending in -bf16 run CLAP's audio branch in bfloat16 autocast (`precision="bfloat16"`).

Times go through `timing.py`: the baseline's step is a median over timed steps after a warm-up step; the
engine's step time comes from two run lengths, after a warm-up run. Time-to-result excludes model loading
(reported separately, after an untimed first load so both paths find libraries imported and the checkpoint in
the page cache; laion-clap's time includes importing its own package) and includes rendering the whole clip.
Where a full run would take too long (the CPU), time-to-result is extrapolated as (time of a short run) +
(remaining steps x per-step time) and marked "est.".
CLAP weights are random (speed does not depend on them): nothing here measures quality.

    python benchmarks/e2e_speed.py --device cpu     # long on a small CPU (the baseline's reverb is slow)
    python benchmarks/e2e_speed.py --device cuda    # real 600-step runs, plain steps and CUDA graphs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from timing import timed, wall_ms

SR = 48000
MODE_NAMES = {
    "eager": "Text2FX engine",
    "graph": "engine, CUDA graphs",
    "eager-bf16": "engine, bf16",
    "graph-bf16": "engine, CUDA graphs, bf16",
}
PROMPTS = [
    "warm and bright", "tinny", "muffled", "coming through an old telephone", "coming from a cathedral",
    "dry", "metallic", "cold", "bassy", "ethereal", "spacious", "harsh", "crisp", "deep", "echoey", "mellow",
]


def clip(seconds: float = 10.0) -> np.ndarray:
    """Stereo test material: decaying harmonic notes plus noise bursts, 48 kHz."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    out = np.zeros((2, t.size))
    for k, f in enumerate([220.0, 277.2, 329.6, 196.0, 246.9, 293.7, 174.6, 261.6] * 3):
        start = int(k * 0.4 * SR)
        if start >= t.size:
            break
        n = min(t.size - start, SR)
        tt = np.arange(n) / SR
        note = sum(np.sin(2 * np.pi * f * h * tt) / h for h in range(1, 5)) * np.exp(-3 * tt)
        out[0, start : start + n] += 0.6 * note
        out[1, start : start + n] += 0.4 * note
    out += 0.02 * rng.standard_normal(out.shape)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def baseline_step_s(module, audio: np.ndarray, text_emb: torch.Tensor, steps: int, device) -> float:
    """Run the paper's loop for one warm-up step and `steps` timed ones; returns the median step time (s)."""
    import dasp_pytorch

    eq, reverb = dasp_pytorch.ParametricEQ(sample_rate=SR), dasp_pytorch.NoiseShapedReverb(sample_rate=SR)
    x = torch.from_numpy(audio).mean(0, keepdim=True)[None].to(device)  # (1, 1, samples): mono, as the paper
    params = torch.nn.Parameter(torch.randn(1, eq.num_params + reverb.num_params, device=device))
    optimizer = torch.optim.Adam([params], lr=0.01)

    def step() -> None:
        shift = int(torch.randint(0, x.shape[-1], (1,)))
        rolled = torch.roll(x, shifts=shift, dims=-1)
        p = torch.sigmoid(params)
        y = eq.process_normalized(rolled, p[:, : eq.num_params])
        y = reverb.process_normalized(y, p[:, eq.num_params :])
        emb = module.get_audio_embedding_from_data(y[:, 0, :], use_tensor=True)
        loss = 1 - F.cosine_similarity(emb, text_emb, dim=-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()

    return wall_ms(step, steps, device=device) / 1000


def say(message: str) -> None:
    """Progress as it happens (stderr, unbuffered): a run cut short still shows what it measured."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--baseline-steps", type=int, help="timed baseline steps (default: 2 on CPU, 20 on GPU)")
    ap.add_argument("--short", type=int, help="steps of the short engine runs (default: 3 on CPU, 50 on GPU)")
    ap.add_argument("--full", action="store_true", help="run the engine's 600 steps for real (default on GPU)")
    ap.add_argument("--fast-preset", action="store_true",
                    help="also run the 'fast' preset to the end (default on CPU: the CPU target)")
    ap.add_argument("--workdir", type=Path, help="keep the random checkpoint here between runs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--modes",
                    help="engine modes to measure, comma-separated: eager (plain steps, Engine(cuda_graphs=False)), "
                         "graph (CUDA graph replay, the engine's default on a GPU), and either with '-bf16' "
                         "(CLAP's audio branch in bfloat16 autocast, precision='bfloat16'); default: eager on a "
                         "CPU, eager,graph on a GPU")
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.modes = args.modes or ("eager,graph" if gpu else "eager")
    if not set(args.modes.split(",")) <= set(MODE_NAMES) or ("graph" in args.modes and not gpu):
        ap.error(f"--modes takes {', '.join(MODE_NAMES)} (graph needs --device cuda)")
    full = args.full or gpu
    baseline_n = args.baseline_steps or (20 if gpu else 2)
    short = args.short or (50 if gpu else 3)
    fast_preset = args.fast_preset or not gpu

    import text2fx
    from text2fx.clap import ClapEmbedder
    from text2fx.testing import laion_reference_module, random_clap_files

    tmp = tempfile.TemporaryDirectory()
    checkpoint, tokenizer = random_clap_files(args.workdir or tmp.name)
    audio = clip()
    results: dict = {"device": str(device), "torch": torch.__version__}
    if gpu:
        results["gpu"] = torch.cuda.get_device_name(device)

    # Untimed first load: imports torch/transformers and pages the checkpoint in, costs both paths share.
    ClapEmbedder(checkpoint, tokenizer, device=device)
    ours, results["load_engine_s"] = timed(lambda: ClapEmbedder(checkpoint, tokenizer, device=device), device)
    bf16 = None
    if "bf16" in args.modes:
        bf16 = ClapEmbedder(checkpoint, tokenizer, device=device, precision="bfloat16")
    module, results["load_baseline_s"] = timed(lambda: laion_reference_module(checkpoint, tokenizer, str(device)),
                                               device)
    say(f"model load: engine {results['load_engine_s']:.2f} s, laion-clap {results['load_baseline_s']:.2f} s")

    try:
        text_emb = torch.as_tensor(module.get_text_embedding(["this sound is warm and bright"], use_tensor=True))
        torch.manual_seed(0)
        results["baseline_step_s"] = baseline_step_s(module, audio, text_emb.to(device).detach(), baseline_n, device)
    except Exception as exc:  # keep the engine's numbers even if the old code path breaks on this machine
        say(f"baseline failed: {exc!r}")
        results["baseline_step_s"] = float("nan")
    results["baseline_result_s"] = results["baseline_step_s"] * 600  # its loop has no fixed costs to speak of
    say(f"baseline step: {1000 * results['baseline_step_s']:.1f} ms")
    del module

    def apply(engine, prompts, steps, preset="paper"):
        return timed(lambda: engine.apply(audio, SR, prompts, chain="eq,reverb", preset=preset, steps=steps), device)

    def step_time(engine, prompts) -> tuple[float, float]:
        """Per-step time from two run lengths (fixed costs cancel: input analysis, a graph's capture,
        rendering), and the shorter run's time."""
        _, t_short = apply(engine, prompts, short)
        _, t_longer = apply(engine, prompts, 2 * short)
        return (t_longer - t_short) / short, t_short

    # In the order given (eager first by default): numbers already measured are printed as they come.
    modes = args.modes.split(",")
    for mode in modes:
        embedder = bf16 if mode.endswith("-bf16") else ours
        engine = text2fx.Engine(embedder, cuda_graphs=mode.startswith("graph"))
        apply(engine, "warm and bright", 2)  # warm-up: caches, allocator, kernels
        step, t_short = step_time(engine, "warm and bright")
        results[f"{mode}_step_s"] = step
        if full:
            _, results[f"{mode}_result_s"] = apply(engine, "warm and bright", 600)
        else:
            results[f"{mode}_result_s"] = t_short + (600 - short) * step
        say(f"engine ({mode}): step {1000 * step:.2f} ms, 600 steps {results[f'{mode}_result_s']:.2f} s")

        if gpu:
            torch.cuda.reset_peak_memory_stats(device)
        apply(engine, PROMPTS, 2)
        step, b_short = step_time(engine, PROMPTS)
        results[f"{mode}_batch16_step_s"] = step
        if full:
            _, results[f"{mode}_batch16_result_s"] = apply(engine, PROMPTS, 600)
        else:
            results[f"{mode}_batch16_result_s"] = b_short + (600 - short) * step
        if gpu:
            results[f"{mode}_batch16_peak_gpu_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        say(f"engine ({mode}), 16 prompts: step {1000 * step:.2f} ms, "
            f"600 steps {results[f'{mode}_batch16_result_s']:.2f} s")
        if args.json:  # after every mode: a run cut short still leaves what it measured
            args.json.write_text(json.dumps(results, indent=2))

    if fast_preset:
        r, results["fast_preset_s"] = apply(text2fx.Engine(ours), "warm and bright", None, preset="fast")
        results["fast_preset_steps_run"] = r.optimization["steps_run"]
        if bf16 is not None:
            r, results["fast_preset_bf16_s"] = apply(text2fx.Engine(bf16), "warm and bright", None, preset="fast")
            results["fast_preset_bf16_steps_run"] = r.optimization["steps_run"]

    est = "" if full else " (est.)"
    b = results["baseline_step_s"]
    rows = [
        ("model load (s)", results["load_baseline_s"], {m: results["load_engine_s"] for m in modes}, ""),
        ("one step, batch 1 (ms)", 1000 * b, {m: 1000 * results[f"{m}_step_s"] for m in modes}, ""),
        ("paper recipe, 600 steps (s)", results["baseline_result_s"],
         {m: results[f"{m}_result_s"] for m in modes}, est),
        ("16 prompts: one step (ms)", 16000 * b, {m: 1000 * results[f"{m}_batch16_step_s"] for m in modes}, ""),
        ("16 prompts: 600 steps (s)", 16 * results["baseline_result_s"],
         {m: results[f"{m}_batch16_result_s"] for m in modes}, est),
    ]
    names = MODE_NAMES
    print(f"\ndevice: {results.get('gpu', device)}  torch {torch.__version__}  "
          f"(baseline: {baseline_n} timed steps; engine: runs of {short} and {2 * short} steps)\n")
    print("| measure | paper's code path | " + " | ".join(names[m] for m in modes)
          + " | " + " | ".join(f"speed-up ({m})" for m in modes) + " |")
    print("|---|---:|" + "---:|" * (2 * len(modes)))
    for name, base, ours_v, mark in rows:
        base_mark = " (est.)" if "600" in name or "16 prompts" in name else ""
        cells = [f"{ours_v[m]:,.2f}{mark}" for m in modes] + [f"{base / ours_v[m]:,.1f}x" for m in modes]
        print(f"| {name} | {base:,.1f}{base_mark} | " + " | ".join(cells) + " |")
    for m in modes:
        print(f"\n{names[m]}: 16 prompts batched vs 1 prompt: "
              f"{results[f'{m}_batch16_step_s'] / results[f'{m}_step_s']:.2f}x per step, "
              f"{results[f'{m}_batch16_result_s'] / results[f'{m}_result_s']:.2f}x for 600 steps")
        if f"{m}_batch16_peak_gpu_gb" in results:
            print(f"{names[m]}: peak GPU memory, 16 prompts: {results[f'{m}_batch16_peak_gpu_gb']:.2f} GB")
    if fast_preset:
        print(f"'fast' preset, 10 s stereo clip, to the end: {results['fast_preset_s']:.1f} s "
              f"({results['fast_preset_steps_run']} steps)")
        if bf16 is not None:
            print(f"'fast' preset, bfloat16: {results['fast_preset_bf16_s']:.1f} s "
                  f"({results['fast_preset_bf16_steps_run']} steps)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
