"""The EQ (and gain) as second-order sections per sample rate, JSON, for DSP code and embedded targets.

Written file (``--to sos``)::

    {"format": "text2fx.sos/1", "chain": "eq", "skipped": [], "source": "take.json",
     "convention": "...", "gain_db": -1.5, "gain": 0.841,
     "filters": [{"sample_rate": 44100, "sos": [[b0, b1, b2, 1.0, a1, a2], ...]}, {"sample_rate": 48000, ...}]}

``sos`` follows ``scipy.signal.sosfilt``: one row per biquad, ``[b0, b1, b2, a0, a1, a2]`` with ``a0 = 1``,
run in order; six rows per EQ (low shelf, four peaking bands, high shelf, a 0 dB band being an identity
section), the EQs of the chain in chain order.  ``gain`` (linear; ``gain_db`` in dB) is the chain's broadband
gain (every ``gain`` effect together), applied after the sections.  ``y = gain * sosfilt(sos, x)`` is
``text2fx render`` of the exported effects (before render's level policy), to float rounding: the same RBJ
cookbook designs (float64) text2fx applies by frequency sampling.  No headroom is taken off here (unlike the
eqapo preamp): DSP code gets the exact response.
"""

from __future__ import annotations

import math

import numpy as np

FORMAT_ID = "text2fx.sos/1"
CONVENTION = ("scipy.signal.sosfilt: rows [b0, b1, b2, a0, a1, a2] with a0 = 1, run in order; y = gain * "
              "sosfilt(sos, x)")
# Section order and the filter each EQ parameter prefix designs (fx.functional.EQ_SECTIONS).
SECTION_KINDS = {"low_shelf": "low_shelf", "band0": "peaking", "band1": "peaking", "band2": "peaking",
                 "band3": "peaking", "high_shelf": "high_shelf"}


def eq_bands(chain) -> list[tuple[str, float, float, float]]:
    """Every EQ band of `chain` in order: (kind, frequency Hz, gain dB, Q), kind one of ``low_shelf``,
    ``peaking``, ``high_shelf``."""
    bands = []
    for effect in chain.to_dict()["effects"]:
        if effect["type"] == "eq":
            p = effect["params"]
            for s, kind in SECTION_KINDS.items():
                bands.append((kind, float(p[f"{s}_cutoff_freq"]), float(p[f"{s}_gain_db"]), float(p[f"{s}_q_factor"])))
    return bands


def gain_db(chain) -> float:
    """The chain's broadband gain in dB: the sum of its ``gain`` effects."""
    return float(sum(e["params"]["gain_db"] for e in chain.to_dict()["effects"] if e["type"] == "gain"))


def sections(chain, sample_rate: int) -> np.ndarray:
    """The EQs' biquads at `sample_rate` as text2fx designs them: ``(sections, 6)`` float64 rows
    ``[b0, b1, b2, 1, a1, a2]`` (``(0, 6)`` for a chain without an EQ)."""
    import torch
    from fx import functional as F

    rows = []
    for effect in chain.to_dict()["effects"]:
        if effect["type"] == "eq":
            params = {k: torch.tensor([float(v)], dtype=torch.float64) for k, v in effect["params"].items()}
            sos = F.eq_sos(sample_rate, **params)[0].detach().cpu().numpy().astype(np.float64)
            rows.append(sos / sos[:, 3:4])  # a0 = 1 (dasp's design already normalises; made explicit)
    return np.concatenate(rows) if rows else np.zeros((0, 6))


def response_db(sos: np.ndarray, freqs: np.ndarray, sample_rate: int) -> np.ndarray:
    """Magnitude (dB) of a cascade of sections at `freqs` (Hz), evaluated directly in float64."""
    z = np.exp(-1j * 2 * math.pi * np.asarray(freqs, dtype=np.float64) / sample_rate)
    h = np.ones_like(z)
    for b0, b1, b2, a0, a1, a2 in sos:
        h *= (b0 + b1 * z + b2 * z * z) / (a0 + a1 * z + a2 * z * z)
    return 20 * np.log10(np.abs(h))


def document(chain, sample_rates, skipped, source: str) -> dict:
    """The JSON-ready export (see the module docstring)."""
    g = gain_db(chain)
    return {
        "format": FORMAT_ID,
        "chain": chain.spec,
        "skipped": list(skipped),
        "source": source,
        "convention": CONVENTION,
        "gain_db": g,
        "gain": 10.0 ** (g / 20.0),
        "filters": [{"sample_rate": int(r), "sos": sections(chain, r).tolist()} for r in sample_rates],
    }


def write(path, doc: dict) -> None:
    import json

    from text2fx import audio_io

    with audio_io.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
