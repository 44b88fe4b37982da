"""tanh waveshaping distortion: oversampled by sample rate against aliasing, loudness-matched, with a dry/wet mix."""

from __future__ import annotations

from torch import Tensor

from . import functional as F
from .effect import Effect, register_effect
from .params import ParamSpec

__all__ = ["Distortion"]


@register_effect
class Distortion(Effect):
    """See :func:`fx.functional.distortion`.  Neutral: mix 0 % (any drive)."""

    type_name = "distortion"
    # the loudness window (100 ms) plus the resampling filters' reach (96 samples, 12 ms at 8 kHz)
    tail_seconds = F.LEVEL_WINDOW_SECONDS + 2 * F.OVERSAMPLING_HALF_TAPS / 8000
    lookahead_seconds = 2 * F.OVERSAMPLING_HALF_TAPS / 8000
    graph_safe = True
    param_specs = (
        ParamSpec("drive_db", "dB", 0.0, 40.0, "linear", 0.0, "gain into the tanh shaper"),
        ParamSpec("mix", "%", 0.0, 100.0, "linear", 0.0, "share of the shaped signal"),
    )

    def _process(self, audio: Tensor, sample_rate: float, params: dict[str, Tensor]) -> Tensor:
        return F.distortion(audio, params["drive_db"], params["mix"], sample_rate)
