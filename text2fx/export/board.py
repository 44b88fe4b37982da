"""The chain as a `pedalboard.Pedalboard` (Spotify's pedalboard, an optional extra: ``pip install
"text2fx[pedalboard]"``), in memory or as a short Python file that rebuilds it.

Effect by effect, in chain order:

* ``eq`` -> ``LowShelfFilter``, ``PeakFilter`` x 4, ``HighShelfFilter`` (bands at 0 dB, which are flat, are
  left out).  pedalboard designs them with JUCE's ``IIR::Coefficients::makeLowShelf/makePeakFilter/
  makeHighShelf``, which are the RBJ cookbook designs with the same Q and gain (checked on impulses: the same
  responses as text2fx's biquads); JUCE runs them in float32, so a low, narrow band at a high rate (e.g. 80 Hz,
  Q 6 at 48 kHz) is accurate to about 70 dB SNR rather than text2fx's float64 design.
* ``gain`` -> ``Gain`` (exact).
* ``reverb`` -> ``Convolution`` of the reverb's 2-channel impulse response (`text2fx.export.ir`: dry path
  included, so ``mix=1.0``), followed by a ``Gain`` that undoes JUCE's impulse-response normalisation (JUCE
  scales an IR so that its loudest channel's energy is 0.125^2; the Gain restores text2fx's level).  In the
  Python file the IR is a WAV beside it (``<stem>.reverb.wav``), found relative to the file itself.  The IR is
  made at the export's sample rate: at another rate pedalboard resamples it and JUCE's normalisation then
  differs, so export again for that rate.  Stereo as in the ir export's 2-channel form (the true-stereo
  cross-feed of the side signal is lost).
* ``compressor`` -> ``Compressor`` plus a ``Gain`` for the makeup gain (pedalboard's has none).  Not the same
  compressor: text2fx's detector is the channel-linked RMS level (10 ms), its attack and release smooth the
  gain (10-90 % times) and its knee is soft; JUCE's detector is a per-channel peak follower whose attack and
  release are time constants, and its knee is hard (``knee_db`` is dropped).  The times are converted to the
  same time constants (``t_juce = t * 2 pi / 2.2``), the ratio is kept and the threshold raised by 3.01 dB, a
  sine's peak-to-RMS ratio, so that both start compressing a steady tone at the same level.
* ``distortion`` -> ``Distortion`` (``tanh(drive * x)``) in a ``Mix`` with the dry signal for the mix.  text2fx
  oversamples the shaper 4-20x by sample rate (pedalboard does not: its harmonics above Nyquist alias) and matches its output's
  loudness to the input's over a running 100 ms window; here that is one static gain, the one that matches a
  -20 dBFS RMS Gaussian signal.

Agreement with ``text2fx render``: EQ and gain >= 60 dB SNR (asserted by the tests); whole chains are measured
in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from text2fx.errors import InputError
from text2fx.export import ir as ir_
from text2fx.export import sos as sos_

PEDALBOARD_PIN = "pedalboard==0.9.26"
# JUCE's Convolution scales an impulse response so that its loudest channel has energy 0.125^2
# (juce_Convolution.cpp, calculateNormalisationFactor); pedalboard loads IRs with normalisation on.
JUCE_IR_NORM = 0.125
# torchcomp's times are 10-90 % rise times (pole exp(-2.2 / (t sr))), JUCE's BallisticsFilter's are time
# constants scaled by 2 pi (pole exp(-2 pi / (t sr))): equal poles for t_juce = t * 2 pi / 2.2.
_TIME_SCALE = 2 * math.pi / 2.2
# text2fx's threshold is on an RMS level, JUCE's on a peak envelope: a sine's peak is 3.01 dB above its RMS.
_PEAK_OVER_RMS_DB = 20 * math.log10(math.sqrt(2))
_DISTORTION_REF_RMS = 0.1  # -20 dBFS: the level at which the static make-up gain matches text2fx's loudness match
_PEDALBOARD_CLASSES = {"low_shelf": "LowShelfFilter", "peaking": "PeakFilter", "high_shelf": "HighShelfFilter"}


@dataclass
class Plugin:
    """One pedalboard plugin to build: ``pedalboard.<name>(*args, **kwargs)``; `boards` holds a ``Mix``'s
    parallel chains; `ir` a ``Convolution``'s impulse response (written beside the Python file)."""

    name: str
    kwargs: dict = field(default_factory=dict)
    boards: list[list["Plugin"]] | None = None
    ir: ir_.ImpulseResponse | None = None
    comment: str = ""


def require_pedalboard():
    """The `pedalboard` module, or an `InputError` saying how to install it."""
    try:
        import pedalboard
    except ImportError:
        raise InputError(f"the pedalboard export needs Spotify's pedalboard: pip install \"text2fx[pedalboard]\" "
                         f"(or pip install {PEDALBOARD_PIN})") from None
    return pedalboard


def _db(x: float) -> float:
    return 20.0 * math.log10(x)


def distortion_level_gain(drive_db: float, rms: float = _DISTORTION_REF_RMS) -> float:
    """rms(x) / rms(tanh(g x)) for Gaussian x of the given RMS: the static gain standing in for text2fx's running
    loudness match (computed here, on a fixed grid, not with text2fx's own helper)."""
    g = 10.0 ** (drive_db / 20.0)
    z = np.linspace(-8.0, 8.0, 4001)
    w = np.exp(-0.5 * z * z)
    w /= w.sum()
    return float(rms / math.sqrt(float((np.tanh(g * rms * z) ** 2 * w).sum())))


def plan(chain, sample_rate: int) -> list[Plugin]:
    """The plugins recreating `chain` (an `fx.Chain` holding its settings) at `sample_rate`, in order."""
    out: list[Plugin] = []
    for k, effect in enumerate(chain):
        p = chain.to_dict()["effects"][k]["params"]
        kind = effect.type_name
        if kind == "eq":
            for band_kind, freq, gain, q in sos_.eq_bands(chain[k:k + 1]):
                if gain != 0.0:
                    out.append(Plugin(_PEDALBOARD_CLASSES[band_kind],
                                      {"cutoff_frequency_hz": freq, "gain_db": gain, "q": q}))
        elif kind == "gain":
            out.append(Plugin("Gain", {"gain_db": float(p["gain_db"])}))
        elif kind == "reverb":
            ir = ir_.impulse_response(chain[k:k + 1], sample_rate, channels=2)
            if ir.latency:
                raise InputError(f"reverb pre-delay {p['predelay_ms']:g} ms is a fraction of a sample below 8 samples "
                                 f"at {sample_rate} Hz: its impulse response starts {ir.latency} samples early, which "
                                 "pedalboard's Convolution cannot hold; export it with --to ir instead")
            energy = float(np.max(np.sum(ir.audio.astype(np.float32).astype(np.float64) ** 2, axis=1)))
            out.append(Plugin("Convolution", {"mix": 1.0}, ir=ir, comment=f"reverb, mix {p['mix']:g} % (in the IR)"))
            if energy >= 1e-8:  # JUCE leaves quieter IRs alone
                out.append(Plugin("Gain", {"gain_db": _db(math.sqrt(energy) / JUCE_IR_NORM)},
                                  comment="undoes JUCE's IR normalisation"))
        elif kind == "compressor":
            out.append(Plugin("Compressor", {
                "threshold_db": float(p["threshold_db"]) + _PEAK_OVER_RMS_DB, "ratio": float(p["ratio"]),
                "attack_ms": float(p["attack_ms"]) * _TIME_SCALE, "release_ms": float(p["release_ms"]) * _TIME_SCALE,
            }, comment=f"threshold +3.01 dB (peak vs RMS detector); knee {p.get('knee_db', 0):g} dB "
                       "in text2fx, JUCE's is hard"))
            if float(p["makeup_gain_db"]) != 0.0:
                out.append(Plugin("Gain", {"gain_db": float(p["makeup_gain_db"])}, comment="compressor makeup"))
        elif kind == "distortion" and set(p) == {"drive_db", "mix"}:
            m = float(p["mix"]) / 100.0
            if m <= 0.0:
                continue
            wet = [Plugin("Distortion", {"drive_db": float(p["drive_db"])}),
                   Plugin("Gain", {"gain_db": _db(distortion_level_gain(float(p["drive_db"])) * m)},
                          comment="static loudness match x mix")]
            if m >= 1.0:
                out += wet
            else:
                out.append(Plugin("Mix", boards=[[Plugin("Gain", {"gain_db": _db(1.0 - m)}, comment="dry")], wet]))
        else:
            raise InputError(f"the pedalboard export does not know how to express {kind} "
                             f"({', '.join(sorted(p))}); leave it out with --skip {kind}")
    return out


def build(plugins: list[Plugin]):
    """The `pedalboard.Pedalboard` of `plugins` (impulse responses passed as arrays)."""
    pb = require_pedalboard()

    def make(p: Plugin):
        if p.boards is not None:
            return pb.Mix([pb.Pedalboard([make(q) for q in board]) for board in p.boards])
        if p.ir is not None:
            return pb.Convolution(p.ir.audio.astype(np.float32), sample_rate=float(p.ir.sample_rate), **p.kwargs)
        return getattr(pb, p.name)(**p.kwargs)

    return pb.Pedalboard([make(p) for p in plugins])


def python_source(plugins: list[Plugin], sample_rate: int, ir_names: list[str], chain_spec: str, skipped,
                  source: str) -> str:
    """The Python file rebuilding `plugins`: importing it defines `board` and `sample_rate`."""
    names = iter(ir_names)

    def value(v) -> str:
        return repr(float(v)) if isinstance(v, float) else repr(v)

    def lines(p: Plugin, indent: str) -> list[str]:
        note = f"  # {p.comment}" if p.comment else ""
        if p.boards is not None:
            out = [f"{indent}pedalboard.Mix([{note}"]
            for board in p.boards:
                out.append(f"{indent}    pedalboard.Pedalboard([")
                for q in board:
                    out += lines(q, indent + "        ")
                out.append(f"{indent}    ]),")
            return out + [f"{indent}]),"]
        args = ", ".join(f"{k}={value(v)}" for k, v in p.kwargs.items())
        if p.ir is not None:
            args = f"str(_HERE / {next(names)!r}), {args}"
        return [f"{indent}pedalboard.{p.name}({args}),{note}"]

    body = [line for p in plugins for line in lines(p, "    ")]
    left_out = f" (left out: {', '.join(skipped)})" if skipped else ""
    return "\n".join([
        f'"""pedalboard version of the text2fx settings {source}, chain {chain_spec}{left_out}.',
        "",
        "Made by `text2fx export --to pedalboard` for audio at `sample_rate` Hz (impulse responses are made for that",
        f"rate). Needs {PEDALBOARD_PIN} (pip install \"text2fx[pedalboard]\"). Use:",
        "",
        "    from this_file import board, sample_rate",
        "    processed = board(audio, sample_rate)   # audio: float32 (channels, samples)",
        '"""',
        "",
        "from pathlib import Path",
        "",
        "import pedalboard",
        "",
        "_HERE = Path(__file__).resolve().parent",
        f"sample_rate = {int(sample_rate)}",
        "board = pedalboard.Pedalboard([",
        *body,
        "])",
        "",
    ])


def write(path: Path, companions, plugins: list[Plugin], sample_rate: int, chain_spec: str, skipped,
          source: str) -> None:
    """Write the impulse responses (`companions`, in the order the plugins hold them) and then the Python file,
    each atomically."""
    irs = [p.ir for p in _walk(plugins) if p.ir is not None]
    for ir_path, ir in zip(companions, irs):
        ir_.write(ir_path, ir)
    from text2fx import audio_io

    text = python_source(plugins, sample_rate, [Path(c).name for c in companions], chain_spec, skipped, source)
    with audio_io.atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _walk(plugins: list[Plugin]):
    for p in plugins:
        yield p
        for board in p.boards or ():
            yield from _walk(board)
