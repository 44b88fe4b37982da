"""tanh waveshaping distortion with level compensation and dry/wet mix."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from . import functional as F
from .effect import Effect, check_audio, check_sample_rate, register_effect
from .params import ParamSpec

__all__ = ["Distortion"]


@register_effect
class Distortion(Effect):
    """See :func:`fx.functional.distortion`.  Neutral: mix 0 % (any drive)."""

    type_name = "distortion"
    tail_seconds = 0.0
    graph_safe = True
    param_specs = (
        ParamSpec("drive_db", "dB", 0.0, 40.0, "linear", 0.0, "gain into the tanh shaper"),
        ParamSpec("mix", "%", 0.0, 100.0, "linear", 0.0, "share of the shaped signal"),
    )

    def process(self, audio: Tensor, sample_rate: float, params: Mapping[str, Tensor]) -> Tensor:
        check_audio(audio)
        check_sample_rate(sample_rate)
        p = self.batch_params(params, audio.shape[0], audio)
        return F.distortion(audio, p["drive_db"], p["mix"])
