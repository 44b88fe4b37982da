"""`text2fx export PARAMS.json --to FORMAT -o FILE`: saved settings in a form other tools read (no CLAP)."""

from __future__ import annotations

import argparse

from text2fx.errors import UsageError
from text2fx.export.request import FORMATS, IR_CHANNELS, SUFFIXES


def _parser() -> argparse.ArgumentParser:
    from text2fx.cli import _Parser

    p = _Parser(prog="text2fx export", description="Export saved effect settings (a text2fx report or its "
                "'chain' part) for other tools; no CLAP needed.",
                epilog="eqapo: Equalizer APO / Room EQ Wizard filter text (.txt; eq, gain). ir: impulse-response "
                "WAV of the linear chain (.wav; eq, gain, reverb). pedalboard: Python file defining `board` and "
                "`sample_rate` (.py; every effect; needs pip install \"text2fx[pedalboard]\"). sos: second-order "
                "sections per sample rate (.json; eq, gain).")
    p.add_argument("params", metavar="PARAMS.json", help="a text2fx report or its 'chain' part")
    p.add_argument("--to", required=True, metavar="FORMAT", help=f"one of {', '.join(FORMATS)}")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="file to write: " + ", ".join(f"{k} {v}" for k, v in SUFFIXES.items()))
    p.add_argument("--sample-rate", action="append", metavar="HZ",
                   help="rate the export is made for (default: the report's input rate, else 48000); sos takes "
                   "several (repeat or comma-separate; default 44100,48000)")
    p.add_argument("--channels", type=int, metavar="N", help="ir only: 1 (mono), 2 (L->L, R->R; the default with a "
                   f"reverb) or 4 (true stereo: L->L, L->R, R->L, R->R); one of {IR_CHANNELS}")
    p.add_argument("--skip", metavar="TYPES", default="",
                   help="effect types to leave out, e.g. --skip reverb to export an eq,reverb chain's EQ")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def _rates(values: list[str] | None):
    if not values:
        return None
    rates = []
    for v in values:
        for part in v.split(","):
            part = part.strip()
            try:
                rates.append(int(part))
            except ValueError:
                raise UsageError(f"--sample-rate must be a whole number of Hz, got {part!r}") from None
    return rates if len(rates) > 1 else rates[0]


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from text2fx import export

    request = export.check_request(args.params, args.to, args.output, sample_rate=_rates(args.sample_rate),
                                   channels=args.channels, skip=args.skip, overwrite=args.overwrite)
    notes: list[str] = []
    export.run(request, notes.append)
    if not args.quiet:
        extra = "".join(f", {n}" for n in notes)
        also = "".join(f" and {c}" for c in request.companions)
        rates = ",".join(str(r) for r in request.sample_rates)
        left = f", left out {','.join(request.skip)}" if request.skip else ""
        print(f"wrote {request.path}{also}  ({args.to}, chain {','.join(request.kept)}{left}, {rates} Hz{extra})")
    return 0
