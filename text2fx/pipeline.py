"""One job pipeline: inputs (arrays or files) x prompts x options -> results, in memory or written to files.

Both doors use it: `Engine.apply` / `Engine.apply_files` and the `text2fx` command. A job is built and
checked first (`array_job`, `file_job`: inputs, options, output paths, all without torch or a model), its
inputs are then cut into the windows the optimizer hears (`Job.prepare`: NaN and silence refused), and
`run` optimizes every (input, prompt) pair on a loaded engine and renders or writes each result.

Pairs of inputs with the same window shape share optimization batches of at most `max_batch` clips.
"""

from __future__ import annotations

import math
import zlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from text2fx import inputs as inputs_
from text2fx import outputs as outputs_
from text2fx import targets as targets_
from text2fx.options import JobOptions, OutputOptions

ProgressFn = Callable[[int, int, float, float], None]
# With `Job.record`, the audio's embedding is kept every this many steps (the report page's map).
RECORD_EVERY = 5


@dataclass
class Job:
    """Checked inputs, options and (for a file job) output plans, ready to run.

    Attributes:
        sources: the inputs.
        options: prompts, chain, recipe changes, seed, template, anchor.
        plans: one `OutputPlan` per pair of `pairs`, in that order; None when results stay in memory.
        single: one array and one prompt were given (the API then returns one `Result`, not a list).
        selected: the (input index, prompt index) pairs to run, when not every input with every prompt (a
            batch manifest's rows); None: all of them, input-major.
        report_extra: per pair of `pairs`, keys added to its written report (e.g. a batch row's settings hash).
        like: the reference recording (`options.like`, read and checked), or None.
        record: keep what the report page draws (each result's `embeddings`, and an array input's audio).
        html: where to write the report page of all results (a file job with `--html`), or None.
    """

    sources: list
    options: JobOptions
    plans: list[outputs_.OutputPlan] | None = None
    single: bool = False
    selected: list[tuple[int, int]] | None = None
    report_extra: list[dict] | None = None
    record: bool = False
    html: Path | None = None
    like: targets_.Like | None = None
    prepared: list[inputs_.Prepared] | None = field(default=None, repr=False)
    _prepared_for: tuple | None = field(default=None, repr=False)

    def prepare(self, excerpts: int, window_s: float = inputs_.CLAP_WINDOW_S) -> list[inputs_.Prepared]:
        """Check every input's samples and cut `excerpts` windows of `window_s` seconds (once per setting)."""
        if self._prepared_for != (excerpts, window_s):
            self.prepared = [inputs_.prepare(s, excerpts, window_s) for s in self.sources]
            self._prepared_for = (excerpts, window_s)
            if self.like is not None:
                self.like.prepare(window_s)  # a silent or NaN reference is refused with the inputs
        return self.prepared

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """(input index, prompt index) of every result: `selected`, else every pair input-major."""
        if self.selected is not None:
            return list(self.selected)
        return [(i, j) for i in range(len(self.sources)) for j in range(len(self.options.goals))]


def array_job(audio, sample_rate, options: JobOptions, record: bool = False) -> Job:
    """A job over arrays (one, or a list), results kept in memory (`record`: with what a page draws)."""
    sources, single = inputs_.array_sources(audio, sample_rate)
    _check_shaping(options, sources)
    like = targets_.like_of(options, page=bool(record))
    return Job(sources, options, None, single and len(options.goals) == 1, record=bool(record), like=like)


def file_job(paths: Sequence, options: JobOptions, output: OutputOptions) -> Job:
    """A job over audio files, results written as files at planned, checked paths."""
    sources = inputs_.file_sources(paths)
    _check_shaping(options, sources)
    like = targets_.like_of(options, page=output.html not in (None, False))
    plans = outputs_.plan([s.info for s in sources], _goal_names(options, like), output, numbered=options.candidates)
    html = outputs_.plan_html(plans, [s.info for s in sources], output)
    return Job(sources, options, plans, record=html is not None, html=html, like=like)


def _goal_names(options: JobOptions, like) -> list[str]:
    """What output names call each goal: its prompt, or "like <reference name>" without one."""
    return [p if p is not None else f"like {like.name}" for p in options.goals]


def _check_shaping(options: JobOptions, sources) -> None:
    """What `--amount` and `--from` need of the chain and the inputs' rates, checked before any model load:
    a negative amount only for chains that can be inverted; previous settings that build and fit each rate."""
    from text2fx import amount as amount_, turns

    if options.amount < 0:
        amount_.check(options.amount, amount_.chain_specs(options.chain))
    if options.previous is not None:
        turns.check_rates(options.previous, options.chain, [s.sample_rate for s in sources])


@dataclass
class _Target:
    """One (input, prompt) pair after optimization."""

    input: int
    prompt: int
    outcome: object
    offsets_s: list[float]
    slot: int = 0  # the plan (`Job.plans`) of this result: pair index, times candidates, plus rank - 1
    choice: dict | None = None  # with candidates: this one's rank and distances (`text2fx.candidates.select`)
    measured: dict | None = None  # similarities to the reference and avoided texts (`text2fx.targets.measure`)


def _batch_progress(progress: ProgressFn | None, batch: int, batches: int, steps: int) -> ProgressFn | None:
    """`progress` for the `batch`-th of `batches` batches run one after another: steps counted over all."""
    if progress is None:
        return None
    return lambda step, _steps, loss, best: progress(batch * steps + step, batches * steps, loss, best)


def _batches(job: Job, prepared, recipe, max_batch: int) -> list[tuple[int, list[tuple[int, int]]]]:
    """(sample rate, pairs) batches: pairs whose inputs have windows of one shape, at most `max_batch` clips."""
    groups: dict[tuple, list[int]] = {}
    for i, prep in enumerate(prepared):
        groups.setdefault((prep.source.sample_rate,) + prep.excerpts.shape, []).append(i)
    per_candidate = 2 if recipe.loss == "best" else 1
    batches = []
    for (sr, n_exc, *_), members in groups.items():
        in_group = set(members)
        pairs = [(i, j) for i, j in job.pairs if i in in_group]
        size = max(1, max_batch // (recipe.restarts * per_candidate * n_exc))
        batches += [(sr, pairs[start : start + size]) for start in range(0, len(pairs), size)]
    return batches


def optimize(engine, job: Job, chain, recipe, progress: ProgressFn | None = None) -> list[_Target]:
    """Optimize every pair of `job` on `engine`; one `_Target` per pair (with candidates, one per candidate
    found, best first), input-major."""
    import numpy as np
    import torch

    from text2fx import turns
    from text2fx.optimize import optimize as optimize_batch

    options = job.options
    embedder = engine.embedder
    goals = targets_.embed_goals(embedder, options, job.like)
    # keyed by the text, so a prompt gets the same random draws alone or in a batch
    keys = [zlib.crc32((t if p is not None else f"like:{t}").encode())
            for p, t in zip(options.goals, options.texts() or _goal_names(options, job.like))]
    prepared = job.prepare(recipe.excerpts, embedder.window_samples / embedder.sample_rate)

    batches = _batches(job, prepared, recipe, engine.max_batch)
    if progress is not None:
        progress(0, len(batches) * recipe.steps, math.nan, math.nan)
    done: dict[tuple[int, int], list[_Target]] = {}
    for b, (sr, pairs) in enumerate(batches):
        members = sorted({i for i, _ in pairs})
        clips = torch.from_numpy(np.stack([prepared[i].excerpts for i in members])).to(engine.device)
        # refining a previous turn: its settings at this rate are the start and the "before"
        start = None if options.previous is None else turns.start_unit(options.previous, chain, sr)
        outcomes = optimize_batch(
            chain, embedder, clips, sr, [members.index(i) for i, _ in pairs],
            None, None, recipe, options.seed, _batch_progress(progress, b, len(batches), recipe.steps),
            target_keys=[keys[j] for _, j in pairs],
            targets=goals.targets([j for _, j in pairs]),
            cuda_graph=None if engine.cuda_graphs else False,
            record_every=RECORD_EVERY if job.record else None,
            start=None if start is None else start.to(engine.device),
        )
        for (i, j), outcome in zip(pairs, outcomes):
            if start is not None:
                turns.settle(outcome, start, recipe.restarts)
            offsets_s = [o / prepared[i].source.sample_rate for o in prepared[i].offsets]
            done[i, j] = _shaped_targets(engine, job, chain, goals, i, j, outcome, offsets_s,
                                         clips[members.index(i)], sr, start)
    slots = {pair: k for k, pair in enumerate(job.pairs)}
    flat = []
    for pair in job.pairs:
        for t in done[pair]:
            t.slot += slots[pair] * options.candidates
            flat.append(t)
    return flat


def _shaped_targets(engine, job: Job, chain, goals, i: int, j: int, outcome, offsets_s, clips, sr: int,
                    start) -> list[_Target]:
    """One pair's results: its outcome, or with candidates the distinct ones (`text2fx.candidates`), each
    measured against the reference and the avoided texts when there are any (`text2fx.targets.measure`)."""
    from text2fx import candidates as candidates_

    options = job.options
    if options.candidates > 1:
        chosen = candidates_.select(outcome, options.candidates, options.candidate_distance_value())
    else:
        chosen = [(outcome, None)]
    measured = [None] * len(chosen)
    if goals.measured:
        # a bypass leaves the input unchanged, except when refining (it is then the previous settings)
        units = [None if o.bypassed and start is None else o.params for o, _ in chosen]
        measured = targets_.measure(engine.embedder, chain, clips, sr, units, goals, start)
    return [_Target(i, j, o, offsets_s, slot=rank, choice=info, measured=m)
            for rank, ((o, info), m) in enumerate(zip(chosen, measured))]


def run(engine, job: Job, progress: ProgressFn | None = None) -> list:
    """Optimize, then render every pair: into `Result.audio`, or (file job) into its planned files, each
    audio file followed by its report. Returns the `Result`s, input-major."""
    import fx

    from text2fx import rendering, shaping
    from text2fx.recipe import resolve_preset
    from text2fx.report import from_outcome, write

    started = time.perf_counter()
    options = job.options
    preset = resolve_preset(options.preset, engine.device)
    recipe = options.recipe(preset)
    chain = fx.Chain.from_spec(options.chain, seed=options.chain_seed).to(engine.device)
    targets = optimize(engine, job, chain, recipe, progress)

    index = {pair: k for k, pair in enumerate(job.pairs)}
    results = []
    for t in targets:
        source, outcome = job.sources[t.input], t.outcome
        shaped = shaping.shape(chain, outcome.params, source.sample_rate, options.amount)
        # A bypassed result is the input itself: no effect is run over it, not even at neutral settings (a
        # refinement's bypass is the previous settings, which are run); so is amount 0, bit-exact.
        dry = options.amount == 0.0 or (outcome.bypassed and options.previous is None)
        render_chain = None if dry else chain
        keep_length = options.keep_length
        # what the renderers add after the input (0 for a bypass or with keep_length), for the report
        tail = rendering.tail_frames(render_chain, shaped.unit, source.sample_rate, keep_length)
        level = options.amount != 0.0  # amount 0 is the input's own samples: no level policy either
        audio, path = None, None
        if job.plans is None:
            audio, gain = rendering.render_array(render_chain, shaped.unit, source.audio, source.sample_rate,
                                                 engine.device, keep_length=keep_length, level=level)
        else:
            plan = job.plans[t.slot]
            plan.audio.parent.mkdir(parents=True, exist_ok=True)
            gain = rendering.render_file(render_chain, shaped.unit, source.info, plan.audio, plan.format,
                                         plan.subtype, engine.device, keep_length=keep_length, level=level)
            path = plan.audio
        result = from_outcome(
            engine, chain, outcome, recipe, preset, options, t.prompt, t.offsets_s, source, audio, gain, tail,
        )
        shaping.annotate(result, shaped, options, t.prompt, chain, preset, recipe, engine.max_batch,
                         outcome.bypassed)
        targets_.annotate(result, job.like, options, embedder_window_s(engine), t.measured, t.choice)
        if path is not None:
            result.output_path = str(path)
            extra = job.report_extra[index[t.input, t.prompt]] if job.report_extra is not None else {}
            write(plan.params, {**result.report(), **extra}, overwrite=True)
        result.histories, result.candidate = outcome.histories, outcome.candidate
        result.candidate_kinds = [c["loss"] for c in outcome.candidates]
        results.append(result)
    if job.record:
        _record_map(engine, job, chain, targets, results)
    for result in results:
        result.seconds = time.perf_counter() - started
    if job.html is not None:
        from text2fx.page import write_html

        write_html(results, job.html, overwrite=True)
    if options.candidates > 1:
        from text2fx.candidates import link

        results = link(results, [t.choice for t in targets])
    return results


def embedder_window_s(engine) -> float:
    """The embedder's window in seconds (what the inputs and the reference are cut into)."""
    return engine.embedder.window_samples / engine.embedder.sample_rate


def _record_map(engine, job: Job, chain, targets: list[_Target], results: list) -> None:
    """Each result's `embeddings` for the page's map: its texts, the paper's prompts (as the template phrases
    them), and its input and output audio (the windows the optimizer heard, mean over windows). A few forward
    passes per job, after the optimization."""
    import torch

    from text2fx.page import paper_prompts

    embedder, options = engine.embedder, job.options
    context_texts = paper_prompts()
    with torch.no_grad():
        emb = embedder.embed_text([options.template.format(prompt=p) for p in context_texts]
                                  + options.texts() + options.anchors()).float().cpu().numpy()
        n, m = len(context_texts), len(options.prompts)
        context, texts, anchors = emb[:n], emb[n : n + m], emb[n + m :]
        for t, result in zip(targets, results):
            prep, outcome = job.prepared[t.input], t.outcome
            sr = prep.source.sample_rate
            clips = torch.from_numpy(prep.excerpts).to(engine.device)
            input_emb = embedder.embed_audio(clips, sr).mean(0)
            output_emb = input_emb
            if not outcome.bypassed:
                u = outcome.params.to(engine.device, clips.dtype)[None].expand(clips.shape[0], -1)
                output_emb = embedder.embed_audio(chain.process(clips, sr, u), sr).mean(0)
            result.embeddings = {
                "context_texts": context_texts, "context_emb": context,
                "prompt_emb": texts[t.prompt], "anchor_emb": anchors[t.prompt],
                "input_emb": input_emb.float().cpu().numpy(), "output_emb": output_emb.float().cpu().numpy(),
                "path": None if outcome.path is None else outcome.path.numpy(), "path_steps": outcome.path_steps,
            }
            if job.plans is None:
                result.source_audio = job.sources[t.input].audio
