"""Six-band parametric EQ (as in Text2FX): low shelf, four peaking bands, high shelf.

Ranges are those of the paper's code (``dasp_pytorch.ParametricEQ``: gains +-20 dB,
Q 0.1-6 (shelves 0.1-0.7071: a shelf's Q above 1/sqrt(2) overshoots its set gain), the same band frequency
ranges), except that the two top ranges end at a fixed
20 kHz instead of ``sr/2 - 1 kHz`` so that a setting means the same at every sample rate.
The biquads are bilinear-transform designs, so near Nyquist their responses are warped: a
band set high in the spectrum (e.g. 10 kHz) is narrower above it at 44.1 kHz than at 192 kHz
(about 3 dB less at 14-16 kHz for a +12 dB, Q 1 peak); well below Nyquist they agree.
Frequencies and Q use a log scale.

Ranges that fit the sample rate: a band frequency can be at most ``EQ_MAX_FREQ_RATIO * sample_rate``
(0.46: 20.3 kHz at 44.1 kHz, so every range is whole from 44.1 kHz up; 14.72 kHz at 32 kHz, 10.143 kHz at
22.05 kHz, 3.68 kHz at 8 kHz).  :meth:`ParametricEQ.param_ranges` gives each band's range at a rate,
``[min, min(max, 0.46 * sample_rate)]``; the unit mapping at that rate (``unit_to_physical(u, sample_rate)``,
what :class:`~fx.Chain` uses) covers exactly that range, so an optimizer never produces a frequency the rate
cannot hold and the frequency's gradient stays non-zero.  A band whose whole range lies above the limit (the
fourth peaking band below 26.1 kHz, the third below 17.4 kHz, the high shelf below 8.7 kHz) does not exist at
that rate: its gain range is ``(0, 0)`` dB (flat, whatever its frequency and Q).  Processing a physical setting
with a band above the limit and a gain other than 0 dB raises ``ValueError``: what a settings file says is
what is applied, never a band moved down the spectrum.

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
# A shelf's Q above 1/sqrt(2) (RBJ shelf slope S > 1) overshoots: at Q 6 a +20 dB shelf peaked at +34.7 dB.
# Q 1/sqrt(2) (rounded to 12 digits, as settings files hold it) is the steepest shelf without overshoot.
SHELF_MAX_Q = 0.707106781187
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
            ParamSpec(f"{s}_cutoff_freq", "Hz", lo, hi, "log", math.sqrt(lo * hi), f"{label} frequency",
                      amount="keep"),
            ParamSpec(f"{s}_q_factor", "", 0.1, SHELF_MAX_Q if "shelf" in s else 6.0, "log",
                      SHELF_MAX_Q if "shelf" in s else 1 / math.sqrt(2), f"{label} Q", amount="keep"),
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

    def upgrade_params(self, params):
        """Settings written before the shelves' Q range was limited to ``SHELF_MAX_Q`` (0.7071; it was 6)
        load with a larger shelf Q set to ``SHELF_MAX_Q``: the steepest shelf without overshoot."""
        out = super().upgrade_params(params)
        for name in ("low_shelf_q_factor", "high_shelf_q_factor"):
            v = out.get(name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and SHELF_MAX_Q < v <= 6.0:
                out[name] = SHELF_MAX_Q
        return out

    def param_ranges(self, sample_rate: float | None = None) -> dict[str, tuple[float, float]]:
        """Each parameter's ``(min, max)`` at ``sample_rate`` (see the module docstring): a band's frequency
        range ends at ``min(max, EQ_MAX_FREQ_RATIO * sample_rate)``; a band with no frequency below that has
        gain range ``(0.0, 0.0)`` (and its spec's frequency and Q ranges, which then change nothing).  ``None``
        or a rate >= 44.1 kHz: the specs' ranges.  Pure Python."""
        ranges = super().param_ranges(sample_rate)
        if sample_rate is None:
            return ranges
        limit = F.EQ_MAX_FREQ_RATIO * sample_rate
        for s in F.EQ_SECTIONS:
            lo, hi = ranges[f"{s}_cutoff_freq"]
            if hi <= limit:
                continue
            if lo < limit:
                ranges[f"{s}_cutoff_freq"] = (lo, limit)
            else:
                ranges[f"{s}_gain_db"] = (0.0, 0.0)
        return ranges

    def unit_to_physical(self, u: Tensor, sample_rate: float | None = None) -> dict[str, Tensor]:
        """As :meth:`Effect.unit_to_physical`; a band that does not exist at ``sample_rate`` (gain range
        ``(0, 0)``) is flat, and its frequency and Q are detached: no gradient at all reaches them (float
        rounding in a flat band's design would otherwise give them tiny gradients, which Adam's normalised steps
        turn into a random walk)."""
        out = super().unit_to_physical(u, sample_rate)
        if sample_rate is not None:
            ranges = self.param_ranges(sample_rate)
            for s in F.EQ_SECTIONS:
                if ranges[f"{s}_gain_db"] == (0.0, 0.0):
                    out[f"{s}_cutoff_freq"] = out[f"{s}_cutoff_freq"].detach()
                    out[f"{s}_q_factor"] = out[f"{s}_q_factor"].detach()
        return out

    def check_rate_limits(self, sample_rate: float, params) -> None:
        """``ValueError`` when a band's frequency is above ``EQ_MAX_FREQ_RATIO * sample_rate`` with a gain
        other than 0 dB (a 0 dB band is flat at every frequency).  Reads the values on the host (one sync) only
        at rates where a range is limited (below 44.1 kHz)."""
        limit = F.EQ_MAX_FREQ_RATIO * sample_rate
        limited = [s for s in F.EQ_SECTIONS if _FREQ_RANGES[s][1] > limit]
        if not limited:
            return
        freqs = torch.stack([params[f"{s}_cutoff_freq"] for s in limited]).detach().to("cpu", torch.float64)
        gains = torch.stack([params[f"{s}_gain_db"] for s in limited]).detach().to("cpu", torch.float64)
        bad = (freqs > limit * (1 + 1e-9)) & (gains != 0)
        if not bool(bad.any()):
            return
        k, i = (int(v) for v in bad.nonzero()[0])
        s = limited[k]
        lo = _FREQ_RANGES[s][0]
        where = (f"{_LABELS[s]} holds {lo:g}-{limit:g} Hz there" if lo < limit
                 else f"no {_LABELS[s]} frequency fits that rate, so its gain must be 0 dB")
        raise ValueError(
            f"eq {s}_cutoff_freq {float(freqs[k, i]):g} Hz (gain {float(gains[k, i]):g} dB) is above what "
            f"{sample_rate:g} Hz audio can hold (max {limit:g} Hz); {where}"
        )

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
            vector ``(18,)`` / ``(batch, 18)`` in ``ParametricEQ.param_specs`` order, mapped at
            ``sample_rate`` as :class:`~fx.Chain` maps it (``ParametricEQ.unit_to_physical(u, sample_rate)``).
        sample_rate: Hz.
        n_freqs: number of log-spaced frequencies from ``f_min`` to Nyquist.

    Returns:
        ``(freqs, magnitude_db)``: ``(n_freqs,)`` Hz and ``(n_freqs,)`` dB, or
        ``(batch, n_freqs)`` dB when the parameters are batched.

    Raises:
        ValueError: a missing parameter, or a band above what ``sample_rate`` can hold (as when processing).
    """
    check_sample_rate(sample_rate)
    eq = ParametricEQ()
    specs = eq.param_specs
    if isinstance(params, Tensor):
        u = params.detach().to(torch.float64)
        batched = u.ndim == 2
        phys = eq.unit_to_physical(u.reshape(-1, len(specs)), sample_rate)
    else:
        missing = [s.name for s in specs if s.name not in params]
        if missing:
            raise ValueError(f"eq_frequency_response: missing parameters {missing}")
        vals = [torch.as_tensor(params[s.name], dtype=torch.float64).detach().reshape(-1) for s in specs]
        batched = any(torch.as_tensor(params[s.name]).ndim > 0 for s in specs)
        vals = torch.broadcast_tensors(*vals)
        phys = {s.name: v for s, v in zip(specs, vals)}
        eq.check_rate_limits(sample_rate, phys)
    freqs = torch.logspace(math.log10(f_min), math.log10(sample_rate / 2), n_freqs, dtype=torch.float64)
    sos = F.eq_sos(sample_rate, **phys)
    mag_db = 20 * torch.log10(F.sos_frequency_response(sos, freqs, sample_rate).abs())
    return freqs, (mag_db if batched else mag_db[0])
