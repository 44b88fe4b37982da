"""Per-instance optimization of an effect chain's parameters against a frozen audio-text embedder.

This is the Text2FX method: no training, just Adam on one chain's parameters so that the embedding of the
processed audio moves toward a text. Parameters live in an unconstrained space `z`; the chain sees
`sigmoid(z)` in [0, 1], which each parameter maps to its physical range.

Shapes used below: `N` targets (an input paired with a prompt), `K` candidates per target (restarts, times
two losses for `loss="best"`), `E` excerpts per input, `P` chain parameters, `D` embedding size.
Everything for all targets runs as one batch of `N * K * E` clips.

Modules: `layout` (which candidate optimizes what, and the losses of each), `randomness` (starting points
and time shifts), `state` (the loop's in-place device state and its step), `graph` (CUDA-graph capture),
`outcome` (choosing a candidate per target, and the bypass). The recipe lives in the torch-free
`text2fx.recipe` and is re-exported here.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from text2fx.embedder import Embedder
from text2fx.optimize.graph import GRAPH_MIN_STEPS
from text2fx.optimize.graph import capture as _capture
from text2fx.optimize.graph import use_cuda_graph as _use_cuda_graph
from text2fx.optimize.layout import Layout, Objective
from text2fx.optimize.outcome import Outcome, choose
from text2fx.optimize.randomness import draw_batch, draw_randomness, initial_logits, shifted
from text2fx.optimize.state import LoopState
from text2fx.recipe import INITS, LOSS_MODES, PRESETS, Recipe, resolve_preset

__all__ = [
    "GRAPH_MIN_STEPS", "INITS", "LOSS_MODES", "PRESETS", "Outcome", "ProgressFn", "Recipe", "draw_randomness",
    "initial_logits", "optimize", "resolve_preset", "shifted",
]

ProgressFn = Callable[[int, int, float, float], None]


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
    record_every: int | None = None,
    targets=None,
    start: torch.Tensor | None = None,
) -> list[Outcome]:
    """Optimize `chain`'s parameters for each target (an input excerpt set paired with a text).

    Each target's candidates are optimized together; the candidate with the lowest loss is chosen (for loss
    "best", the lowest sum of both losses). The chosen candidate is then compared with the unprocessed
    input, i.e. the chain's neutral settings (`chain.neutral_unit()`), which leave the audio unchanged:
    the bypass. The bypass wins when the candidate does not beat it, i.e. when the candidate's own loss is
    not lower than the bypass's loss of the same kind (cosine: `1 - similarity_before`; directional:
    exactly 1.0, the loss of no change), or when its `similarity_after` is below `similarity_before`. The
    outcome is then `bypassed=True`, `params` are the neutral settings, `similarity_after ==
    similarity_before` and `loss_value` is the bypass's loss. So `similarity_after >= similarity_before`
    always holds, except with `recipe.steps == 0` (the `random` preset): no step is taken and the starting
    point is the result as it is, never replaced by the bypass (the paper's random-settings control).

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
        progress: called as `progress(step, steps, loss, best_loss)` after the first step, every
            `recipe.check_every` steps and after the last, with the lowest loss over candidates at this step
            and so far.
        target_keys: one integer per target naming its random stream (with `seed`); the same seed and key
            give a target the same starting points and shifts in any batch. Default: 0, 1, 2, ...
        cuda_graph: replay each step as one CUDA graph (it removes the per-kernel launch cost that bounds
            a small batch's step time on a GPU). None (default): on CUDA, when the chain and the embedder
            declare themselves capturable (`graph_safe`) and the run has at least `GRAPH_MIN_STEPS` steps;
            if the capture fails the loop warns and runs without. True: always (CUDA only), failures
            raise. False: never. The kernels, and so the result, are the same either way (on a GPU, to the
            run-to-run float differences that GPU kernels have anyway).
        record_every: keep the embedding of each candidate's processed audio (mean over its excerpts) every
            this many steps, from the forward pass each step makes anyway, into a buffer allocated once
            (`Outcome.path`). None (default): nothing recorded. The losses and results are the same either way.
        targets: a `text2fx.targets.Targets` for the `N` targets, in place of `text_emb` / `anchor_emb` (which
            may then be None): a prompt and/or a reference recording, and texts to avoid. The similarities of
            the outcome are then to that target (see `Objective.similarity`), and the losses carry the avoid
            penalty, the bypass's too.

        start: `(P,)` unit settings to start from and to hear as "before" (refining a previous turn, see
            `text2fx.turns`): the input processed with them is the directional loss's reference and the
            bypass (then `params == start`); the first restart (of each loss kind) starts there, the others at
            perturbations around them. None (default): the chain's neutral settings, the unprocessed input.

    Returns:
        One `Outcome` per target.
    """
    device = excerpts.device
    n_inputs, n_exc, _, length = excerpts.shape
    layout = Layout.build(input_index, recipe.loss, recipe.restarts, n_exc, device)
    clips = excerpts.flatten(0, 1)
    # An embedder that only hears the channel mean lets the chain skip forming every channel's output.
    mono = {"mono": True} if getattr(embedder, "mixes_to_mono", False) else {}
    neutral = chain.neutral_unit() if start is None else start.to(device, torch.float32)
    with torch.no_grad():
        before = clips if start is None else chain.process(clips, sample_rate, neutral[None].expand(len(clips), -1), **mono)
        input_emb = embedder.embed_audio(before, sample_rate).view(n_inputs, n_exc, -1)
    objective = Objective(layout, input_emb, text_emb, anchor_emb, targets)

    keys = range(layout.n_targets) if target_keys is None else target_keys
    z0, shifts = draw_batch(chain.neutral_unit(), keys, layout.k, n_exc, length, recipe, seed, device, start)
    batch_clips = clips[layout.rows]

    def loss_of(u: torch.Tensor, step_t: torch.Tensor) -> torch.Tensor:
        batch = shifted(batch_clips, shifts.index_select(0, step_t)[0]) if shifts is not None else batch_clips
        # sigmoid keeps parameters finite and in range: skip the chain's check, which waits for the device.
        processed = chain.process(batch, sample_rate, u.repeat_interleave(n_exc, 0), validate=False, **mono)
        emb = embedder.embed_audio(processed, sample_rate)
        path_emb = emb.detach().view(layout.n_candidates, n_exc, -1).mean(1) if record_every else None
        return objective.own(*objective.losses(emb)), path_emb

    state = LoopState(z0, recipe.lr, recipe.steps, recipe.min_delta, record_every, input_emb.shape[-1])

    def step() -> None:
        state.step(loss_of)

    run_step = step
    if _use_cuda_graph(cuda_graph, chain, embedder, device, recipe.steps):
        run_step = _capture(step, state.reset, recipe.steps, required=bool(cuda_graph))

    steps_run = 0
    for i in range(recipe.steps):
        run_step()
        steps_run = i + 1
        checkpoint = steps_run % recipe.check_every == 0 or steps_run == recipe.steps
        if progress is not None and (checkpoint or steps_run == 1):
            progress(steps_run, recipe.steps, *state.losses_now())
        if checkpoint and recipe.patience is not None and state.stalled(i, recipe.patience):
            break
    del run_step  # frees a captured graph's memory pool

    with torch.no_grad():
        processed = chain.process(batch_clips, sample_rate, state.best_u.repeat_interleave(n_exc, 0), **mono)
        final_emb = embedder.embed_audio(processed, sample_rate)
        final = objective.losses(final_emb)
        unchanged = objective.unchanged()
        similarity = (objective.similarity(final_emb), objective.similarity_unchanged())
    return choose(layout, final, unchanged, state.best_u, neutral, state.history, state.best_step,
                  steps_run, state.path, record_every, similarity, bypass=recipe.steps > 0)
