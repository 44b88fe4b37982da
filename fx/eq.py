"""Six-band parametric EQ (as in Text2FX): low shelf, four peaking bands, high shelf.

Ranges are those of the paper's code (``dasp_pytorch.ParametricEQ``: gains +-20 dB,
Q 0.1-6, the same band frequency ranges), except that the two top ranges end at a fixed
20 kHz instead of ``sr/2 - 1 kHz`` so that a setting means the same at every sample rate.
The biquads are bilinear-transform designs, so near Nyquist their responses are warped: a
band set high in the spectrum (e.g. 10 kHz) is narrower above it at 44.1 kHz than at 192 kHz
(about 3 dB less at 14-16 kHz for a +12 dB, Q 1 peak); well below Nyquist they agree.
Frequencies and Q use a log scale.  At process time every band frequency is clamped to
``0.45 * sample_rate`` (e.g. 3.6 kHz at 8 kHz): a band above that acts at 0.45 * sr.

Processing follows ``dasp_pytorch.functional.parametric_eq`` (dasp's RBJ biquad design,
applied by frequency sampling) with the coefficients designed in float64 and evaluated
in a cancellation-free form; see :func:`fx.functional.parametric_eq`.  At 0 dB gain a
band is flat, so its frequency and Q get no gradient there (inherent); the log mapping
makes a unit-space step move a band by octaves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from . import functional as F
from .effect import Effect, check_sample_rate, register_effect
from .params import ParamSpec

__all__ = ["ParametricEQ", "eq_frequency_response"]

_FREQ_RANGES = {
    "low_shelf": (20.0, 2000.0),
    "band0": (80.0, 2000.0),
    "band1": (2000.0, 8000.0),
    "band2": (8000.0, 12000.0),
    "band3": (12000.0, 20000.0),
    "high_shelf": (4000.0, 20000.0),
}
_LABELS = {
    "low_shelf": "low shelf",
    "band0": "peaking band 1",
    "band1": "peaking band 2",
    "band2": "peaking band 3",
    "band3": "peaking band 4",
    "high_shelf": "high shelf",
}


def _eq_specs() -> tuple[ParamSpec, ...]:
    specs = []
    for s in F.EQ_SECTIONS:
        lo, hi = _FREQ_RANGES[s]
        label = _LABELS[s]
        specs += [
            ParamSpec(f"{s}_gain_db", "dB", -20.0, 20.0, "linear", 0.0, f"{label} gain"),
            # neutral frequency/Q only matter as a starting point (gain 0 dB is flat):
            # the geometric centre of the range and a Butterworth-like Q
            ParamSpec(f"{s}_cutoff_freq", "Hz", lo, hi, "log", math.sqrt(lo * hi), f"{label} frequency"),
            ParamSpec(f"{s}_q_factor", "", 0.1, 6.0, "log", 1 / math.sqrt(2), f"{label} Q"),
        ]
    return tuple(specs)


@register_effect
class ParametricEQ(Effect):
    """Six-band parametric EQ over :func:`fx.functional.parametric_eq` (18 parameters)."""

    type_name = "eq"
    # The slowest ring-out in range (a +20 dB, Q 6 shelf at 20 Hz) is about 100 dB below its impulse response's
    # peak after 1.5 s (at 8 kHz; more at higher rates).
    tail_seconds = 1.5
    graph_safe = True
    linear = True
    param_specs = _eq_specs()

    def _process(self, audio: Tensor, sample_rate: float, params: dict[str, Tensor]) -> Tensor:
        return F.parametric_eq(audio, sample_rate, **params)

    def response_length(self, sample_rate: float, samples: int) -> int:
        return int(F.EQ_RESPONSE_SECONDS * sample_rate)

    def _frequency_response(self, audio: Tensor, sample_rate: float, params: dict[str, Tensor], n_fft: int) -> Tensor:
        return F.eq_response(n_fft, sample_rate, audio.dtype, **params)[:, None, :]


def eq_frequency_response(
    params: Mapping[str, Tensor | float] | Tensor,
    sample_rate: float,
    n_freqs: int = 512,
    f_min: float = 10.0,
) -> tuple[Tensor, Tensor]:
    """Magnitude response of an EQ setting, for plots and checks (float64, exact biquads).

    Args:
        params: physical values by name (floats or ``(batch,)`` tensors), or a unit-space
            vector ``(18,)`` / ``(batch, 18)`` in ``ParametricEQ.param_specs`` order.
        sample_rate: Hz (band frequencies are clamped as when processing).
        n_freqs: number of log-spaced frequencies from ``f_min`` to Nyquist.

    Returns:
        ``(freqs, magnitude_db)``: ``(n_freqs,)`` Hz and ``(n_freqs,)`` dB, or
        ``(batch, n_freqs)`` dB when the parameters are batched.
    """
    check_sample_rate(sample_rate)
    specs = ParametricEQ.param_specs
    if isinstance(params, Tensor):
        u = params.detach().to(torch.float64)
        batched = u.ndim == 2
        u = u.reshape(-1, len(specs))
        phys = {s.name: s.to_physical(u[:, i]) for i, s in enumerate(specs)}
    else:
        missing = [s.name for s in specs if s.name not in params]
        if missing:
            raise ValueError(f"eq_frequency_response: missing parameters {missing}")
        vals = [torch.as_tensor(params[s.name], dtype=torch.float64).detach().reshape(-1) for s in specs]
        batched = any(torch.as_tensor(params[s.name]).ndim > 0 for s in specs)
        vals = torch.broadcast_tensors(*vals)
        phys = {s.name: v for s, v in zip(specs, vals)}
    freqs = torch.logspace(math.log10(f_min), math.log10(sample_rate / 2), n_freqs, dtype=torch.float64)
    sos = F.eq_sos(sample_rate, **phys)
    mag_db = 20 * torch.log10(F.sos_frequency_response(sos, freqs, sample_rate).abs())
    return freqs, (mag_db if batched else mag_db[0])
