"""Running a manifest: plan every row (check, name, resume), group rows into tasks, run the tasks on a pool of
workers, and keep the summary up to date as results stream back.

Planning happens in this process, before any model loads: each row is checked (options, input probed, output
format), given deterministic output names under OUTDIR, and skipped when an earlier run already wrote its
audio and a report carrying the same settings hash. The rest are grouped by options (chain, preset, recipe,
seed, template, anchor) and cut into tasks of at most `max_batch` clips, so a task is one optimization batch
and a worker lost mid-task loses only those rows.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from text2fx import audio_io, outputs
from text2fx.batch import manifest, summary
from text2fx.batch.summary import Entry
from text2fx.batch.tasks import Item, Task, failed
from text2fx.errors import Text2FXError, UsageError
from text2fx.options import EngineOptions
from text2fx.recipe import resolve_preset

REPORT_KEY = "batch"
LOCK_NAME = ".text2fx-batch.lock"


@dataclass
class Plan:
    """Every row's entry (in manifest order), the tasks to run, and rows that repeat an earlier row."""

    entries: list[Entry]
    tasks: list[Task]
    duplicates: dict[int, int] = field(default_factory=dict)


def output_name(info: audio_io.AudioInfo, prompt: str, digest: str) -> str:
    """`<input stem>.<prompt slug>.<digest>.<ext>`; ext: the input's, or one its format can be written in."""
    stem = info.path.name[: -len(info.path.suffix)] if info.path.suffix else info.path.name
    suffix = info.path.suffix if audio_io.container(Path("x" + info.path.suffix)) is not None else "." + info.format.lower()
    return f"{stem}.{outputs.slug(prompt)}.{digest}{suffix}"


def recorded_hash(report_path: Path) -> str | None:
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        return report[REPORT_KEY]["settings_hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plan(manifest_path, outdir, defaults: dict, device_kind: str, max_batch: int) -> Plan:
    """Check and name every row, find those done already, and group the rest into tasks.

    Raises:
        UsageError: the manifest cannot be used at all, or OUTDIR cannot be written.
    """
    manifest_path, outdir = Path(manifest_path), Path(outdir).absolute()  # workers may run elsewhere
    raws = manifest.read(manifest_path)
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"output folder {outdir} is a file")
    outputs.check_writable(outdir / "summary.probe")
    base = manifest_path.absolute().parent
    entries, todo, seen_hash, seen_name, duplicates = [], [], {}, {}, {}
    checked_formats: set = set()
    for raw in raws:
        entry = Entry(raw.number, input=_text(raw.fields.get("input")), prompt=_text(raw.fields.get("prompt")))
        entries.append(entry)
        try:
            row = manifest.check(raw, defaults, base)
            entry.input, entry.prompt = str(row.input), row.prompt
            if row.settings_hash in seen_hash:
                duplicates[raw.number] = seen_hash[row.settings_hash]
                entry.note = f"same input, prompt and settings as row {seen_hash[row.settings_hash]}"
                continue
            seen_hash[row.settings_hash] = raw.number
            info = audio_io.probe(row.input)
            audio = outdir / output_name(info, row.prompt, row.settings_hash[:8])
            if audio.name in seen_name:  # two rows' names differ only past the short hash
                audio = outdir / output_name(info, row.prompt, row.settings_hash[:16])
            seen_name[audio.name] = raw.number
            params = audio.with_suffix(".json")
            outputs.check_target(audio, [row.input], overwrite=True)
            fmt, subtype = audio_io.output_format(audio, info, row.subtype)
            key = (audio.suffix.lower(), fmt, subtype, info.sample_rate, info.channels)
            if key not in checked_formats:
                outputs.check_writable(audio, info, fmt, subtype)
                checked_formats.add(key)
        except Text2FXError as e:
            entry.status, entry.error = "failed", manifest.one_line(e)
            continue
        entry.output, entry.settings = str(audio), str(params)
        if audio.exists() and params.exists() and recorded_hash(params) == row.settings_hash:
            report = json.loads(params.read_text(encoding="utf-8"))
            entry.status, entry.note = "skipped", "output and report from an earlier run match this row"
            entry.similarity_before = report["similarity"]["before"]
            entry.similarity_after = report["similarity"]["after"]
            entry.bypassed = report.get("bypassed")
            continue
        item = Item(raw.number, str(row.input), row.prompt, str(audio), str(params), fmt, subtype,
                    {REPORT_KEY: {"settings_hash": row.settings_hash, "settings": row.settings}})
        todo.append((row, info, item))
    return Plan(entries, _tasks(todo, device_kind, max_batch), duplicates)


def _text(value) -> str | None:
    return None if value is None else str(value)


def _tasks(todo, device_kind: str, max_batch: int) -> list[Task]:
    """Rows grouped by options; each group sorted by window shape and cut into tasks of at most `max_batch`
    clips (restarts x excerpts per row, doubled for loss "best"; a larger row runs alone)."""
    groups: dict[str, list] = {}
    for entry in todo:
        groups.setdefault(entry[0].group_key, []).append(entry)
    tasks = []
    for members in groups.values():
        options = members[0][0].options
        recipe = options.recipe(resolve_preset(options.preset, device_kind))
        per_excerpt = recipe.restarts * (2 if recipe.loss == "best" else 1)
        fields = dict(chain=options.chain, preset=options.preset, recipe_changes=dict(options.recipe_changes),
                      seed=options.seed, template=options.template, anchor=options.anchor,
                      keep_length=options.keep_length)

        def shape(entry):
            info = entry[1]
            window = min(info.frames, math.ceil(10.0 * info.sample_rate))
            return (info.sample_rate, info.channels, window, str(info.path))

        chunk, clips = [], 0
        for row, info, item in sorted(members, key=shape):
            excerpts = min(recipe.excerpts, max(1, info.frames // math.ceil(10.0 * info.sample_rate)))
            cost = per_excerpt * excerpts
            if chunk and clips + cost > max_batch:
                tasks.append(Task(len(tasks), fields, tuple(chunk)))
                chunk, clips = [], 0
            chunk.append(item)
            clips += cost
        if chunk:
            tasks.append(Task(len(tasks), fields, tuple(chunk)))
    return tasks


def _lock(outdir: Path):
    """An exclusive lock on OUTDIR (POSIX), so two batches never write one folder at once; None elsewhere."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(outdir / LOCK_NAME, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UsageError(f"another text2fx batch is writing to {outdir}; wait for it or choose another folder") from None
    return handle


def _remove_stale_temporaries(outdir: Path) -> None:
    """Temporary files a killed worker could not remove (`.NAME.XXXX.partial.EXT`, `.NAME.XXXX.scratch.wav`)."""
    for path in outdir.glob(".*"):
        if path.is_file() and (".partial" in path.name or path.name.endswith(".scratch.wav")):
            path.unlink(missing_ok=True)


@dataclass
class BatchOutcome:
    entries: list[Entry]
    summary_path: Path

    def count(self, status: str) -> int:
        return sum(e.status == status for e in self.entries)


def run_batch(
    manifest_path,
    outdir,
    defaults: dict | None = None,
    engine_options: EngineOptions | None = None,
    *,
    workers: int = 1,
    ray: str | None = None,
    threads: int | None = None,
    summary_path=None,
    progress: bool = False,
    after_task: Callable | None = None,
    engine_factory: str | None = None,
) -> BatchOutcome:
    """Run every row of a manifest, writing outputs, reports and the summary under `outdir`.

    Args:
        defaults: column -> value for rows that leave it empty (e.g. {"chain": "eq", "steps": 50}).
        engine_options: model files, device, precision, max_batch.
        workers: local worker processes (1: this process), or Ray actors with `ray`.
        ray: a Ray address ("auto", "host:port", "ray://..."), "local" for a new local instance, or None.
        threads: torch CPU threads per worker (default: this machine's cores shared among local workers; 1
            per Ray CPU actor, which then requests that many CPUs).
        summary_path: default `outdir/summary.csv` (.jsonl for JSON lines).
        progress: show a progress bar and one line per failed row on stderr.
        after_task: called as `after_task(pool, in_flight)` after each finished task (tests kill a worker).
        engine_factory: "module:function" building each worker's engine instead of loading CLAP (tests).

    Returns:
        every row's entry; a row failed iff its status is "failed". KeyboardInterrupt is re-raised after the
        summary (rows in flight left "pending") is written.
    """
    from text2fx.batch import workers as workers_
    from text2fx.clap.files import resolve_model_files

    engine_options = engine_options or EngineOptions()
    defaults = dict(defaults or {})
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise UsageError(f"threads must be at least 1, got {threads!r}")
    outdir = Path(outdir).absolute()
    summary_path = Path(summary_path) if summary_path is not None else outdir / "summary.csv"
    if summary_path.suffix.lower() not in (".csv", ".jsonl", ".ndjson"):
        raise UsageError(f"summary {summary_path}: use a .csv or .jsonl file name")

    ray_module, started_ray = (workers_.connect(ray) if ray is not None else (None, False))
    try:
        if ray_module is not None:
            kind = (engine_options.device or ("cuda" if workers_.cluster_has_gpus(ray_module) else "cpu"))
            device_kind = kind.split(":")[0]
        else:
            from text2fx import devices

            device_kind = devices.resolve(engine_options.device).type
        the_plan = plan(manifest_path, outdir, defaults, device_kind, engine_options.max_batch)
        outputs.check_writable(summary_path)
        lock = _lock(outdir)
        try:
            _remove_stale_temporaries(outdir)
            files = None
            if the_plan.tasks and engine_factory is not None:
                files = _Files("", "", engine_factory)
            elif the_plan.tasks:
                files = resolve_model_files(engine_options.checkpoint, engine_options.tokenizer)
            if ray_module is not None:
                device = engine_options.device or ("cuda" if device_kind == "cuda" else "cpu")
                spec = _spec(files, engine_options, device, threads or 1)
                pool = workers_.RayPool(spec, gpu=device_kind == "cuda") if files else None
            elif workers == 1:
                pool = workers_.InProcessPool(_spec(files, engine_options, engine_options.device, threads))
            else:
                cpu_threads = threads or (max(1, (os.cpu_count() or 1) // workers) if device_kind == "cpu" else None)
                pool = workers_.LocalPool(_spec(files, engine_options, engine_options.device, cpu_threads))
            _Run(the_plan, summary_path, progress).go(pool, workers, after_task)
        finally:
            if lock is not None:
                lock.close()
    finally:
        if started_ray:
            ray_module.shutdown()
    return BatchOutcome(the_plan.entries, summary_path)


def _spec(files, engine_options: EngineOptions, device, threads):
    from text2fx.batch.workers import EngineSpec

    if files is None:
        return None
    return EngineSpec(str(files.checkpoint), str(files.tokenizer_dir), device, engine_options.precision,
                      engine_options.max_batch, threads, getattr(files, "factory", None))


@dataclass(frozen=True)
class _Files:
    checkpoint: str
    tokenizer_dir: str
    factory: str | None = None


class _Run:
    """The scheduler: hands tasks to idle workers, records results, rewrites the summary (at most every
    `every` seconds, and at the end)."""

    def __init__(self, the_plan: Plan, summary_path: Path, progress: bool, every: float = 2.0):
        self.plan, self.summary_path, self.every = the_plan, summary_path, every
        self.by_row = {e.row: e for e in the_plan.entries}
        self.written = 0.0
        self.bar = None
        if progress:
            from tqdm import tqdm

            pending = sum(len(t.items) for t in the_plan.tasks)
            self.bar = tqdm(total=pending, desc="batch", unit="row", dynamic_ncols=True, file=sys.stderr, leave=False)
            for e in the_plan.entries:
                if e.status == "failed":
                    self._say(f"row {e.row}: failed: {e.error}")

    def _say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)

    def record(self, results) -> None:
        for r in results:
            e = self.by_row[r.row]
            e.status, e.similarity_before, e.similarity_after = r.status, r.similarity_before, r.similarity_after
            e.bypassed, e.seconds, e.error = r.bypassed, r.seconds, r.error
            if r.status == "failed":
                e.output = e.settings = None  # nothing was written
                self._say(f"row {r.row}: failed: {r.error}")
        if self.bar is not None:
            self.bar.update(len(results))
        if time.monotonic() - self.written >= self.every:
            self.write()

    def write(self) -> None:
        for row, original in self.plan.duplicates.items():
            e, o = self.by_row[row], self.by_row[original]
            e.status, e.output, e.settings, e.error = o.status, o.output, o.settings, o.error
            e.similarity_before, e.similarity_after, e.bypassed = o.similarity_before, o.similarity_after, o.bypassed
            if e.status == "done":
                e.status = "skipped"
        summary.write(self.summary_path, self.plan.entries)
        self.written = time.monotonic()

    def go(self, pool, workers: int, after_task) -> None:
        try:
            if self.plan.tasks:
                try:
                    self._schedule(pool, workers, after_task)
                except BaseException:
                    pool.interrupt() if hasattr(pool, "interrupt") else pool.close()
                    raise
                pool.close()
        finally:
            if self.bar is not None:
                self.bar.close()
            self.write()

    def _schedule(self, pool, workers: int, after_task) -> None:
        pending = deque(self.plan.tasks)
        in_flight: dict[int, Task] = {}
        idle = list(pool.start(workers))
        replacements, last_reason = 0, "no worker started"
        while pending or in_flight:
            while idle and pending:
                worker = idle.pop(0)
                task = pending.popleft()
                pool.submit(worker, task)
                in_flight[worker] = task
            if not in_flight and not pool.alive():
                for task in pending:
                    self.record(failed(task.items, f"no worker left to run this row ({last_reason})"))
                return
            for event in pool.wait(timeout=1.0):
                if event[0] == "done":
                    _, worker, results = event
                    in_flight.pop(worker, None)
                    idle.append(worker)
                    self.record(results)
                    if after_task is not None:
                        after_task(pool, dict(in_flight))
                elif event[0] == "died":
                    _, worker, reason, ran = event
                    last_reason = reason
                    task = in_flight.pop(worker, None)
                    if worker in idle:
                        idle.remove(worker)
                    if task is not None and ran:
                        self.record(failed(task.items, reason))
                    elif task is not None:
                        pending.appendleft(task)  # never started: another worker takes it
                    if ran and replacements < workers:  # a worker lost mid-run is replaced (a few times at most)
                        replacements += 1
                        idle += pool.start(1)
