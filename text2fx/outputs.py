"""Planning where a job's files go, and checking that they can be written, before any optimization starts.

For each (input, prompt) pair a plan names the audio file, its settings file (JSON report) and the audio
format. Everything that could make a write fail after minutes of work is checked here: names that collide,
an output that is an input, files that exist (without overwrite), folders that are files, folders that
cannot be written, containers that cannot hold the audio's rate or channel count.

Imports neither torch nor the model (soundfile only).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from text2fx import audio_io
from text2fx.errors import InputError, UsageError
from text2fx.options import OutputOptions


@dataclass(frozen=True)
class OutputPlan:
    """Where one (input, prompt) result goes: `audio` in (`format`, `subtype`), its report at `params`."""

    audio: Path
    params: Path
    format: str
    subtype: str


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe form of a prompt: lower case, letters (any script) and digits joined by '-'."""
    s = re.sub(r"[\W_]+", "-", text.lower()).strip("-")
    return s[:limit].rstrip("-") or "prompt"


def unique_slugs(prompts: Sequence[str]) -> list[str]:
    """`slug` of each prompt, made unique with -2, -3, ... in order."""
    seen: dict[str, int] = {}
    out = []
    for p in prompts:
        s = slug(p)
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return out


def _audio_suffix(info: audio_io.AudioInfo) -> str:
    """The input's extension when it names a writable container, else one that does (e.g. for 'take1')."""
    if audio_io.container(Path("x" + info.path.suffix)) is not None:
        return info.path.suffix
    return "." + info.format.lower()


def _is_folder(output: str) -> bool:
    return output.endswith(("/", os.sep)) or Path(output).is_dir()


def plan(infos: Sequence[audio_io.AudioInfo], prompts: Sequence[str], options: OutputOptions,
         numbered: int = 1) -> list[OutputPlan]:
    """One plan per (input, prompt), input-major, every path and format checked. With `numbered` K > 1
    (several candidates per result, `text2fx.candidates`), K numbered plans per (input, prompt) instead:
    `take.warm.1.wav` ... `take.warm.K.wav`, each with its report (`take.warm.1.json`, or `--params`'s name
    numbered the same way).

    Raises:
        UsageError: an output that cannot or must not be written, with a one-line reason.
    """
    single = len(infos) == 1 and len(prompts) == 1
    output = None if options.output is None else str(options.output)
    if output is not None and not single and not _is_folder(output):
        if Path(output).exists() or audio_io.container(Path(output)) is not None or Path(output).suffix:
            raise UsageError(f"output {output}: with several inputs or prompts, the output must be a folder "
                             f"(end it with '/')")
    if options.params is not None and not single:
        raise UsageError("params names one file; with several inputs or prompts the settings are written "
                         "beside each output")
    slugs = unique_slugs(prompts)
    paths = []
    for info in infos:
        stem = info.path.name[: -len(info.path.suffix)] if info.path.suffix else info.path.name
        for s in slugs:
            if single and output is not None and not _is_folder(output):
                audio = Path(output)
                _check_audio_name(audio)
            else:
                folder = Path(output) if output is not None else info.path.parent
                audio = folder / f"{stem}.{s}{_audio_suffix(info)}"
            params = Path(options.params) if options.params is not None else audio.with_suffix(".json")
            for k in range(1, numbered + 1) if numbered > 1 else [None]:
                paths.append((info, _number(audio, k), _number(params, k)))

    inputs = [info.path for info in infos]
    seen: dict[Path, str] = {}
    plans = []
    for info, audio, params in paths:
        for path, what in ((audio, "audio"), (params, "settings")):
            key = path.absolute()
            if key in seen:
                raise UsageError(f"the {what} output {path} would also be written as {seen[key]} output; "
                                 f"give the outputs distinct names")
            seen[key] = what
            check_target(path, inputs, options.overwrite)
        try:
            fmt, subtype = audio_io.output_format(audio, info, options.subtype)
            check_writable(audio, info, fmt, subtype)
            check_writable(params)
        except InputError as e:  # audio_io's format errors are the caller's choice of output here
            raise UsageError(str(e)) from None
        plans.append(OutputPlan(audio, params, fmt, subtype))
    return plans


HTML_NAME = "text2fx-report.html"


def plan_html(plans: Sequence[OutputPlan], infos: Sequence[audio_io.AudioInfo], options: OutputOptions) -> Path | None:
    """Where the report page goes (`options.html`), checked like every output; None when no page is asked.

    Default: one result's page is its audio path with .html; several results share one page,
    `text2fx-report.html` in the output folder (or beside the first input)."""
    if options.html is None or options.html is False:
        return None
    if options.html is not True:
        path = Path(options.html)
    elif len(plans) == 1:
        path = plans[0].audio.with_suffix(".html")
    else:
        folder = Path(options.output) if options.output is not None else infos[0].path.parent
        path = folder / HTML_NAME
    taken = {p.absolute() for plan in plans for p in (plan.audio, plan.params)}
    if path.absolute() in taken:
        raise UsageError(f"the page {path} would also be written as another output; give it another name")
    check_target(path, [info.path for info in infos], options.overwrite)
    check_writable(path)
    return path


def _number(path: Path, k: int | None) -> Path:
    """`path` with `.k` before its extension (`take.warm.wav` -> `take.warm.2.wav`); None: `path` itself."""
    return path if k is None else path.with_name(f"{path.stem}.{k}{path.suffix}")


def _check_audio_name(audio: Path) -> None:
    suffix = audio.suffix.lower()
    if suffix == ".json":
        raise UsageError(f"output {audio} looks like a settings file; give an audio file name (e.g. .wav) "
                         f"and, if you like, the settings file with --params")
    if not suffix:
        raise UsageError(f"output {audio} has no file extension: give an audio file name such as {audio}.wav, "
                         f"or a folder ending in '/'")


def check_target(path: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse a path that is an input, an existing file (unless `overwrite`) or a folder."""
    for i in inputs:
        if path.absolute() == Path(i).absolute() or (path.exists() and Path(i).exists() and path.samefile(i)):
            raise UsageError(f"output {path} is the input file; choose another output path")
    if path.is_dir():
        raise UsageError(f"output {path} is a folder, not a file")
    if path.exists() and not overwrite:
        raise UsageError(f"output {path} already exists (use --overwrite / overwrite=True to replace it)")


def _first_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(path: Path, info: audio_io.AudioInfo | None = None, fmt: str | None = None,
                   subtype: str | None = None) -> None:
    """Fail now, not after minutes of optimization, if `path` cannot be written: a parent that is a file, a
    folder that cannot be created or written, or (for audio, given `info`) a container that refuses the
    audio's rate or channel count. Creates the folder when missing."""
    folder = Path(path).parent
    existing = _first_existing(folder.absolute())
    if not existing.is_dir():
        raise UsageError(f"cannot write {path}: {existing} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".text2fx-check-") as d:
            probe = Path(d) / f"probe{Path(path).suffix}"
            probe.write_bytes(b"")
            if info is not None:
                audio_io.check_container(probe, info, fmt, subtype, shown=Path(path))
    except OSError as e:
        raise UsageError(f"cannot write {path}: {audio_io.os_error_text(e)}") from None
