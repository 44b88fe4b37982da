"""Broadband gain."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from . import functional as F
from .effect import Effect, check_audio, check_sample_rate, register_effect
from .params import ParamSpec

__all__ = ["Gain"]


@register_effect
class Gain(Effect):
    """``gain_db`` in [-24, 24] dB, neutral 0 dB."""

    type_name = "gain"
    tail_seconds = 0.0
    graph_safe = True
    param_specs = (ParamSpec("gain_db", "dB", -24.0, 24.0, "linear", 0.0, "output gain"),)

    def process(self, audio: Tensor, sample_rate: float, params: Mapping[str, Tensor]) -> Tensor:
        check_audio(audio)
        check_sample_rate(sample_rate)
        p = self.batch_params(params, audio.shape[0], audio)
        return F.gain(audio, p["gain_db"])
