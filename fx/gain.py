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
    linear = True
    param_specs = (ParamSpec("gain_db", "dB", -24.0, 24.0, "linear", 0.0, "output gain"),)

    def process(self, audio: Tensor, sample_rate: float, params: Mapping[str, Tensor]) -> Tensor:
        check_audio(audio)
        check_sample_rate(sample_rate)
        p = self.batch_params(params, audio.shape[0], audio)
        return F.gain(audio, p["gain_db"])

    def response_length(self, sample_rate: float, samples: int) -> int:
        return 1

    def frequency_response(
        self, audio: Tensor, sample_rate: float, params: Mapping[str, Tensor], n_fft: int
    ) -> Tensor:
        check_audio(audio)
        check_sample_rate(sample_rate)
        p = self.batch_params(params, audio.shape[0], audio)
        return F.db_to_amp(p["gain_db"])[:, None, None].to(audio.dtype.to_complex()).expand(-1, 1, n_fft // 2 + 1)
