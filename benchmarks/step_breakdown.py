"""Where one optimization step's time goes on a GPU, and what TF32 or bf16 would change.

On a 10 s stereo 48 kHz clip, chain EQ -> reverb, random-weight HTSAT-tiny CLAP, at batch 1 and 16, times
(medians of CUDA-event timings) the parts of a step: the chain forward+backward (its channel mean, as the
optimizer asks for it, and every channel's output), CLAP's audio embedding
forward+backward (with the engine's front end and with laion-clap's own, `reference_frontend=True`), and the
whole step as `text2fx.optimize` runs it; each part eagerly and as a replayed CUDA graph. Then runs the
optimizer in float32 twice, with TF32 matrix products, and with CLAP's `precision="bfloat16"`, and reports the
step time and how far the parameters move apart from the first float32 run (the second float32 run's distance
is the yardstick: GPU runs do not repeat bit for bit).

With --profile, also prints the CUDA operators that take the most time in a whole step at batch 1 and 16,
and the operators of a step that have no deterministic CUDA kernel (`torch.use_deterministic_algorithms`).

    python benchmarks/step_breakdown.py --workdir /tmp/t2fx-bench [--profile]     # CUDA only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch

import fx
from text2fx.clap import ClapEmbedder
from text2fx.optimize import Recipe, optimize
from text2fx.testing import random_clap_files
from timing import event_ms, graphed, sync, timed, warm_up

SR = 48000


def measured(time_ms: Callable[[], float]) -> str:
    """One table cell: a variant that fails (an op without bf16 kernels, say) costs its cell, not the table."""
    try:
        return f"{time_ms():.2f}"
    except RuntimeError as exc:
        print(f"  ({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]})", file=sys.stderr)
        return "failed"


def top_ops(fn: Callable[[], None], rows: int = 14) -> str:
    warm_up(fn, 3, "cuda")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fn()
        sync("cuda")
    return prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=60)


def unsupported_deterministic(fn: Callable[[], None]) -> list[str]:
    """Names of the ops in `fn` that PyTorch has no deterministic CUDA kernel for."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
            sync("cuda")
    finally:
        torch.use_deterministic_algorithms(False)
    found = [str(w.message).split(" does not have a deterministic")[0] for w in caught
             if "deterministic" in str(w.message)]
    return sorted(set(found))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--profile", action="store_true", help="also list the costliest and the nondeterministic ops")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    tmp = tempfile.TemporaryDirectory()
    files = random_clap_files(args.workdir or tmp.name)
    embedder = ClapEmbedder(*files, device="cuda")
    reference = ClapEmbedder(*files, device="cuda", reference_frontend=True)
    bf16 = ClapEmbedder(*files, device="cuda", precision="bfloat16")
    chain = fx.Chain.from_spec("eq,reverb", seed=0).to("cuda")
    g = torch.Generator().manual_seed(0)

    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}\n")
    profiles: dict[int, str] = {}
    nondeterministic: list[str] = []
    print("| part (ms) | batch | eager | CUDA graph |")
    print("|---|---:|---:|---:|")
    for batch in (1, 16):
        x = (0.1 * torch.randn(batch, 2, 10 * SR, generator=g)).cuda()
        z = torch.randn(batch, chain.num_params, generator=g).cuda().requires_grad_(True)
        wave = torch.randn(batch, 2, 10 * SR, generator=g).cuda().mul_(0.1).requires_grad_(True)

        def chain_step() -> None:
            # the channel mean, as the optimizer asks for it (CLAP hears nothing else)
            z.grad = None
            chain.process(x, SR, torch.sigmoid(z), validate=False, mono=True).square().mean().backward()

        def stereo_chain_step() -> None:
            z.grad = None
            chain.process(x, SR, torch.sigmoid(z), validate=False).square().mean().backward()

        def clap_step() -> None:
            wave.grad = None
            embedder.embed_audio(wave, SR).sum().backward()

        def reference_clap_step() -> None:
            wave.grad = None
            reference.embed_audio(wave, SR).sum().backward()

        def whole_step() -> None:
            z.grad = None
            embedder.embed_audio(chain.process(x, SR, torch.sigmoid(z), validate=False, mono=True), SR).sum().backward()

        def tf32_step() -> None:
            torch.backends.cuda.matmul.allow_tf32 = True
            whole_step()
            torch.backends.cuda.matmul.allow_tf32 = False

        def bf16_step() -> None:
            z.grad = None
            bf16.embed_audio(chain.process(x, SR, torch.sigmoid(z), validate=False, mono=True), SR).sum().backward()

        if args.profile:
            profiles[batch] = top_ops(whole_step)
            if batch == 1:
                nondeterministic = unsupported_deterministic(whole_step)
        for name, fn in (("EQ -> reverb, fwd+bwd", chain_step), ("EQ -> reverb, every channel", stereo_chain_step),
                         ("CLAP audio, fwd+bwd", clap_step),
                         ("CLAP audio, laion-clap front end", reference_clap_step),
                         ("both, fwd+bwd", whole_step), ("both, TF32 matmuls", tf32_step),
                         ("both, CLAP precision='bfloat16'", bf16_step)):
            eager, graph = measured(lambda: event_ms(fn)), measured(lambda: event_ms(graphed(fn)))
            print(f"| {name} | {batch} | {eager} | {graph} |", flush=True)

    for batch, table in profiles.items():
        print(f"\nwhole step, batch {batch}: CUDA time by operator\n{table}")
    if args.profile:
        print("\nops of a step without a deterministic CUDA kernel:", ", ".join(nondeterministic) or "none")

    clips = (0.1 * torch.randn(1, 1, 2, 10 * SR, generator=g)).cuda()
    text = embedder.embed_text(["this sound is warm and bright"])
    anchor = embedder.embed_text(["this sound is not warm and bright"])
    outcomes = {}
    with torch.no_grad():
        exact, low = embedder.embed_audio(clips[0], SR), bf16.embed_audio(clips[0], SR)
    print(f"\nbfloat16 vs float32 embedding: cosine {torch.nn.functional.cosine_similarity(exact, low).item():.6f}")
    # The same fp32 run twice first: how far two identical runs drift apart is the yardstick for TF32's and
    # bfloat16's drift.
    print("\n| variant | optimizer step, batch 1, CUDA graph (ms) | params after 100 steps: max diff |")
    print("|---|---:|---:|")
    for label, tf32, model in (("fp32", False, embedder), ("fp32, again", False, embedder), ("TF32", True, embedder),
                               ("CLAP precision='bfloat16'", False, bf16)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        run = lambda steps: optimize(chain, model, clips, SR, [0], text, anchor,  # noqa: E731
                                     Recipe(steps=steps, lr=0.01, restarts=1, excerpts=1, patience=None),
                                     cuda_graph=True)
        run(20)
        _, t50 = timed(lambda: run(50), "cuda")
        result, t100 = timed(lambda: run(100), "cuda")
        # the chosen candidate's parameters, not `params` (the neutral settings when the bypass wins)
        outcomes[label] = result[0].candidate_params
        step_ms = 1000 * (t100 - t50) / 50
        diff = (outcomes[label] - outcomes["fp32"]).abs().max().item()
        print(f"| {label} | {step_ms:.2f} | {diff:.2e} |", flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    return 0


if __name__ == "__main__":
    sys.exit(main())
