"""The Text2FX engine: inputs and prompts in, processed audio and readable settings out.

An `Engine` holds one loaded embedder (CLAP) and is reused across calls, e.g. by a DAW script:

    engine = Engine(device="cuda")
    result = engine.apply(audio, 48000, "warm and bright", chain="eq,reverb")
    result.audio, result.params, result.similarity_after

Several inputs and/or prompts given together are optimized together in one batch.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from text2fx import audio_io, rendering
from text2fx.embedder import Embedder
from text2fx.errors import InputError
from text2fx.excerpts import choose_offsets
from text2fx.optimize import PRESETS, Outcome, ProgressFn, Recipe, optimize, resolve_preset
from text2fx.result import Result, chain_params

DEFAULT_TEMPLATE = "this sound is {prompt}"
# The paper's code contrasts each prompt with its negation for the directional loss.
DEFAULT_ANCHOR = "this sound is not {prompt}"
# CLAP's audio window; an embedder states its own, this is for checking inputs before one is loaded.
CLAP_WINDOW_S = 10.0
# Peaks below this (-120 dBFS) count as digital silence.
_SILENCE = 1e-6
# Clips optimized together at most (see Engine).
DEFAULT_MAX_BATCH = 16


@dataclass
class Prepared:
    """An input ready for optimization: the windows the optimizer listens to."""

    source: rendering.Source
    offsets: list[int]
    excerpts: np.ndarray  # (E, channels, window)


@dataclass
class Target:
    """One (input, prompt) pair after optimization."""

    input: int
    prompt: str
    text: str
    anchor: str | None
    outcome: Outcome
    offsets_s: list[float]


def build_chain(spec: str, seed: int):
    import fx

    try:
        return fx.Chain.from_spec(spec, seed=seed)
    except ValueError as e:
        raise InputError(str(e)) from None


def load_chain(params, expected_spec: str | None = None):
    """(chain, `(P,)` unit parameters) from a report / chain dict / JSON path; InputError when malformed or,
    with `expected_spec`, for a different chain."""
    import fx

    d = chain_params(params)
    canonical = lambda spec: ",".join(n.strip() for n in str(spec).split(","))  # noqa: E731
    if expected_spec is not None and canonical(d.get("chain")) != canonical(expected_spec):
        raise InputError(f"params are for chain '{d.get('chain')}', not '{expected_spec}'")
    try:
        return fx.Chain.from_dict(d)
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"params do not describe a valid chain: {e}") from None


def as_audio(audio, sample_rate: int, what: str = "audio") -> np.ndarray:
    """Validate and convert audio to `(channels, samples)` float32 numpy (a 1-D array is mono)."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2:
        raise InputError(f"{what}: expected shape (channels, samples) or (samples,), got {audio.shape}")
    if not np.issubdtype(audio.dtype, np.number):
        raise InputError(f"{what}: expected numbers, got dtype {audio.dtype}")
    if audio.size == 0:
        raise InputError(f"{what}: zero-length audio")
    if audio.shape[0] > audio.shape[1]:
        raise InputError(f"{what}: shape {audio.shape} has more channels than samples; pass (channels, samples)")
    audio_io.check_sample_rate(int(sample_rate), what)
    if audio.shape[1] < audio_io.MIN_DURATION_S * sample_rate:
        raise InputError(
            f"{what}: too short ({audio.shape[1] / sample_rate:.3f} s); at least {audio_io.MIN_DURATION_S} s is needed"
        )
    if np.issubdtype(audio.dtype, np.unsignedinteger):  # offset binary, e.g. 8-bit WAV data
        half = float(np.iinfo(audio.dtype).max + 1) / 2
        audio = (audio - half) / half
    elif np.issubdtype(audio.dtype, np.integer):
        audio = audio / float(np.iinfo(audio.dtype).max + 1)
    return np.ascontiguousarray(audio, dtype=np.float32)


def _batch_progress(progress: ProgressFn | None, batch: int, batches: int, steps: int) -> ProgressFn | None:
    """`progress` for the `batch`-th of `batches` batches run one after another: steps counted over all."""
    if progress is None:
        return None

    def report(step: int, _steps: int, loss: float, best: float) -> None:
        progress(batch * steps + step, batches * steps, loss, best)

    return report


def _fill(text: str, prompt: str, what: str, needs_prompt: bool = False) -> str:
    if needs_prompt and "{prompt}" not in text:
        raise InputError(f"{what} {text!r} must contain {{prompt}}, where the prompt goes")
    try:
        return text.format(prompt=prompt)
    except (KeyError, IndexError, ValueError):
        raise InputError(f"{what} {text!r}: the only placeholder allowed is {{prompt}}") from None


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = [str(p).strip() for p in prompts]
    if not prompts:
        raise InputError("no prompt given")
    if any(not p for p in prompts):
        raise InputError("empty prompt: describe the sound you want, e.g. \"warm and bright\"")
    return prompts


class Engine:
    """Loads the embedder once; `apply` optimizes effect chains toward prompts.

    Args:
        embedder: an already loaded embedder (anything implementing `text2fx.embedder.Embedder`). If None,
            a `text2fx.clap.ClapEmbedder` is loaded from `checkpoint` / `tokenizer` (see there for where
            files are looked for) on `device` (default: best available).
        cuda_graphs: on CUDA, replay each optimization step as a CUDA graph when the chain and the embedder
            allow it and the run has at least `text2fx.optimize.GRAPH_MIN_STEPS` steps (see
            `text2fx.optimize.optimize`; falls back to plain steps, with a warning, if the capture fails).
            About 7x faster per step for one prompt on an H200 (`benchmarks/RESULTS.md`); the computation
            is the same either way. False: always plain steps.
        precision: the loaded CLAP's audio branch in "float32" (default) or "bfloat16" (autocast; faster on
            GPUs and on CPUs with bfloat16 instructions, the float32 loss to within 1e-3; see
            `text2fx.clap.ClapEmbedder`). Recorded in each report. A given `embedder` keeps its own (set it
            there); naming a different one here is an error.
        max_batch: the most clips optimized together. An (input, prompt) pair takes restarts x excerpts clips
            (twice as many with loss="best"); pairs beyond `max_batch` run in further batches, one after
            another (a pair larger than it runs alone). This bounds memory: on a GPU a 10 s stereo 48 kHz clip
            takes about 0.3 GB in float32 with EQ -> reverb (16 clips: 5.5 GB at peak on an H200, model
            included, `benchmarks/RESULTS.md`), and 16 clips already keep such a GPU busy, so larger batches
            would gain little. A prompt's result does not depend on the batch it runs in, except that an
            early stop waits for every candidate of its batch: with early stopping, the same seed gives the
            same result for the same inputs, prompts and `max_batch` (recorded in the report).
    """

    def __init__(self, embedder: Embedder | None = None, *, checkpoint=None, tokenizer=None, device=None,
                 cuda_graphs: bool = True, precision: str | None = None, max_batch: int = DEFAULT_MAX_BATCH):
        try:
            if isinstance(max_batch, bool) or operator.index(max_batch) < 1:
                raise TypeError
        except TypeError:
            raise InputError(f"max_batch must be a positive integer, got {max_batch!r}") from None
        if embedder is None:
            from text2fx.clap import ClapEmbedder

            embedder = ClapEmbedder(checkpoint=checkpoint, tokenizer=tokenizer, device=device,
                                    precision="float32" if precision is None else precision)
        elif precision is not None and precision != getattr(embedder, "precision", "float32"):
            raise InputError(f"precision {precision!r} differs from the given embedder's: set it on the embedder")
        self.embedder = embedder
        self.cuda_graphs = cuda_graphs
        self.max_batch = operator.index(max_batch)

    @property
    def device(self) -> torch.device:
        return torch.device(self.embedder.device)

    def apply(
        self,
        audio,
        sample_rate: int | Sequence[int],
        prompt: str | Sequence[str],
        chain: str = "eq,reverb",
        *,
        preset: str = "auto",
        loss: str | None = None,
        steps: int | None = None,
        lr: float | None = None,
        restarts: int | None = None,
        init: str | None = None,
        excerpts: int | None = None,
        seed: int = 0,
        template: str = DEFAULT_TEMPLATE,
        anchor: str = DEFAULT_ANCHOR,
        progress: ProgressFn | None = None,
        **recipe_changes,
    ) -> Result | list[Result]:
        """Process audio toward prompt(s).

        Args:
            audio: `(channels, samples)` or `(samples,)` array (numpy or torch), or a list of them.
            sample_rate: Hz (8-192 kHz), one for all inputs or one per input.
            prompt: the words, or a list of prompts; every input is paired with every prompt.
            chain: effect chain spec, e.g. "eq", "reverb", "eq,reverb", "eq,compressor,reverb".
            preset: "default", "paper" (the paper's exact recipe), "fast" (for CPUs), or "auto" ("fast" on a
                CPU, else "default"); the keyword arguments below override single settings of it
                (see `text2fx.optimize.Recipe`).
            seed: makes the run reproducible (bit-exact on CPU); also seeds the reverb's noise.
            template: how a prompt is phrased for the text encoder (`{prompt}` is replaced).
            anchor: the directional loss's contrasting text (`{prompt}` is replaced).
            progress: called as `progress(step, steps, loss, best_loss)` now and then.

        Returns:
            A `Result` for a single input and prompt, else a list ordered input by input, prompt by prompt.
        """
        single = not isinstance(audio, (list, tuple))
        audios = [audio] if single else list(audio)
        if not audios:
            raise InputError("no input audio given")
        rates = list(sample_rate) if isinstance(sample_rate, (list, tuple)) else [sample_rate] * len(audios)
        if len(rates) != len(audios):
            raise InputError(f"{len(audios)} inputs but {len(rates)} sample rates")
        arrays = [as_audio(a, int(sr), f"input {i}") for i, (a, sr) in enumerate(zip(audios, rates))]
        prompts = _check_prompts(prompt)
        preset = resolve_preset(preset, self.device)
        named = dict(loss=loss, steps=steps, lr=lr, restarts=restarts, init=init, excerpts=excerpts)
        recipe = self.recipe(preset, **{k: v for k, v in named.items() if v is not None}, **recipe_changes)
        sources = [rendering.ArraySource(a, int(sr)) for a, sr in zip(arrays, rates)]
        fx_chain, targets = self.optimize(sources, [None] * len(sources), prompts, chain, recipe, seed,
                                          template, anchor, progress)
        results = []
        for t in targets:
            src = sources[t.input]
            out, gain = rendering.render_array(fx_chain, t.outcome.params, src.audio, src.sample_rate, self.device)
            results.append(self.result(fx_chain, t, recipe, preset, seed, out, src, None, gain))
        return results[0] if single and len(prompts) == 1 else results

    @staticmethod
    def recipe(preset: str = "default", **changes) -> Recipe:
        """The named preset with `changes` (Recipe fields) applied; InputError for bad names or values."""
        if preset not in PRESETS:
            raise InputError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
        try:
            return dataclasses.replace(PRESETS[preset], **changes)
        except (TypeError, ValueError) as e:
            raise InputError(str(e)) from None

    def optimize(
        self,
        sources: Sequence[rendering.Source],
        paths: Sequence[str | None],
        prompts: Sequence[str],
        chain: str,
        recipe: Recipe,
        seed: int,
        template: str = DEFAULT_TEMPLATE,
        anchor: str | None = DEFAULT_ANCHOR,
        progress: ProgressFn | None = None,
        prepared: Sequence[Prepared] | None = None,
    ) -> tuple[object, list[Target]]:
        """Optimize every (source, prompt) pair; pairs of sources of the same format share batches of up to
        `max_batch` clips.

        `prepared` (from `prepare_input`, one per source) skips reading the inputs again.
        Returns the chain and one `Target` per pair, source-major.
        """
        fx_chain = build_chain(chain, seed).to(self.device)
        texts = [_fill(template, p, "template", needs_prompt=True) for p in prompts]
        anchors = [_fill(anchor or "", p, "anchor") for p in prompts]
        emb = self.embedder.embed_text(texts + anchors)
        text_emb, anchor_emb = emb[: len(texts)], emb[len(texts) :]

        window_s = self.embedder.window_samples / self.embedder.sample_rate
        if prepared is None:
            prepared = [prepare_input(s, p, recipe.excerpts, window_s) for s, p in zip(sources, paths)]

        # Inputs whose windows have the same shape can share a batch; pairs are cut into batches of at most
        # `max_batch` clips.
        groups: dict[tuple, list[int]] = {}
        for i, prep in enumerate(prepared):
            groups.setdefault((prep.source.sample_rate,) + prep.excerpts.shape, []).append(i)
        per_candidate = 2 if recipe.loss == "best" else 1
        batches = []
        for (sr, n_exc, *_), members in groups.items():
            pairs = [(i, j) for i in members for j in range(len(prompts))]
            size = max(1, self.max_batch // (recipe.restarts * per_candidate * n_exc))
            batches += [(sr, pairs[start : start + size]) for start in range(0, len(pairs), size)]
        by_pair: dict[tuple[int, int], Target] = {}
        for b, (sr, pairs) in enumerate(batches):
            inputs = sorted({i for i, _ in pairs})
            clips = torch.from_numpy(np.stack([prepared[i].excerpts for i in inputs])).to(self.device)
            outcomes = optimize(
                fx_chain, self.embedder, clips, sr, [inputs.index(i) for i, _ in pairs],
                text_emb[[j for _, j in pairs]], anchor_emb[[j for _, j in pairs]],
                recipe, seed, _batch_progress(progress, b, len(batches), recipe.steps),
                # keyed by the text, so a prompt gets the same random draws alone or in a batch
                target_keys=[zlib.crc32(texts[j].encode()) for _, j in pairs],
                cuda_graph=None if self.cuda_graphs else False,
            )
            for (i, j), outcome in zip(pairs, outcomes):
                offsets_s = [o / prepared[i].source.sample_rate for o in prepared[i].offsets]
                by_pair[i, j] = Target(i, prompts[j], texts[j], anchors[j] if anchor else None, outcome, offsets_s)
        return fx_chain, [by_pair[i, j] for i in range(len(sources)) for j in range(len(prompts))]

    def result(self, fx_chain, target: Target, recipe: Recipe, preset: str | None, seed: int, audio,
               source: rendering.Source, path: str | None, gain_db: float) -> Result:
        o = target.outcome
        params = fx_chain.to_dict(o.params)
        units = [{s.name: s.unit for s in effect.param_specs} for effect in fx_chain]
        optimization = {
            "preset": preset,
            "loss_mode": recipe.loss,
            "loss": o.loss,
            "loss_value": o.loss_value,
            "steps": recipe.steps,
            "steps_run": o.steps_run,
            "best_step": o.best_step,
            "seed": seed,
            "lr": recipe.lr,
            "restarts": recipe.restarts,
            "init": recipe.init,
            "time_shift": recipe.time_shift,
            "excerpts_s": target.offsets_s,
            "precision": getattr(self.embedder, "precision", "float32"),
            "max_batch": self.max_batch,
        }
        return Result(
            audio=audio, sample_rate=source.sample_rate, params=params, units=units, prompt=target.prompt,
            text=target.text, anchor=target.anchor, history=o.history, similarity_before=o.similarity_before,
            similarity_after=o.similarity_after, output_gain_db=gain_db, optimization=optimization,
            checkpoint=getattr(self.embedder, "name", type(self.embedder).__name__), device=str(self.device),
            input={"path": path, "sample_rate": source.sample_rate, "channels": source.channels,
                   "frames": source.frames},
        )


def prepare_input(source: rendering.Source, path: str | None, count: int, window_s: float = CLAP_WINDOW_S) -> Prepared:
    """Check an input (NaN/Inf, silence) and cut the `count` windows the optimizer will listen to."""
    what = path or "input"
    sr = source.sample_rate
    window = min(source.frames, int(math.ceil(window_s * sr)))
    block = sr  # one-second blocks: fine enough to find the loud parts
    energies, peak = [], 0.0
    for start in range(0, source.frames, block * 60):
        chunk = source.read(start, min(block * 60, source.frames - start))
        if not np.isfinite(chunk).all():
            raise InputError(f"{what}: audio contains NaN or Inf samples")
        peak = max(peak, float(np.abs(chunk).max(initial=0.0)))
        sq = np.square(chunk, dtype=np.float64).sum(0)
        energies.extend(sq[k : k + block].sum() for k in range(0, sq.size, block))
    if peak < _SILENCE:
        raise InputError(f"{what}: audio is silent; there is nothing for the effects to change")
    offsets = choose_offsets(source.frames, window, np.asarray(energies), block, count)
    excerpts = np.stack([source.read(o, window) for o in offsets]).astype(np.float32, copy=False)
    return Prepared(source, offsets, excerpts)


def render(audio, sample_rate: int, params, device: str | torch.device = "cpu") -> np.ndarray:
    """Re-apply saved settings to any audio; no CLAP needed.

    Args:
        audio: `(channels, samples)` or `(samples,)` array.
        sample_rate: Hz.
        params: a report (dict or JSON path) or its `chain` part.

    Returns:
        `(channels, samples)` float32, with the same level policy as `Engine.apply`.
    """
    fx_chain, unit = load_chain(params)
    x = as_audio(audio, int(sample_rate))
    out, _ = rendering.render_array(fx_chain.to(device), unit, x, int(sample_rate), device)
    return out
