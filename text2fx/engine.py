"""The Text2FX engine: one loaded embedder, reused across jobs (e.g. by a DAW script).

    engine = Engine(device="cuda")
    result = engine.apply(audio, 48000, "warm and bright", chain="eq,reverb")
    result.audio, result.params, result.similarity_after
    engine.apply_files(["a.wav", "b.wav"], ["dark", "airy"], output="out/")   # what the command does

Every call goes through `text2fx.pipeline`, the same path as the `text2fx` command, with the same checks
(`text2fx.options`) and the same one-line `Text2FXError`s; a bad argument is refused before any work.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from text2fx import pipeline
from text2fx import threads as thread_policy
from text2fx.embedder import Embedder
from text2fx.errors import InputError
from text2fx.options import (
    DEFAULT_ANCHOR,
    DEFAULT_CHAIN,
    DEFAULT_MAX_BATCH,
    DEFAULT_TEMPLATE,
    EngineOptions,
    JobOptions,
    OutputOptions,
)
from text2fx.recipe import Recipe
from text2fx.result import Result


class Engine:
    """Loads the embedder once; `apply` / `apply_files` optimize effect chains toward prompts.

    Args:
        embedder: an already loaded embedder (anything implementing `text2fx.embedder.Embedder`), or its
            name: None or "clap": a `text2fx.clap.ClapEmbedder` is loaded from `checkpoint` / `tokenizer` (see
            there for where files are looked for) on `device` ("cpu", "cuda", "cuda:N", "mps"; default: the
            best available). "features": `text2fx.features.FeatureEmbedder` (acoustic features, no model
            files, no text side: for matching a reference recording, `like=`; a prompt is refused).
            A device this machine lacks is refused before anything loads.
        cuda_graphs: on CUDA, replay each optimization step as a CUDA graph when the chain and the embedder
            allow it (see `text2fx.optimize`; falls back to plain steps, with a warning, if the capture
            fails). The computation is the same either way. False: always plain steps.
        precision: the loaded CLAP's audio branch in "float32" (default) or "bfloat16" (autocast; faster on
            GPUs and on CPUs with bfloat16 instructions; see `text2fx.clap.ClapEmbedder`). Recorded in each
            report. A given `embedder` keeps its own (set it there); naming a different one here is an error.
        max_batch: the most clips optimized together. An (input, prompt) pair takes restarts x excerpts clips
            (twice as many with loss="best"); pairs beyond `max_batch` run in further batches, one after
            another (a pair larger than it runs alone). This bounds memory (figures per clip in
            `benchmarks/RESULTS.md`). A prompt's result does not depend on the batch it runs in, except that
            an early stop waits for every candidate of its batch: with early stopping, the same seed gives the
            same result for the same inputs, prompts and `max_batch` (recorded in the report).
        threads: torch's CPU intra-op threads (process-wide), at least 1. None: ``$TEXT2FX_THREADS`` if set,
            else at most the CPUs this process may use (lowered only, never raised; kept when
            ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` is set or `torch.set_num_threads` already lowered it). The
            wait policy that keeps a step fast on a busy machine must be chosen before torch is imported:
            call `text2fx.threads.configure()` first thing in your program (see `text2fx.threads`).

    Raises:
        Text2FXError: a bad argument, an unavailable device, missing or unusable model files.
    """

    def __init__(self, embedder: Embedder | str | None = None, *, checkpoint=None, tokenizer=None, device=None,
                 cuda_graphs: bool = True, precision: str | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                 threads: int | None = None):
        name = embedder if isinstance(embedder, str) or embedder is None else "clap"
        options = EngineOptions(checkpoint=checkpoint, tokenizer=tokenizer, device=device, precision=precision,
                                max_batch=max_batch, cuda_graphs=cuda_graphs,
                                embedder="clap" if name is None else name)
        thread_policy.apply_to_torch(threads)  # before the model is built, so loading uses the same threads
        if name == "features":
            from text2fx import devices
            from text2fx.features import FeatureEmbedder

            embedder = FeatureEmbedder(device=devices.resolve(device))
        elif embedder is None or embedder == "clap":
            from text2fx import devices
            from text2fx.clap import ClapEmbedder

            embedder = ClapEmbedder(checkpoint=checkpoint, tokenizer=tokenizer, device=devices.resolve(device),
                                    precision="float32" if precision is None else precision)
        elif precision is not None and precision != getattr(embedder, "precision", "float32"):
            raise InputError(f"precision {precision!r} differs from the given embedder's: set it on the embedder")
        self.embedder = embedder
        self.options = options

    @property
    def device(self) -> torch.device:
        return torch.device(self.embedder.device)

    @property
    def max_batch(self) -> int:
        return self.options.max_batch

    @property
    def cuda_graphs(self) -> bool:
        return self.options.cuda_graphs

    def apply(
        self,
        audio,
        sample_rate: int | Sequence[int],
        prompt: str | Sequence[str] | None = None,
        chain: str | None = None,
        *,
        preset: str = "auto",
        seed: int = 0,
        template: str = DEFAULT_TEMPLATE,
        anchor: str = DEFAULT_ANCHOR,
        keep_length: bool = False,
        amount: float = 1.0,
        previous=None,
        avoid: str | Sequence[str] | None = None,
        avoid_weight: float | None = None,
        like=None,
        like_weight: float | None = None,
        candidates: int = 1,
        candidate_distance: float | None = None,
        progress: pipeline.ProgressFn | None = None,
        record: bool = False,
        **recipe_changes,
    ) -> Result | list[Result]:
        """Process audio toward prompt(s), results in memory.

        Args:
            audio: `(channels, samples)` or `(samples,)` array (numpy or torch, real numbers), or a list of them.
            sample_rate: Hz, a whole number in 8000-192000; one for all inputs or one per input.
            prompt: the words, or a list of prompts; every input is paired with every prompt. None with `like`
                (the reference alone is the target).
            chain: effect chain spec, e.g. "eq", "reverb", "eq,reverb", "eq,compressor,reverb". Default:
                "eq,reverb", or with `previous` its chain.
            preset: "default", "paper" (the paper's exact recipe), "fast" (for CPUs), "random" (random
                settings, no optimization, never bypassed: the paper's control), or "auto" ("fast" on a CPU,
                else "default").
            seed: makes the run reproducible (bit-exact on CPU); also seeds the reverb's noise.
            template: how a prompt is phrased for the text encoder (`{prompt}` is replaced).
            anchor: the directional loss's contrasting text (`{prompt}` is replaced).
            keep_length: give each output its input's length. False (the default): when the chain has an
                effect with a tail (a reverb), the output is longer than the input by that tail (until it has
                decayed by 60 dB, bounded by the effect's own maximum; `Result.tail_frames`). The output's
                start is sample-aligned with the input either way; a bypassed result has no tail.
            amount: how much of the found effect to apply, -2 to 2 (`text2fx.amount`): 1 (default) the
                found settings, 0 the input itself (bit-exact), 0.5 half (dB gains and mixes halfway from
                neutral, frequencies, Q and times kept), above 1 more (clamped to the ranges), negative:
                EQ/gain inverted. `Result.params` are the settings applied, the report keeps those at 1.
            previous: refine a previous turn (`text2fx.turns`): its `Result`, report (dict or JSON path) or
                chain dict. The optimizer starts from those settings and hears them as the "before"; the
                chain must be theirs or a longer one holding their effects in order (extra ones start neutral).
            avoid: a text or texts to avoid (repeatable `--avoid`): the loss also pushes away from them,
                `avoid_weight * mean_i cos(audio, text_i)` (see `text2fx.targets`); the report shows the
                similarity to each before/after. avoid_weight: default 0.5, in (0, 10].
            like: a reference recording to sound like: an audio file's path or `(audio, sample_rate)`, any
                rate and channel count. Its embedding (up to 8 of its loudest 10 s windows, averaged) is the
                target, alone (`prompt` may then be None) or with the prompt, weighted `like_weight` (default
                0.5, in (0, 1)) against it. Without a prompt the directional loss points from the input's
                embedding to the reference's.
            candidates: give up to this many distinct results per input and goal (at most 8): the best
                restarts whose unit-space settings differ by at least `candidate_distance` (RMS, default 0.1;
                `text2fx.candidates`). Restarts are raised to twice `candidates` unless given (then at least
                `candidates`). The returned `Result` is the best; its `candidates` lists them all.
            progress: called as `progress(step, steps, loss, best_loss)`: once at step 0, after the first
                step, then every few steps.
            record: keep what `Result.save_html` draws beyond the result itself: the input audio, and the
                CLAP embeddings of the map (the audio every few optimization steps, at no extra forward pass;
                texts and input/output audio embedded once afterwards).
            **recipe_changes: single settings of the preset (`text2fx.recipe.Recipe` fields: loss, steps, lr,
                restarts, init, excerpts, time_shift, patience, min_delta, check_every); None leaves one as
                the preset has it, except `patience=None`, which disables the early stop.

        Returns:
            A `Result` for a single input array and prompt, else a list ordered input by input, prompt by prompt.
        """
        options = _job_options(prompt, chain, preset, seed, template, anchor, keep_length, recipe_changes,
                               amount, previous, shaping=dict(avoid=avoid, avoid_weight=avoid_weight, like=like,
                               like_weight=like_weight, candidates=candidates, candidate_distance=candidate_distance))
        job = pipeline.array_job(audio, sample_rate, options, record=record)
        results = pipeline.run(self, job, progress)
        return results[0] if job.single else results

    def apply_files(
        self,
        inputs: str | os.PathLike | Sequence[str | os.PathLike],
        prompt: str | Sequence[str] | None = None,
        chain: str | None = None,
        *,
        output: str | os.PathLike | None = None,
        params: str | os.PathLike | None = None,
        subtype: str | None = None,
        overwrite: bool = False,
        html: str | os.PathLike | bool | None = None,
        preset: str = "auto",
        seed: int = 0,
        template: str = DEFAULT_TEMPLATE,
        anchor: str = DEFAULT_ANCHOR,
        keep_length: bool = False,
        amount: float = 1.0,
        previous=None,
        avoid: str | Sequence[str] | None = None,
        avoid_weight: float | None = None,
        like=None,
        like_weight: float | None = None,
        candidates: int = 1,
        candidate_distance: float | None = None,
        progress: pipeline.ProgressFn | None = None,
        **recipe_changes,
    ) -> list[Result]:
        """Process audio files toward prompt(s) and write each result as the command does: the audio (same
        rate, channels and format as its input unless `output`'s extension or `subtype` says otherwise) and
        its JSON report, atomically. Every path is checked before any optimization starts.

        Args:
            inputs: an audio file or a list of them.
            output: a file (one input, one prompt) or a folder (existing, or ending in '/'); default: beside
                each input, named INPUTSTEM.PROMPT-SLUG.EXT.
            params: the report's path for one input and one prompt (default: the audio path with .json).
            subtype: output sample format, e.g. "PCM_16", "PCM_24", "FLOAT".
            overwrite: replace existing files.
            html: also write the report page: True (beside the output: OUT.html, or text2fx-report.html for
                several results) or a path ending in .html; checked before any optimization starts.
            The other arguments are those of `apply`.

        Returns:
            One `Result` per (input, prompt), input-major, with `output_path` set and `audio` None.
        """
        options = _job_options(prompt, chain, preset, seed, template, anchor, keep_length, recipe_changes,
                               amount, previous, shaping=dict(avoid=avoid, avoid_weight=avoid_weight, like=like,
                               like_weight=like_weight, candidates=candidates, candidate_distance=candidate_distance))
        out = OutputOptions(output=output, params=params, subtype=subtype, overwrite=overwrite, html=html)
        job = pipeline.file_job([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs, options, out)
        return pipeline.run(self, job, progress)

    def run(self, job: pipeline.Job, progress: pipeline.ProgressFn | None = None) -> list[Result]:
        """Run a job built with `text2fx.pipeline.array_job` / `file_job` (what `apply` and the command do)."""
        return pipeline.run(self, job, progress)

    @staticmethod
    def recipe(preset: str = "default", **changes) -> Recipe:
        """The named preset with `changes` (Recipe fields) applied; InputError for bad names or values."""
        return Recipe.from_preset(preset, **changes)


def _job_options(prompt, chain, preset, seed, template, anchor, keep_length, recipe_changes, amount=1.0,
                 previous=None, shaping: dict | None = None) -> JobOptions:
    changes = {k: v for k, v in recipe_changes.items() if v is not None or k == "patience"}
    if chain is None and previous is None:
        chain = DEFAULT_CHAIN
    shaping = dict(shaping or {})
    if shaping.get("avoid") is None:
        shaping.pop("avoid", None)
    return JobOptions(prompts=prompt, chain=chain, preset=preset, recipe_changes=changes, seed=seed,
                      template=template, anchor=anchor, keep_length=keep_length, amount=amount, previous=previous,
                      **shaping)


def render(audio, sample_rate: int, params, device: str | torch.device = "cpu", *,
           keep_length: bool = False, amount: float | None = None) -> np.ndarray:
    """Re-apply saved settings to any audio; no CLAP needed.

    Args:
        audio: `(channels, samples)` or `(samples,)` array.
        sample_rate: Hz.
        params: a report (dict or JSON path) or its `chain` part.
        device: where to run the chain.
        keep_length: give the output the input's length; False (the default): longer by the chain's tail,
            as `Engine.apply` does.
        amount: how much of the found effect (`text2fx.amount`, -2 to 2): None (default) the settings as
            saved (the report's own amount); a number: that amount of the settings found at amount 1 (the
            report's `amount.found`, else its `chain`). 0 returns the input's samples themselves.

    Returns:
        `(channels, samples + tail)` float32, with the same level policy as `Engine.apply`; the start is
        sample-aligned with the input.
    """
    from text2fx import devices, rendering
    from text2fx.inputs import as_audio
    from text2fx.options import flag_value, sample_rate_value
    from text2fx.report import load_chain, settings_at

    from text2fx.amount import saved

    flag_value(keep_length, "keep_length")
    x = as_audio(audio, sample_rate)
    settings, amount, _ = saved(params, amount)
    chain = load_chain(settings)
    device = devices.resolve(device)
    rate = sample_rate_value(sample_rate)
    unit = settings_at(chain, rate)
    out, _ = rendering.render_array(None if amount == 0 else chain.to(device), unit, x, rate, device,
                                    keep_length=keep_length, level=amount != 0)
    return out
