"""Exports of saved settings that other tools read: `text2fx export PARAMS.json --to FORMAT -o FILE`,
`text2fx.export.export(...)` and `Result.export(...)`.  No CLAP is needed.

Formats (one module each):

* ``eqapo`` (`text2fx.export.eqapo`): Equalizer APO / Room EQ Wizard "generic" filter text (``.txt``): a
  preamp and one ``LSC``/``PK``/``HSC`` line per EQ band.  EQ and gain only.
* ``ir`` (`text2fx.export.ir`): the linear chain (eq, gain, reverb) as an impulse-response WAV (``.wav``, 32-bit
  float, not normalised) for convolution reverbs; 1, 2 or 4 (true stereo) channels.
* ``pedalboard`` (`text2fx.export.board`): a `pedalboard.Pedalboard` (API) or a Python file defining ``board``
  and ``sample_rate`` (``.py``, the reverb's IR written beside it).  Every effect.
* ``sos`` (`text2fx.export.sos`): the EQ's second-order sections per sample rate plus the gain (``.json``,
  ``scipy.signal.sosfilt`` convention).  EQ and gain only.

A chain holding an effect the format cannot express is refused (one line naming it); ``skip`` (``--skip``)
leaves effect types out on purpose, e.g. ``skip="reverb"`` exports an ``eq,reverb`` chain's EQ.  Every check
(format, settings, effects, sample rate, channels, output name and folder, existing files) runs before any
work; files are written atomically and never replaced without ``overwrite``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from text2fx.export.request import EXPRESSES, FORMATS, SUFFIXES, ExportRequest, check_request

__all__ = ["EXPRESSES", "FORMATS", "SUFFIXES", "ExportRequest", "check_request", "export", "run"]


def export(params: Any, to: str, path: str | os.PathLike | None = None, *, sample_rate: Any = None,
           channels: int | None = None, skip: Any = (), overwrite: bool = False):
    """Export saved settings.

    Args:
        params: a report or its ``chain`` part (dict), or a path to a JSON file holding either.
        to: ``"eqapo"``, ``"ir"``, ``"pedalboard"`` or ``"sos"``.
        path: the file to write (``.txt``, ``.wav``, ``.py``, ``.json`` by format); None returns the export.
        sample_rate: Hz the export is made for; default the report's input rate, else 48000.  ``sos``: one
            rate or a list (default 44100 and 48000).
        channels: ``ir`` only: 1, 2 (default with a reverb) or 4 (true stereo); see `text2fx.export.ir`.
        skip: effect types to leave out (``"reverb"``, ``"reverb,compressor"`` or a list).
        overwrite: replace existing files.

    Returns:
        with `path`: the `Path` written (pedalboard: the .py; its IRs are beside it).  Without: ``eqapo``
        the text (str), ``sos`` the JSON-ready dict, ``ir`` a `text2fx.export.ir.ImpulseResponse` (``audio``
        ``(channels, samples)`` float64, ``sample_rate``, ``latency``), ``pedalboard`` a
        ``pedalboard.Pedalboard``.

    Raises:
        UsageError: a bad format, option or output (see `check_request`).
        InputError: unreadable or invalid settings, settings a sample rate cannot hold, pedalboard missing.
    """
    return run(check_request(params, to, path, sample_rate=sample_rate, channels=channels, skip=skip,
                             overwrite=overwrite))


def run(request: ExportRequest, note=None):
    """Carry out a checked request (see `export`); `note(text)`, when given, gets a one-line description of what
    was made (the command prints it)."""
    from text2fx.export import request as request_

    if request.format == "pedalboard":
        from text2fx.export import board

        board.require_pedalboard()  # before any work: a missing extra is a one-line error
    chain = request_.load_kept(request)
    skipped = list(request.skip)
    if request.format == "eqapo":
        from text2fx.export import eqapo

        content = eqapo.text(chain, request.sample_rate, skipped, _name(request.source))
        if note is not None:
            note(f"preamp {next(l for l in content.splitlines() if l.startswith('Preamp:'))[8:]}, "
                 f"{sum(l.startswith('Filter') for l in content.splitlines())} filters")
        if request.path is None:
            return content
        eqapo.write(request.path, content)
    elif request.format == "sos":
        from text2fx.export import sos

        doc = sos.document(chain, request.sample_rates, skipped, _name(request.source))
        if request.path is None:
            return doc
        sos.write(request.path, doc)
    elif request.format == "ir":
        from text2fx.export import ir

        response = ir.impulse_response(chain, request.sample_rate, request.channels)
        if note is not None:
            a = response.audio
            note(f"{a.shape[0]} channel(s), {a.shape[1] / response.sample_rate:.2f} s at {response.sample_rate} Hz, "
                 f"peak {abs(a).max():.3f}, latency {response.latency} samples")
        if request.path is None:
            return response
        ir.write(request.path, response)
    else:
        from text2fx.export import board

        plugins = board.plan(chain, request.sample_rate)
        if request.path is None:
            return board.build(plugins)
        board.write(request.path, request.companions, plugins, request.sample_rate, chain.spec, skipped,
                    _name(request.source))
    return request.path


def _name(source: str) -> str:
    return Path(source).name if source != "params" else "in-memory settings"
