"""A batch manifest: one item per row (an input file, a prompt, optional per-row options), read and checked.

CSV (a header naming the columns) or JSONL (one JSON object a line). Columns: `input` (required; relative
paths are relative to the manifest's folder), `prompt` (required unless the command gives `--prompt`), and
optionally `chain`, `preset`, `seed`, `loss`, `steps`, `lr`, `restarts`, `init`, `excerpts`, `template`,
`anchor`, `subtype`, `keep_length` (true/false; CSV also 1/0, yes/no). An empty cell (CSV) or a missing key / null (JSONL) takes the command line's default.

Every row is checked with the options layer (`JobOptions`), so a bad value fails that row with the same
one-line message the command gives; an unknown CSV column refuses the whole manifest (a typo in a header
would otherwise silently drop an option for every row). Torch-free.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from text2fx.errors import Text2FXError, UsageError
from text2fx.options import JobOptions

RECIPE_COLUMNS = ("loss", "steps", "lr", "restarts", "init", "excerpts")
OPTION_COLUMNS = ("chain", "preset", "seed", "template", "anchor", "subtype", "keep_length") + RECIPE_COLUMNS
COLUMNS = ("input", "prompt") + OPTION_COLUMNS
# the columns that are `JobOptions` fields of their own (the recipe's go into `recipe_changes`)
JOB_COLUMNS = ("chain", "preset", "seed", "template", "anchor", "keep_length")
_INTEGERS = {"seed", "steps", "restarts", "excerpts"}
_REALS = {"lr"}
_FLAGS = {"keep_length"}
_FLAG_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass
class RawRow:
    """A manifest row as read: its number (1-based, data rows only), its fields, or why it cannot be read."""

    number: int
    fields: dict
    error: str | None = None


@dataclass(frozen=True)
class Row:
    """A checked row: where its input is, what it asks for, and the hash of those settings.

    `settings` is everything that decides the row's output (input path, prompt, options, sample format);
    `settings_hash` (sha256 of it) names the output files and is recorded in the report, so a re-run can
    tell that an existing output was made for exactly this row.
    """

    number: int
    input: Path
    prompt: str
    options: JobOptions
    subtype: str | None
    settings: dict
    settings_hash: str

    @property
    def group_key(self) -> str:
        """Rows with the same key can share one optimization batch (same chain, preset, recipe, seed, texts)."""
        o = self.options
        return json.dumps([o.chain, o.preset, sorted(o.recipe_changes.items()), o.seed, o.template, o.anchor,
                           o.keep_length])


def read(path: str | Path) -> list[RawRow]:
    """The rows of a CSV or JSONL manifest.

    Raises:
        UsageError: the manifest is missing, unreadable, of an unknown kind, empty, or its CSV header lacks
            `input` or names an unknown column.
    """
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".csv", ".jsonl", ".ndjson"):
        raise UsageError(f"manifest {path}: use a .csv file (with a header) or a .jsonl file (one JSON object a line)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"manifest not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read manifest {path}: {' '.join(str(e).split())}") from None
    rows = _read_csv(path, text) if kind == ".csv" else _read_jsonl(text)
    if not rows:
        raise UsageError(f"manifest {path} has no rows")
    return rows


def _read_csv(path: Path, text: str) -> list[RawRow]:
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    if "input" not in header:
        raise UsageError(f"manifest {path}: the CSV header must name an 'input' column (columns: {', '.join(COLUMNS)})")
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise UsageError(f"manifest {path}: unknown column {unknown[0]!r}; columns are {', '.join(COLUMNS)}")
    reader.fieldnames = header
    rows = []
    for record in reader:
        if not any((v or "").strip() for k, v in record.items() if k is not None):
            continue  # a blank line
        fields = {k: v.strip() for k, v in record.items() if k is not None and v is not None and v.strip()}
        error = "more cells than the header has columns" if None in record else None
        rows.append(RawRow(len(rows) + 1, fields, error))
    return rows


def _read_jsonl(text: str) -> list[RawRow]:
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        number = len(rows) + 1
        try:
            fields = json.loads(line)
        except json.JSONDecodeError as e:
            rows.append(RawRow(number, {}, f"line {line_no} is not valid JSON: {e.msg}"))
            continue
        if not isinstance(fields, dict):
            rows.append(RawRow(number, {}, f"line {line_no}: expected a JSON object, got {type(fields).__name__}"))
            continue
        unknown = [k for k in fields if k not in COLUMNS]
        error = f"unknown field {unknown[0]!r}; fields are {', '.join(COLUMNS)}" if unknown else None
        rows.append(RawRow(number, {k: v for k, v in fields.items() if v is not None}, error))
    return rows


def _typed(name: str, value):
    """A CSV cell (text) as the type its column holds; JSON values are passed on as they are."""
    if not isinstance(value, str):
        return value
    if name in _INTEGERS:
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"{name} must be an integer, got {value!r}") from None
    if name in _FLAGS:
        try:
            return _FLAG_WORDS[value.lower()]
        except KeyError:
            raise UsageError(f"{name} must be true or false, got {value!r}") from None
    if name in _REALS:
        try:
            return float(value)
        except ValueError:
            raise UsageError(f"{name} must be a number, got {value!r}") from None
    return value


def check(raw: RawRow, defaults: dict, base: Path) -> Row:
    """The checked `Row` of `raw`, its missing options taken from `defaults` (column -> value).

    Raises:
        InputError / UsageError: one line saying what is wrong with this row.
    """
    if raw.error is not None:
        raise UsageError(raw.error)
    fields = {**{k: v for k, v in defaults.items() if v is not None}, **raw.fields}
    values = {k: _typed(k, v) for k, v in fields.items()}
    if "input" not in values or not isinstance(values["input"], str) or not values["input"].strip():
        raise UsageError("no input file in this row")
    if "prompt" not in values:
        raise UsageError("no prompt in this row (add a 'prompt' column, or give --prompt for every row)")
    changes = {k: values[k] for k in RECIPE_COLUMNS if k in values}
    options = JobOptions(prompts=values["prompt"], **{k: values[k] for k in JOB_COLUMNS if k in values},
                         recipe_changes=changes)
    subtype = values.get("subtype")
    if subtype is not None and not isinstance(subtype, str):
        raise UsageError(f"subtype must be a sample format name such as PCM_24, got {subtype!r}")
    path = Path(values["input"]).expanduser()
    path = (path if path.is_absolute() else base / path).absolute()
    settings = {
        "input": str(path), "prompt": options.prompts[0], "chain": options.chain, "preset": options.preset,
        "recipe_changes": dict(sorted(options.recipe_changes.items())), "seed": options.seed,
        "template": options.template, "anchor": options.anchor, "subtype": subtype,
        "keep_length": options.keep_length,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return Row(raw.number, path, options.prompts[0], options, subtype, settings, digest)


def one_line(e: BaseException) -> str:
    """An error as the one line the summary shows (as the command would print it, without its prefix)."""
    import sys

    torch = sys.modules.get("torch")
    if isinstance(e, Text2FXError):
        return " ".join(str(e).split())
    if torch is not None and isinstance(e, getattr(torch, "OutOfMemoryError", ())):
        return "out of device memory; lower --max-batch, --restarts or --excerpts"
    return f"internal error ({type(e).__name__}): {' '.join(str(e).split())}"
