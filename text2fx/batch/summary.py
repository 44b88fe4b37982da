"""The batch summary: one line per manifest row (status, similarity before/after, output and settings files,
time, error), as CSV or JSONL by the file's extension, rewritten atomically so a reader (or an interrupted
run) never sees a partial table."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

FIELDS = ("row", "input", "prompt", "status", "similarity_before", "similarity_after", "bypassed", "output",
          "settings", "seconds", "error", "note")
STATUSES = ("done", "skipped", "failed", "pending")


@dataclass
class Entry:
    """A manifest row's state: "pending" (not run yet, or in flight when the run stopped), "done", "skipped"
    (its output and report from an earlier run match its settings) or "failed" (`error` says why)."""

    row: int
    input: str | None = None
    prompt: str | None = None
    status: str = "pending"
    similarity_before: float | None = None
    similarity_after: float | None = None
    bypassed: bool | None = None
    output: str | None = None
    settings: str | None = None
    seconds: float | None = None
    error: str | None = None
    note: str | None = None


def kind(path: Path) -> str:
    return "jsonl" if Path(path).suffix.lower() in (".jsonl", ".ndjson") else "csv"


def render(entries: list[Entry], fmt: str) -> str:
    rows = []
    for e in entries:
        d = asdict(e)
        for k in ("similarity_before", "similarity_after"):
            d[k] = None if d[k] is None else round(float(d[k]), 6)
        d["seconds"] = None if d["seconds"] is None else round(float(d["seconds"]), 3)
        rows.append(d)
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return buffer.getvalue()


def write(path: Path, entries: list[Entry]) -> None:
    """Write the whole table to `path` atomically (a temporary file renamed over it)."""
    from text2fx import audio_io

    path = Path(path)
    with audio_io.atomic_path(path) as tmp:
        tmp.write_text(render(entries, kind(path)), encoding="utf-8")


def read(path: Path) -> list[dict]:
    """The rows of a summary written by `write` (CSV values as text)."""
    text = Path(path).read_text(encoding="utf-8")
    if kind(path) == "jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return list(csv.DictReader(text.splitlines()))
