"""Soft-knee compressor with an RMS detector and real attack and release (over ``torchcomp``)."""

from __future__ import annotations

from torch import Tensor

from . import functional as F
from .effect import Effect, register_effect
from .params import ParamSpec

__all__ = ["Compressor"]


@register_effect
class Compressor(Effect):
    """See :func:`fx.functional.compressor`.  Neutral: threshold 0 dBFS, ratio 1, makeup 0 dB (knee 6 dB).

    A settings dict without ``knee_db`` (written before it existed) loads with ``knee_db = 0`` (hard knee),
    as those settings were applied."""

    type_name = "compressor"
    # Over ten time constants of the slowest release (2 s, 10-90 %): the envelope has forgotten the past.
    tail_seconds = 10.0
    # torchcomp runs its recursion as a numba kernel outside PyTorch's stream, which a CUDA graph cannot record.
    graph_safe = False
    param_specs = (
        ParamSpec("threshold_db", "dB", -60.0, 0.0, "linear", 0.0, "level above which gain is reduced"),
        ParamSpec("ratio", "", 1.0, 20.0, "log", 1.0, "input/output level ratio above threshold"),
        ParamSpec("attack_ms", "ms", 0.1, 100.0, "log", 10.0, "gain reduction time (10-90 %)", amount="keep"),
        ParamSpec("release_ms", "ms", 10.0, 2000.0, "log", 100.0, "gain recovery time (10-90 %)", amount="keep"),
        ParamSpec("makeup_gain_db", "dB", 0.0, 24.0, "linear", 0.0, "gain after compression"),
        ParamSpec("knee_db", "dB", 0.0, 24.0, "linear", 6.0, "soft-knee width around the threshold; 0 = hard",
                  amount="keep"),
    )
    # Settings written before the knee existed were hard-knee.
    legacy_defaults = {"knee_db": 0.0}

    def _process(self, audio: Tensor, sample_rate: float, params: dict[str, Tensor]) -> Tensor:
        return F.compressor(audio, sample_rate, **params)
