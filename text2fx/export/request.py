"""What an export asks for, checked once before anything heavy runs: the format, the settings, the effects the
format can express, the sample rate(s), the IR channel layout and the output path(s).

The command (`text2fx export`) and the API (`text2fx.export.export`, `Result.export`) both build an
`ExportRequest` with `check_request`, so they refuse the same things with the same one-line messages.
Imports neither torch nor numpy.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from text2fx.errors import InputError, UsageError

FORMATS = ("eqapo", "ir", "pedalboard", "sos")
# The file each format writes (pedalboard: the .py, its impulse responses beside it as <stem>.reverb.wav).
SUFFIXES = {"eqapo": ".txt", "ir": ".wav", "pedalboard": ".py", "sos": ".json"}
_WHAT = {"eqapo": "an Equalizer APO text file", "ir": "a WAV impulse response", "pedalboard": "a Python file",
         "sos": "a JSON file"}
# The effect types each format can express.
EXPRESSES = {
    "eqapo": ("eq", "gain"),
    "sos": ("eq", "gain"),
    "ir": ("eq", "gain", "reverb"),
    "pedalboard": ("eq", "gain", "reverb", "compressor", "distortion"),
}
_WHY_NOT = {
    "eqapo": "an Equalizer APO file holds only EQ filters and a preamp",
    "sos": "second-order sections hold only the EQ and its gain",
    "ir": "an impulse response holds only the linear effects eq, gain and reverb",
    "pedalboard": "pedalboard has no equivalent",
}
IR_CHANNELS = (1, 2, 4)
DEFAULT_SAMPLE_RATE = 48000
DEFAULT_SOS_RATES = (44100, 48000)
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000


@dataclass(frozen=True)
class ExportRequest:
    """A checked export: `settings` (the chain dict as read, `report.read_settings`), the effect types left out
    (`skip`), `sample_rates` (one for every format but `sos`), the IR's `channels` (ir only; None: 2 with a
    reverb, else 1), the output `path` (None: return the export instead of writing it) and the files written
    beside it (`companions`: the pedalboard file's impulse responses)."""

    format: str
    settings: dict
    source: str
    skip: tuple[str, ...]
    sample_rates: tuple[int, ...]
    channels: int | None
    path: Path | None
    companions: tuple[Path, ...]
    overwrite: bool

    @property
    def sample_rate(self) -> int:
        return self.sample_rates[0]

    @property
    def kept(self) -> list[str]:
        """The chain's effect types that are exported, in order."""
        return [t for t in effect_types(self.settings) if t not in self.skip]


def effect_types(settings: dict) -> list[str]:
    return [str(e.get("type")) if isinstance(e, dict) else "?" for e in settings["effects"]]


def _rate(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer():
        raise UsageError(f"{name} must be a whole number of Hz, got {value!r}")
    rate = int(value)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise UsageError(f"{name} {rate} Hz is outside the supported {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    return rate


def _settings_rate(raw: Any) -> int | None:
    """The sample rate a report's settings were found at (its input's), if it says."""
    if isinstance(raw, (str, os.PathLike)):
        return None  # read from the file by check_request
    if isinstance(raw, dict):
        rate = (raw.get("input") or {}).get("sample_rate") if isinstance(raw.get("input"), dict) else None
        if isinstance(rate, int) and not isinstance(rate, bool) and MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            return rate
    return None


def _read(params: Any) -> tuple[dict, str, int | None]:
    """(chain dict, source name, the report's input sample rate or None)."""
    import json

    from text2fx.report import read_settings

    source = str(params) if isinstance(params, (str, os.PathLike)) else "params"
    raw = params
    if isinstance(params, (str, os.PathLike)):
        settings = read_settings(params)  # one-line InputError for a missing/unreadable/non-settings file
        try:
            raw = json.loads(Path(params).read_text(encoding="utf-8-sig"))
        except (OSError, ValueError):  # read_settings read it a moment ago
            raw = None
    else:
        settings = read_settings(params)
    return settings, source, _settings_rate(raw)


def check_request(params: Any, to: Any, path: str | os.PathLike | None = None, *, sample_rate: Any = None,
                  channels: Any = None, skip: Any = (), overwrite: bool = False) -> ExportRequest:
    """Check everything an export needs that can be checked without torch; see `text2fx.export.export`.

    Raises:
        UsageError: unknown format, an effect the format cannot express (and not skipped), a bad skip list,
            sample rate or channel count, an output name with the wrong extension, an output that exists
            (without `overwrite`) or whose folder is missing or not writable.
        InputError: the settings cannot be read or are not a text2fx settings file / report.
    """
    if not isinstance(to, str) or to not in FORMATS:
        raise UsageError(f"unknown export format {to!r}; choose one of {', '.join(FORMATS)}")
    if not isinstance(overwrite, bool):
        raise UsageError(f"overwrite must be True or False, got {overwrite!r}")
    settings, source, found_rate = _read(params)
    types = effect_types(settings)
    spec = ",".join(types)

    if isinstance(skip, str):
        skip = [s for s in (p.strip() for p in skip.split(",")) if s]
    if not isinstance(skip, (list, tuple)) or not all(isinstance(s, str) for s in skip):
        raise UsageError(f"skip must be effect type names, e.g. 'reverb' or ['reverb', 'compressor'], got {skip!r}")
    skip = tuple(dict.fromkeys(skip))
    for s in skip:
        if s not in types:
            raise UsageError(f"cannot skip {s!r}: chain '{spec}' has no such effect")
    kept = [t for t in types if t not in skip]
    cannot = list(dict.fromkeys(t for t in kept if t not in EXPRESSES[to]))
    if cannot:
        names = ",".join(cannot)
        raise UsageError(f"chain '{spec}': {to} cannot express {names}: {_WHY_NOT[to]}; export the rest with "
                         f"--skip {names} (API: skip=\"{names}\")")
    if not kept:
        raise UsageError(f"chain '{spec}': nothing is left to export once {','.join(skip)} is skipped")

    if to == "sos":
        rates = DEFAULT_SOS_RATES if sample_rate is None else (
            sample_rate if isinstance(sample_rate, (list, tuple)) else [sample_rate])
        if not rates:
            raise UsageError("sample_rate: give at least one sample rate for the sos export")
        rates = tuple(dict.fromkeys(_rate(r, "sample rate") for r in rates))
    else:
        if isinstance(sample_rate, (list, tuple)):
            raise UsageError(f"{to} is made for one sample rate; give one, not {list(sample_rate)}")
        rates = ((found_rate or DEFAULT_SAMPLE_RATE) if sample_rate is None else _rate(sample_rate, "sample rate"),)

    if channels is not None:
        if to != "ir":
            raise UsageError(f"channels applies to the ir export only, not {to}")
        if isinstance(channels, bool) or channels not in IR_CHANNELS:
            raise UsageError(f"channels must be 1 (mono), 2 (stereo: L->L, R->R) or 4 (true stereo), got {channels!r}")

    out, companions = None, ()
    if path is not None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise UsageError(f"output path must be a file name, got {path!r}")
        out = Path(path)
        if out.suffix.lower() != SUFFIXES[to]:
            raise UsageError(f"output {out}: the {to} export is {_WHAT[to]}; give a name ending in {SUFFIXES[to]}")
        if to == "pedalboard":
            n = kept.count("reverb")
            companions = tuple(out.with_name(f"{out.stem}.reverb{'' if k == 0 else k + 1}.wav") for k in range(n))
        inputs = [Path(params)] if isinstance(params, (str, os.PathLike)) else []
        for p in (out, *companions):
            _check_output(p, inputs, overwrite)
    return ExportRequest(to, settings, source, skip, rates, channels, out, companions, overwrite)


def _check_output(path: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    from text2fx import outputs

    folder = path.parent
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"cannot write {path}: folder {folder} {what}")
    try:
        outputs.check_target(path, inputs, overwrite)
        outputs.check_writable(path)
    except UsageError:
        raise
    except InputError as e:
        raise UsageError(str(e)) from None


def load_kept(request: ExportRequest):
    """The `fx.Chain` of the exported effects (the settings' chain without the skipped ones), holding their
    settings, checked against every sample rate of the request.

    Raises:
        InputError: settings that do not describe a valid chain, or that a requested rate cannot hold (an EQ
            band above 0.46 of it).
    """
    from text2fx.report import load_chain, settings_at

    whole = load_chain(request.settings, source=request.source)
    d = whole.to_dict()  # the values as this version reads them (older files mapped)
    kept = [e for e in d["effects"] if e["type"] not in request.skip]
    chain = load_chain({"chain": ",".join(e["type"] for e in kept), "seed": d["seed"], "effects": kept},
                       source=request.source)
    for rate in request.sample_rates:
        settings_at(chain, rate)
    return chain
