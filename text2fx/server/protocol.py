"""A server request's JSON -> a checked pipeline job, and a finished job -> the answer's JSON.

The request's fields are the command's options by their Python names (the wire format is described in
`text2fx.client`). They are turned into the same `JobOptions` / `OutputOptions` the command builds, so a bad
value is refused with the command's one-line message; paths are checked by `text2fx.pipeline.file_job`, as the
command checks them. A field this module does not know is refused rather than ignored (a typo must not pick a
behaviour). Imports neither torch nor the model; numpy and soundfile only for audio sent in the request.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from text2fx.errors import UsageError
from text2fx.options import JobOptions, OutputOptions
from text2fx.recipe import Recipe

RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))
# Every JobOptions field by its own name (prompts, chain, preset, seed, template, anchor, keep_length, ...),
# "prompt" for one prompt, and the recipe's fields one by one instead of recipe_changes.
JOB_FIELDS = ("prompt",) + tuple(f.name for f in dataclasses.fields(JobOptions) if f.name != "recipe_changes")
# JobOptions fields that may hold a path on the server's machine (a reference to match, previous settings)
JOB_PATH_FIELDS = ("like", "previous")
OUTPUT_FIELDS = ("output", "params", "subtype", "overwrite", "html")
# Must name what the server runs (checked by the server against its engine); max_batch may differ per job.
ENGINE_FIELDS = ("embedder", "device", "precision", "checkpoint", "tokenizer", "max_batch")
SOURCE_FIELDS = ("inputs", "audio")
KNOWN_FIELDS = frozenset(JOB_FIELDS + RECIPE_FIELDS + OUTPUT_FIELDS + ENGINE_FIELDS + SOURCE_FIELDS)
AUDIO_FORMATS = ("file", "float32")


@dataclass
class Request:
    """A checked request: the pipeline job and how to answer it.

    Attributes:
        job: the `text2fx.pipeline.Job`, its inputs probed and outputs planned.
        kind: "paths" (files on the server's machine, written where the command writes them), "file" (audio
            files sent in the request, answered as files of the same format) or "float32" (samples sent and
            answered as interleaved float32 frames).
        engine: the request's engine fields (device, precision, checkpoint, tokenizer, max_batch) as given.
        names: for "file": each sent file's name (as the report's input path) in input order.
        temp: a private folder holding sent files and their outputs; removed by `cleanup`.
    """

    job: object
    kind: str
    engine: dict = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    temp: Path | None = None

    def cleanup(self) -> None:
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)
            self.temp = None


def parse(body, temp_root: str | None = None) -> Request:
    """Check a request's JSON object and build its job (inputs probed, outputs planned, nothing run).

    Raises:
        UsageError: a bad field or option (the command's message); InputError: unreadable input files.
    """
    from text2fx import pipeline

    if not isinstance(body, dict):
        raise UsageError(f"the request must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise UsageError(f"unknown field {unknown[0]!r}; known: {', '.join(sorted(KNOWN_FIELDS))}")
    options = job_options(body)
    engine = {k: body[k] for k in ENGINE_FIELDS if body.get(k) is not None}
    for name in ("checkpoint", "tokenizer"):
        if name in engine:
            engine[name] = _absolute(engine[name], name)
    has_inputs, has_audio = body.get("inputs") is not None, body.get("audio") is not None
    if has_inputs == has_audio:
        raise UsageError("give either inputs (paths on the server's machine) or audio (sent in the request)")
    if has_inputs:
        inputs = body["inputs"]
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not all(isinstance(p, str) for p in inputs):
            raise UsageError("inputs must be a path or a list of paths")
        paths = [_absolute(p, "input") for p in inputs]
        job = pipeline.file_job(paths, options, output_options(body))
        return Request(job, "paths", engine)
    given = [k for k in OUTPUT_FIELDS if k != "subtype" and body.get(k) not in (None, False)]
    if given:
        raise UsageError(f"{given[0]}: only for inputs given as paths; audio sent in the request comes back in "
                         f"the answer")
    return _audio_request(body["audio"], options, body.get("subtype"), engine, temp_root)


def job_options(body: dict) -> JobOptions:
    """The request's `JobOptions`, built as the command builds them: a missing or null field takes the
    command's default (a null `chain` is passed on, as the API takes it); a null recipe field the preset's,
    except `patience`: null disables the early stop, as in `Engine.apply`."""
    if body.get("prompts") is not None and body.get("prompt") is not None:
        raise UsageError("give prompts or prompt, not both")
    prompts = body.get("prompts") if body.get("prompts") is not None else body.get("prompt")
    changes = {k: body[k] for k in RECIPE_FIELDS if k in body and (body[k] is not None or k == "patience")}
    fields = {k: body[k] for k in JOB_FIELDS if k not in ("prompt", "prompts") and body.get(k) is not None}
    if "chain" in body and body["chain"] is None:
        fields["chain"] = None
    for name in JOB_PATH_FIELDS:
        if isinstance(fields.get(name), str):
            fields[name] = _absolute(fields[name], name)
    return JobOptions(prompts=prompts, recipe_changes=changes, **fields)


def output_options(body: dict) -> OutputOptions:
    html = body.get("html")
    if isinstance(html, str):
        html = _absolute(html, "html")
    output = body.get("output")
    if isinstance(output, str):
        output = _absolute(output, "output")
    params = body.get("params")
    if isinstance(params, str):
        params = _absolute(params, "params")
    return OutputOptions(output=output, params=params, subtype=body.get("subtype"),
                         overwrite=False if body.get("overwrite") is None else body["overwrite"], html=html)


def _absolute(path, what: str) -> str:
    """A path on the server's machine; must be absolute, since the server does not share the client's working
    folder (a trailing separator, meaning a folder, is kept)."""
    if not isinstance(path, str) or not path:
        raise UsageError(f"{what} must be a path, got {path!r}")
    if not os.path.isabs(path):
        raise UsageError(f"{what} path must be absolute (the server does not know your working folder): {path}")
    return path


def _audio_request(audio, options: JobOptions, subtype, engine: dict, temp_root: str | None) -> Request:
    from text2fx import pipeline

    items = audio if isinstance(audio, list) else [audio]
    if not items or not all(isinstance(a, dict) for a in items):
        raise UsageError("audio must be an object {\"format\": \"file\" or \"float32\", \"data\": BASE64, ...} "
                         "or a list of them")
    formats = {a.get("format") for a in items}
    if len(formats) != 1 or not formats <= set(AUDIO_FORMATS):
        raise UsageError(f"audio format must be one of {', '.join(AUDIO_FORMATS)}, the same for every item; "
                         f"got {sorted(map(str, formats))}")
    fmt = formats.pop()
    for a in items:
        extra = sorted(set(a) - {"format", "data", "name", "sample_rate", "channels"})
        if extra:
            raise UsageError(f"audio: unknown field {extra[0]!r}")
    if fmt == "float32":
        if subtype is not None:
            raise UsageError("subtype: only for audio files; float32 samples come back as float32")
        arrays, rates = zip(*(_samples(a, i, len(items)) for i, a in enumerate(items)))
        job = pipeline.array_job(list(arrays), list(rates), options)
        return Request(job, "float32", engine)
    temp = Path(tempfile.mkdtemp(prefix="text2fx-serve-", dir=temp_root))
    try:
        names, paths = [], []
        for i, a in enumerate(items):
            name, path = _sent_file(a, temp / f"in{i}", len(items) > 1 and i)
            names.append(name)
            paths.append(path)
        out = OutputOptions(output=str(temp / "out") + os.sep, subtype=subtype)
        job = pipeline.file_job(paths, options, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return Request(job, "file", engine, names, temp)


def _data(item: dict, what: str) -> bytes:
    data = item.get("data")
    if not isinstance(data, str):
        raise UsageError(f"{what}: data must be a base64 string")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{what}: data is not valid base64") from None


def _samples(item: dict, index: int, count: int):
    """Interleaved little-endian float32 frames -> `(channels, samples)` float32 and the sample rate."""
    import numpy as np

    from text2fx.checks import integer
    from text2fx.errors import InputError
    from text2fx.options import sample_rate_value

    what = "audio" if count == 1 else f"audio {index}"
    raw = _data(item, what)
    rate = sample_rate_value(item.get("sample_rate"), f"{what}: sample_rate")
    try:
        channels = integer(item.get("channels", 1), f"{what}: channels", 1)
    except InputError as e:
        raise UsageError(str(e)) from None
    if len(raw) % (4 * channels):
        raise UsageError(f"{what}: {len(raw)} bytes are not whole frames of {channels} float32 samples")
    return np.frombuffer(raw, dtype="<f4").reshape(-1, channels).T.astype(np.float32), rate


def _sent_file(item: dict, folder: Path, index) -> tuple[str, Path]:
    """Write a sent audio file into `folder`, named after its `name` (so outputs are named as the command names
    them); returns (its name for the report, its path)."""
    import io

    import soundfile as sf

    what = "audio" if index is False else f"audio {index}"
    raw = _data(item, what)
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        raise UsageError(f"{what}: name must be a string")
    name = os.path.basename(name or "audio")
    stem, suffix = os.path.splitext(name)
    try:
        fmt = sf.info(io.BytesIO(raw)).format
    except Exception as e:  # libsndfile reports corrupt and unsupported data alike
        raise UsageError(f"cannot read {name} as audio (corrupt or unsupported format): "
                         f"{' '.join(str(e).split())}") from None
    if suffix.lower().lstrip(".") not in {f.lower() for f in sf.available_formats()} | {"aif", "oga", "opus"}:
        suffix = "." + fmt.lower()
    folder.mkdir()
    path = folder / ((re.sub(r"[^\w.-]+", "_", stem).strip(".") or "audio") + suffix)
    path.write_bytes(raw)
    return name, path


def answer(request: Request, results: list, seconds: float, device: str) -> dict:
    """The answer to a finished job: each result's report and where it went (or its audio). Several
    candidates of one input and goal are listed one after another, as the command writes them."""
    flat = [r for result in results for r in (getattr(result, "candidates", None) or [result])]
    plans = {str(p.audio): p for p in request.job.plans or []}
    names = {str(s.path): name for s, name in zip(request.job.sources, request.names)}
    out = []
    for result in flat:
        report = result.report()
        entry: dict = {"report": report}
        if request.kind == "paths":
            entry.update(audio_path=result.output_path, params_path=str(plans[result.output_path].params))
        elif request.kind == "file":
            sent, written = Path(result.input["path"]), Path(result.output_path)
            name = names[str(sent)]
            report["input"] = {**report["input"], "path": name}
            report["output"] = {**report["output"], "path": None}
            # the command's name for the output (STEM.PROMPT-SLUG.EXT), with the sent file's own stem
            entry["audio"] = {"format": "file", "name": os.path.splitext(name)[0] + written.name[len(sent.stem):],
                              "data": base64.b64encode(written.read_bytes()).decode("ascii")}
        else:
            import numpy as np

            frames = np.ascontiguousarray(result.audio.T, dtype="<f4")
            entry["audio"] = {"format": "float32", "sample_rate": result.sample_rate, "channels": frames.shape[1],
                              "data": base64.b64encode(frames.tobytes()).decode("ascii")}
        out.append(entry)
    html = request.job.html if request.kind == "paths" else None
    return {"results": out, "html": None if html is None else str(html), "seconds": round(seconds, 3),
            "device": device}
