"""Which parts of an optimization step give the same gradient twice on a GPU, and how far two identical runs end up.

Computes each part's gradient twice from the same inputs and compares them bit for bit: the chain's gradient
to its parameters (EQ, reverb, both) and CLAP's gradient to the waveform, then runs the same 20-step
optimization twice. Each under PyTorch's default settings, with cuDNN restricted to deterministic algorithms,
and under `torch.use_deterministic_algorithms(True, warn_only=True)` (deterministic variants wherever PyTorch
has one). CLAP weights are random (the same architecture and kernels as the released ones).

    python benchmarks/cuda_determinism.py --workdir /tmp/t2fx-bench      # CUDA only
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch

import fx
from text2fx.clap import ClapEmbedder
from text2fx.optimize import Recipe, optimize
from text2fx.testing import random_clap_files

SR = 48000


@contextlib.contextmanager
def setting(name: str) -> Iterator[None]:
    if name == "cuDNN deterministic":
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
            yield
    elif name == "deterministic algorithms":
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            torch.use_deterministic_algorithms(False)
    else:
        yield


def compare(fn: Callable[[], torch.Tensor]) -> str:
    a, b = fn(), fn()
    if torch.equal(a, b):
        return "same"
    return f"differs ({(a - b).abs().max().item():.1e})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    # Before CUDA starts (importing torch does not start it): cuBLAS is only deterministic under
    # use_deterministic_algorithms with a fixed workspace, read when its first handle is made.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    tmp = tempfile.TemporaryDirectory()
    embedder = ClapEmbedder(*random_clap_files(args.workdir or tmp.name), device="cuda")
    g = torch.Generator().manual_seed(0)
    x = (0.1 * torch.randn(3, 2, 10 * SR, generator=g)).cuda()
    text = embedder.embed_text(["this sound is warm"])
    anchor = embedder.embed_text(["this sound is not warm"])

    def chain_grad(spec: str) -> Callable[[], torch.Tensor]:
        chain = fx.Chain.from_spec(spec, seed=0).to("cuda")
        z0 = torch.randn(3, chain.num_params, generator=g).cuda()

        def fn() -> torch.Tensor:
            z = z0.clone().requires_grad_(True)
            y = chain.process(x, SR, torch.sigmoid(z), validate=False)
            (grad,) = torch.autograd.grad((y * x).sum(), z)
            return grad

        return fn

    def clap_grad() -> torch.Tensor:
        wave = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(embedder.embed_audio(wave, SR)[:, :16].sum(), wave)
        return grad

    def run(cuda_graph: bool) -> Callable[[], torch.Tensor]:
        chain = fx.Chain.from_spec("eq,reverb", seed=0).to("cuda")
        recipe = Recipe(steps=20, lr=0.01, restarts=2, excerpts=1, patience=None)
        # The chosen candidate's parameters, not `params` (the neutral settings when the bypass wins).
        return lambda: optimize(chain, embedder, x[:1, None], SR, [0], text, anchor, recipe,
                                cuda_graph=cuda_graph)[0].candidate_params

    parts = [("EQ gradient", chain_grad("eq")), ("reverb gradient", chain_grad("reverb")),
             ("EQ -> reverb gradient", chain_grad("eq,reverb")), ("CLAP gradient to the waveform", clap_grad),
             ("20 optimizer steps, params", run(False)), ("20 steps as CUDA graphs, params", run(True))]
    names = ["default", "cuDNN deterministic", "deterministic algorithms"]
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}\n")
    print("| computed twice | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, fn in parts:
        cells = []
        for name in names:
            try:
                with setting(name):
                    cells.append(compare(fn))
            except RuntimeError as exc:
                cells.append(f"error: {(str(exc).strip().splitlines() or ['?'])[0][:80]}")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
