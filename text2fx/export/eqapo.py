"""The EQ (and gain) as an Equalizer APO / Room EQ Wizard "generic" filter text, e.g.::

    # text2fx export of take.json, chain eq
    Preamp: -4.1000 dB
    Filter 1: ON LSC Fc 120.0000 Hz Gain 3.1000 dB Q 0.707107
    Filter 2: ON PK Fc 1000.0000 Hz Gain -2.4000 dB Q 1.200000
    ...
    Filter 6: ON HSC Fc 8000.0000 Hz Gain 4.1000 dB Q 0.707107

One ``Filter`` line per EQ band, in the EQ's order (low shelf, four peaking bands, high shelf; a band at 0 dB
is flat and kept so the numbering stays fixed).  ``LSC``/``HSC`` are Equalizer APO's shelves with the centre
(half-gain) frequency and a Q, ``PK`` its peaking filter: Equalizer APO designs all three with the Audio EQ
Cookbook formulas (RBJ, ``A = 10^(gain/40)``, ``alpha = sin(w0) / (2 Q)``), exactly as text2fx does, so the
curves agree to float rounding at every sample rate (Equalizer APO designs at the device's rate, as text2fx
designs at the audio's).  Current Equalizer APO versions read a shelf's Q (early ones ignored it and used
their default slope, 0.9); AutoEq, Peace and most parametric EQs that import this format read it too.

Preamp: the chain's gain effects, minus the headroom the EQ needs so that it never boosts above 0 dB: the
highest point of the exported curve (EQ plus gain) is found on a dense frequency grid at the export's sample
rate, and if it is above 0 dB the preamp takes that much off.  A full-scale sine at any frequency then stays
below full scale; the exported EQ is that many dB quieter than ``text2fx render`` (which keeps the level and
then applies its own peak policy to the whole file).  The header comment states the headroom.

Frequencies are written with four decimals: Equalizer APO reads a frequency with exactly three decimals
(``1234.567``) as a thousands separator (Room EQ Wizard's locale quirk), four can never be taken for one.
"""

from __future__ import annotations

import numpy as np

from text2fx.export import sos as sos_

_TYPES = {"low_shelf": "LSC", "peaking": "PK", "high_shelf": "HSC"}


def headroom_db(chain, sample_rate: int) -> float:
    """How far (dB, >= 0) the exported curve (every EQ and gain of `chain`) rises above 0 dB at
    `sample_rate`: its maximum over 1 Hz..Nyquist (a log grid of 16384 points plus each band's frequency)."""
    sections = sos_.sections(chain, sample_rate)
    nyquist = sample_rate / 2
    freqs = np.geomspace(1.0, nyquist, 16384)
    centres = [f for _, f, _, _ in sos_.eq_bands(chain) if f < nyquist]
    freqs = np.concatenate([freqs, centres, [0.0]])
    curve = sos_.response_db(sections, freqs, sample_rate) + sos_.gain_db(chain)
    return max(0.0, float(np.max(curve)))


def text(chain, sample_rate: int, skipped, source: str) -> str:
    """The filter text for `chain` (its eq and gain effects), the preamp computed at `sample_rate`."""
    headroom = headroom_db(chain, sample_rate)
    preamp = sos_.gain_db(chain) - headroom
    lines = [
        f"# text2fx export of {source}, chain {chain.spec}"
        + (f" (left out {', '.join(skipped)})" if skipped else ""),
        f"# preamp = the chain's gain ({sos_.gain_db(chain):+.4f} dB) - headroom {headroom:.4f} dB, so the curve "
        f"peaks at 0 dB or below (computed at {sample_rate} Hz)",
        f"Preamp: {preamp:.4f} dB",
    ]
    for n, (kind, freq, gain, q) in enumerate(sos_.eq_bands(chain), start=1):
        lines.append(f"Filter {n}: ON {_TYPES[kind]} Fc {freq:.4f} Hz Gain {gain:.4f} dB Q {q:.6f}")
    return "\n".join(lines) + "\n"


def write(path, content: str) -> None:
    from text2fx import audio_io

    with audio_io.atomic_path(path) as tmp:
        # CRLF: Equalizer APO is a Windows program (it reads LF too; Notepad before Windows 10 did not)
        tmp.write_bytes(content.replace("\n", "\r\n").encode("utf-8"))
