"""Per-instance optimization of an effect chain's parameters against a frozen audio-text embedder.

This is the Text2FX method: no training, just Adam on one chain's parameters so that the embedding of the
processed audio moves toward a text. Parameters live in an unconstrained space `z`; the chain sees
`sigmoid(z)` in [0, 1], which each parameter maps to its physical range.

Shapes used below: `N` targets (an input paired with a prompt), `K` candidates per target (restarts, times
two losses for `loss="best"`), `E` excerpts per input, `P` chain parameters, `D` embedding size.
Everything for all targets runs as one batch of `N * K * E` clips.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from text2fx.embedder import Embedder

LOSS_MODES = ("cosine", "directional", "best")
INITS = ("random", "neutral")

# Neutral settings can sit on the edge of a range (a dry reverb has mix 0 %), where sigmoid(z) would need
# z = -inf; start just inside so the parameter can still move.
_NEUTRAL_MARGIN = 0.02

# Below this many steps, capturing a CUDA graph (a few eager warm-up steps plus the capture) costs more than
# replaying it saves.
GRAPH_MIN_STEPS = 20
# Eager steps before a capture: lazily built state (Adam's moments, FFT plans, cached noise and kernels) must
# exist before the capture starts, or the graph would rebuild it on every replay.
_GRAPH_WARMUP_STEPS = 2


@dataclass(frozen=True)
class Recipe:
    """How to optimize. See `PRESETS` for the named ones.

    Attributes:
        steps: Adam steps (at most; `patience` can stop earlier).
        lr: Adam learning rate, in the unconstrained parameter space.
        loss: "cosine", "directional", or "best" (both losses optimized side by side, the better kept).
        init: "random" (sigmoid of N(0, 1) logits, as in the paper) or "neutral" (the first restart starts
            from the chain's neutral settings, further restarts at random ones).
        restarts: independent starting points optimized together; the best is kept.
        excerpts: for inputs longer than the embedder's window, how many windows (the loudest,
            non-overlapping) the loss is averaged over.
        time_shift: circularly shift each clip by a random amount every step (the paper's augmentation).
        patience: stop once no candidate has improved its best loss by more than `min_delta` for this many
            steps (None: never).
        min_delta: the smallest loss decrease that counts as progress for `patience`.
        check_every: how often (steps) the host looks at the losses: progress reports and the early stop.
            Between checks the loop never waits for the device.
    """

    steps: int = 300
    lr: float = 0.02
    loss: str = "cosine"
    init: str = "random"
    restarts: int = 4
    excerpts: int = 3
    time_shift: bool = True
    patience: int | None = 100
    min_delta: float = 1e-4
    check_every: int = 10

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.loss not in LOSS_MODES:
            raise ValueError(f"unknown loss '{self.loss}'; choose one of {', '.join(LOSS_MODES)}")
        if self.init not in INITS:
            raise ValueError(f"unknown init '{self.init}'; choose one of {', '.join(INITS)}")
        if self.restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {self.restarts}")
        if self.excerpts < 1:
            raise ValueError(f"excerpts must be >= 1, got {self.excerpts}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {self.check_every}")


def resolve_preset(preset: str, device: torch.device | str) -> str:
    """"auto" is "fast" on a CPU (where batched restarts cost their full price) and "default" elsewhere."""
    if preset == "auto":
        return "fast" if torch.device(device).type == "cpu" else "default"
    return preset


PRESETS: dict[str, Recipe] = {
    # The paper's recipe exactly: 600 Adam steps at lr 0.01 from random parameters, cosine loss, one run.
    "paper": Recipe(steps=600, lr=0.01, loss="cosine", init="random", restarts=1, excerpts=1, patience=None),
    # Batched restarts are nearly free on a GPU; a higher rate reaches the paper's loss in fewer steps.
    "default": Recipe(steps=300, lr=0.02, loss="cosine", init="random", restarts=4, excerpts=3, patience=100),
    # For CPUs: one run, few steps, early stop. A 10 s clip finishes in minutes on two cores.
    "fast": Recipe(steps=100, lr=0.04, loss="cosine", init="random", restarts=1, excerpts=1, patience=30),
}


@dataclass
class Outcome:
    """The result of optimizing one target.

    Attributes:
        params: `(P,)` best parameters in [0, 1] (unit space of the chain), on the CPU.
        loss: "cosine" or "directional": the objective of the chosen candidate.
        loss_value: that objective at `params`, without time shift, averaged over excerpts.
        history: the chosen candidate's loss at every step run (with the step's time shift).
        best_step: the step whose parameters were kept.
        steps_run: steps actually taken (fewer than asked after an early stop).
        similarity_before: cosine similarity of the input to the prompt (mean over excerpts).
        similarity_after: the same for the processed input.
        candidate: which of the target's candidates was kept (restarts first; for loss "best" the
            cosine restarts, then the directional ones).
        candidates: per candidate, its loss kind and final cosine/directional losses (for reports).
    """

    params: torch.Tensor
    loss: str
    loss_value: float
    history: list[float]
    best_step: int
    steps_run: int
    similarity_before: float
    similarity_after: float
    candidate: int
    candidates: list[dict]


ProgressFn = Callable[[int, int, float, float], None]


def shifted(clips: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Circularly shift each clip in time: `out[b, :, t] = clips[b, :, (t - shifts[b]) mod T]`.

    Args:
        clips: `(batch, channels, samples)`.
        shifts: `(batch,)` integer shifts in samples.
    """
    batch, channels, length = clips.shape
    index = (torch.arange(length, device=clips.device) - shifts[:, None]) % length
    return clips.gather(-1, index[:, None, :].expand(batch, channels, length))


def initial_logits(
    neutral_unit: torch.Tensor, count: int, init: str, generator: torch.Generator
) -> torch.Tensor:
    """`(count, P)` starting points in the unconstrained space (drawn on the CPU for reproducibility)."""
    z = torch.randn(count, neutral_unit.numel(), generator=generator)
    if init == "neutral":
        z[0] = torch.logit(neutral_unit.detach().cpu().float().clamp(_NEUTRAL_MARGIN, 1 - _NEUTRAL_MARGIN))
    return z


def draw_randomness(
    neutral_unit: torch.Tensor, candidates: int, clips: int, length: int, recipe: Recipe, seed: int, key: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Everything random about one target, drawn up front on the CPU from `(seed, key)`: starting logits
    `(candidates, P)` and, with time shifts, the shift of every clip at every step `(steps, clips)`.

    Each target draws from its own stream, so its result does not depend on what else shares the batch.
    """
    words = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, key & 0xFFFFFFFFFFFFFFFF]).generate_state(2)
    generator = torch.Generator().manual_seed((int(words[0]) << 31) ^ int(words[1]))
    z = initial_logits(neutral_unit, candidates, recipe.init, generator)
    shifts = torch.randint(0, length, (recipe.steps, clips), generator=generator) if recipe.time_shift else None
    return z, shifts


def _use_cuda_graph(cuda_graph: bool | None, chain, embedder: Embedder, device: torch.device, steps: int) -> bool:
    if cuda_graph is False:
        return False
    if device.type != "cuda":
        if cuda_graph:
            raise ValueError(f"cuda_graph=True needs a CUDA device, the audio is on {device}")
        return False
    if cuda_graph:
        return True
    safe = getattr(chain, "graph_safe", False) and getattr(embedder, "graph_safe", False)
    return bool(safe) and steps >= GRAPH_MIN_STEPS


def _capture(step: Callable[[], None], reset: Callable[[], None], steps: int, required: bool) -> Callable[[], None]:
    """Record `step` as a CUDA graph and return its replay; `reset` puts the loop state back afterwards, so the
    warm-up steps leave no trace. On failure, warn and return `step` itself (or raise if `required`)."""
    try:
        # Warm-up on a side stream, as PyTorch's whole-network capture recipe does.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(min(_GRAPH_WARMUP_STEPS, steps)):
                step()
        torch.cuda.current_stream().wait_stream(side)
        reset()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
    except RuntimeError as exc:
        # Out of memory is no capture problem: plain steps would need the same memory.
        if required or isinstance(exc, torch.OutOfMemoryError):
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        warnings.warn(f"CUDA graph capture failed, optimizing without it ({reason})", RuntimeWarning, stacklevel=3)
        torch.cuda.synchronize()
        reset()
        return step
    return graph.replay


def optimize(
    chain,
    embedder: Embedder,
    excerpts: torch.Tensor,
    sample_rate: int,
    input_index: Sequence[int],
    text_emb: torch.Tensor,
    anchor_emb: torch.Tensor,
    recipe: Recipe,
    seed: int = 0,
    progress: ProgressFn | None = None,
    target_keys: Sequence[int] | None = None,
    cuda_graph: bool | None = None,
) -> list[Outcome]:
    """Optimize `chain`'s parameters for each target (an input excerpt set paired with a text).

    Args:
        chain: an `fx.Chain` (anything with `num_params`, `neutral_unit()` and
            `process(audio, sample_rate, params_unit, validate=...)`, plus a `mono=True` option returning
            the channel mean when the embedder `mixes_to_mono`).
        embedder: the frozen audio-text model.
        excerpts: `(inputs, E, channels, samples)` clips at `sample_rate` Hz, on the embedder's device.
        input_index: for each of the `N` targets, which input it optimizes.
        text_emb, anchor_emb: `(N, D)` embeddings of each target's text and anchor text.
        recipe: steps, rate, loss, restarts, ...
        seed: seeds the starting points and the time shifts; with it a CPU run is bit-reproducible.
        progress: called as `progress(step, steps, loss, best_loss)` every `recipe.check_every` steps, with the
            lowest loss over candidates at this step and so far.
        target_keys: one integer per target naming its random stream (with `seed`); the same seed and key
            give a target the same starting points and shifts in any batch. Default: 0, 1, 2, ...
        cuda_graph: replay each step as one CUDA graph (it removes the per-kernel launch cost that bounds
            a small batch's step time on a GPU). None (default): on CUDA, when the chain and the embedder
            declare themselves capturable (`graph_safe`) and the run has at least `GRAPH_MIN_STEPS` steps;
            if the capture fails the loop warns and runs without. True: always (CUDA only), failures
            raise. False: never. The kernels, and so the result, are the same either way (on a GPU, to the
            run-to-run float differences that GPU kernels have anyway).

    Returns:
        One `Outcome` per target.
    """
    device = excerpts.device
    n_inputs, n_exc, channels, length = excerpts.shape
    n_targets = len(input_index)
    kinds = [0] * recipe.restarts if recipe.loss == "cosine" else [1] * recipe.restarts
    if recipe.loss == "best":
        kinds = [0] * recipe.restarts + [1] * recipe.restarts
    k = len(kinds)
    n_cand = n_targets * k

    cand_target = torch.arange(n_targets, device=device).repeat_interleave(k)
    cand_directional = torch.tensor(kinds, device=device, dtype=torch.bool).repeat(n_targets)
    cand_input = torch.as_tensor(list(input_index), device=device, dtype=torch.long)[cand_target]
    # Row of `excerpts.flatten(0, 1)` for every clip in the batch, candidate-major.
    rows = (cand_input[:, None] * n_exc + torch.arange(n_exc, device=device)).reshape(-1)
    clips = excerpts.flatten(0, 1)

    with torch.no_grad():
        input_emb = embedder.embed_audio(clips, sample_rate).view(n_inputs, n_exc, -1)
    cand_input_emb = input_emb[cand_input]  # (C, E, D)
    cand_text = text_emb.to(device)[cand_target][:, None, :]
    cand_anchor = anchor_emb.to(device)[cand_target][:, None, :]

    def losses(emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = emb.view(n_cand, n_exc, -1)
        cos = (1.0 - F.cosine_similarity(emb, cand_text, dim=-1)).mean(1)
        direction = (1.0 - F.cosine_similarity(emb - cand_input_emb, cand_text - cand_anchor, dim=-1)).mean(1)
        return cos, direction

    keys = range(n_targets) if target_keys is None else target_keys
    draws = [draw_randomness(chain.neutral_unit(), k, k * n_exc, length, recipe, seed, key) for key in keys]
    z0 = torch.cat([d[0] for d in draws]).to(device)
    shifts = torch.cat([d[1] for d in draws], dim=1).to(device) if recipe.time_shift else None
    batch_clips = clips[rows]
    # An embedder that only hears the channel mean lets the chain skip forming every channel's output.
    mono = {"mono": True} if getattr(embedder, "mixes_to_mono", False) else {}

    # The loop's whole state lives in fixed device tensors updated in place, and the step number is a device
    # tensor too: a step is then the same sequence of kernels every time, which a CUDA graph can replay.
    z = z0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=recipe.lr, capturable=device.type == "cuda")
    step_t = torch.zeros(1, dtype=torch.long, device=device)
    history = torch.empty(recipe.steps, n_cand, device=device)
    last_loss = torch.empty(n_cand, device=device)
    best_loss = torch.empty(n_cand, device=device)
    best_u = torch.empty_like(z0)
    best_step = torch.empty(n_cand, dtype=torch.long, device=device)
    progress_loss = torch.empty(n_cand, device=device)
    progress_step = torch.empty(n_cand, dtype=torch.long, device=device)

    @torch.no_grad()
    def reset() -> None:
        z.copy_(z0)
        for state in optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    value.zero_()
        step_t.zero_()
        best_loss.fill_(float("inf"))
        best_u.copy_(torch.sigmoid(z0))
        best_step.zero_()
        progress_loss.fill_(float("inf"))
        progress_step.zero_()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        u = torch.sigmoid(z)
        batch = shifted(batch_clips, shifts.index_select(0, step_t)[0]) if shifts is not None else batch_clips
        # sigmoid keeps parameters finite and in range: skip the chain's check, which waits for the device.
        processed = chain.process(batch, sample_rate, u.repeat_interleave(n_exc, 0), validate=False, **mono)
        cos, direction = losses(embedder.embed_audio(processed, sample_rate))
        loss = torch.where(cand_directional, direction, cos)
        with torch.no_grad():
            last_loss.copy_(loss)
            history.index_copy_(0, step_t, loss[None])
            better = loss < best_loss
            best_loss.copy_(torch.where(better, loss, best_loss))
            best_u.copy_(torch.where(better[:, None], u, best_u))
            best_step.copy_(torch.where(better, step_t, best_step))
            progressed = loss < progress_loss - recipe.min_delta
            progress_loss.copy_(torch.where(progressed, loss, progress_loss))
            progress_step.copy_(torch.where(progressed, step_t, progress_step))
        loss.sum().backward()
        optimizer.step()
        step_t.add_(1)

    reset()
    run_step = step
    if _use_cuda_graph(cuda_graph, chain, embedder, device, recipe.steps):
        run_step = _capture(step, reset, recipe.steps, required=bool(cuda_graph))

    steps_run = 0
    for i in range(recipe.steps):
        run_step()
        steps_run = i + 1
        if steps_run % recipe.check_every == 0 or steps_run == recipe.steps:
            if progress is not None:
                current, best = torch.stack([last_loss.min(), best_loss.min()]).tolist()
                progress(steps_run, recipe.steps, current, best)
            if recipe.patience is not None and bool((i - progress_step >= recipe.patience).all()):
                break
    del run_step  # frees a captured graph's memory pool

    with torch.no_grad():
        processed = chain.process(batch_clips, sample_rate, best_u.repeat_interleave(n_exc, 0), **mono)
        emb = embedder.embed_audio(processed, sample_rate)
        final_cos, final_dir = losses(emb)
        sim_before = F.cosine_similarity(input_emb[cand_input], cand_text, dim=-1).mean(1)

    # Within a target, a single-loss run keeps the candidate with the lowest loss; "best" compares candidates
    # of both losses on the sum of the two, since neither loss's values are on the other's scale.
    own = torch.where(cand_directional, final_dir, final_cos)
    score = (final_cos + final_dir) if recipe.loss == "best" else own
    chosen = score.view(n_targets, k).argmin(1) + torch.arange(n_targets, device=device) * k

    history_cpu = history[:steps_run].cpu()
    final_cos, final_dir, own = final_cos.cpu(), final_dir.cpu(), own.cpu()
    outcomes = []
    for t, c in enumerate(chosen.tolist()):
        outcomes.append(
            Outcome(
                params=best_u[c].detach().cpu(),
                loss="directional" if kinds[c % k] else "cosine",
                loss_value=float(own[c]),
                history=history_cpu[:, c].tolist(),
                best_step=int(best_step[c]),
                steps_run=steps_run,
                similarity_before=float(sim_before[c]),
                similarity_after=float(1.0 - final_cos[c]),
                candidate=c - t * k,
                candidates=[
                    {
                        "loss": "directional" if kinds[j] else "cosine",
                        "cosine_loss": float(final_cos[t * k + j]),
                        "directional_loss": float(final_dir[t * k + j]),
                    }
                    for j in range(k)
                ],
            )
        )
    return outcomes
