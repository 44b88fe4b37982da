"""A batch's unit of work and what comes back: a `Task` (rows of one group, sized to one optimization batch)
is run by `execute` on a loaded engine, in this process, a local worker process or a Ray actor.

`execute` never raises for a row's fault: each input is probed and read (missing, corrupt, NaN, silent) and
each prompt checked against the text encoder before the group runs; the rows that pass run as one pipeline
job over explicit (input, prompt) pairs. If that job fails as a whole, its rows are retried one by one, so a
single bad row cannot fail its neighbours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from text2fx.batch.manifest import one_line


@dataclass(frozen=True)
class Item:
    """One row to run: its input, prompt, output files and the report keys that mark it as this row's."""

    row: int
    input: str
    prompt: str
    audio: str
    params: str
    format: str
    subtype: str
    report_extra: dict


@dataclass(frozen=True)
class Task:
    """Rows sharing one set of options (`JobOptions` fields except the prompts)."""

    id: int
    options: dict
    items: tuple[Item, ...]


@dataclass
class ItemResult:
    """How a row ended: "done" or "failed" (with `error`, one line)."""

    row: int
    status: str
    similarity_before: float | None = None
    similarity_after: float | None = None
    bypassed: bool | None = None
    seconds: float | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)


def failed(items, error: str, seconds: float | None = None) -> list[ItemResult]:
    return [ItemResult(item.row, "failed", seconds=seconds, error=error) for item in items]


def execute(engine, task: Task) -> list[ItemResult]:
    """Run `task` on `engine`; one `ItemResult` per item, in order. Raises only KeyboardInterrupt."""
    results = _execute(engine, task)
    by_row = {r.row: r for r in results}
    return [by_row[item.row] for item in task.items]


def _execute(engine, task: Task) -> list[ItemResult]:
    from text2fx import audio_io, inputs, pipeline
    from text2fx.options import JobOptions
    from text2fx.outputs import OutputPlan
    from text2fx.recipe import resolve_preset

    started = time.perf_counter()
    out: list[ItemResult] = []
    items = list(task.items)
    try:
        probe_options = JobOptions(prompts=[items[0].prompt], **task.options)
        recipe = probe_options.recipe(resolve_preset(probe_options.preset, engine.device))
    except Exception as e:  # noqa: BLE001 - checked in the parent already; never kill a worker
        return failed(items, one_line(e))
    embedder = engine.embedder
    window_s = embedder.window_samples / embedder.sample_rate

    # Inputs: probed and read (NaN, silence) once each; a bad one fails only its rows.
    prepared, bad = {}, {}
    for path in dict.fromkeys(item.input for item in items):
        try:
            prepared[path] = inputs.prepare(inputs.FileSource(audio_io.probe(Path(path))), recipe.excerpts, window_s)
        except Exception as e:  # noqa: BLE001
            bad[path] = one_line(e)
    # Prompts: too long for the text encoder fails only its rows.
    if hasattr(embedder, "check_texts"):
        for prompt in dict.fromkeys(item.prompt for item in items):
            o = JobOptions(prompts=[prompt], **task.options)
            try:
                embedder.check_texts(o.texts() + o.anchors())
            except Exception as e:  # noqa: BLE001
                bad.setdefault(prompt, one_line(e))
    runnable = []
    for item in items:
        reason = bad.get(item.input) or bad.get(item.prompt)
        if reason is not None:
            out.append(ItemResult(item.row, "failed", error=reason))
        else:
            runnable.append(item)
    if not runnable:
        return out

    paths = list(dict.fromkeys(item.input for item in runnable))
    prompts = list(dict.fromkeys(item.prompt for item in runnable))
    options = JobOptions(prompts=prompts, **task.options)
    job = pipeline.Job(
        [prepared[p].source for p in paths], options,
        plans=[OutputPlan(Path(i.audio), Path(i.params), i.format, i.subtype) for i in runnable],
        selected=[(paths.index(i.input), prompts.index(i.prompt)) for i in runnable],
        report_extra=[i.report_extra for i in runnable],
    )
    job.prepared, job._prepared_for = [prepared[p] for p in paths], (recipe.excerpts, window_s)
    try:
        results = pipeline.run(engine, job)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - the group failed as a whole
        if len(runnable) == 1:
            return out + failed(runnable, one_line(e), time.perf_counter() - started)
        for item in runnable:  # retry singly: one bad row must not fail the others
            out += _execute(engine, Task(task.id, task.options, (item,)))
        return out
    seconds = (time.perf_counter() - started) / len(runnable)  # the group's time, shared by its rows
    for item, r in zip(runnable, results):
        out.append(ItemResult(item.row, "done", r.similarity_before, r.similarity_after, r.bypassed, seconds))
    return out
