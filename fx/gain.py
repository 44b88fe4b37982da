"""Broadband gain."""

from __future__ import annotations

from torch import Tensor

from . import functional as F
from .effect import Effect, register_effect
from .params import ParamSpec

__all__ = ["Gain"]


@register_effect
class Gain(Effect):
    """``gain_db`` in [-24, 24] dB, neutral 0 dB."""

    type_name = "gain"
    tail_seconds = 0.0
    graph_safe = True
    linear = True
    param_specs = (ParamSpec("gain_db", "dB", -24.0, 24.0, "linear", 0.0, "output gain"),)

    def _process(self, audio: Tensor, sample_rate: float, params: dict[str, Tensor]) -> Tensor:
        return F.gain(audio, params["gain_db"])

    def response_length(self, sample_rate: float, samples: int) -> int:
        return 1

    def _frequency_response(self, audio: Tensor, sample_rate: float, params: dict[str, Tensor], n_fft: int) -> Tensor:
        return F.db_to_amp(params["gain_db"])[:, None, None].to(audio.dtype.to_complex()).expand(-1, 1, n_fft // 2 + 1)
