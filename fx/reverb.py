"""Noise-shaped reverb: per-octave-band exponentially decaying noise, FFT convolution.

Design (after ``dasp_pytorch.functional.noise_shaped_reverberation``, fixed):

* The IR is ``sum_k g_k * env_k(t) * noise_k(t)`` over 10 octave bands centred on
  31.25 Hz ... 16 kHz, ``env_k`` a 60 dB-per-``RT60_k`` exponential decay.  Band filters
  are amplitude-complementary masks designed on the FFT grid in log-frequency
  (:func:`fx.functional.octave_band_masks`), so they work at every sample rate (bands
  above Nyquist are empty and their parameters then have no effect).
* The noise is fixed by ``seed``: generated once per ``(sample_rate, channels, device,
  dtype)`` and cached on the instance (a few entries; never module-global).  Channels get
  decorrelated noise; channel ``c`` is identical whatever the channel count.  The same
  seed, sample rate and parameters give the same output on every call.
* The IR has a fixed physical length, ``ir_length_s`` (default 8 s = the largest RT60),
  so a setting sounds the same at every sample rate.  Each band envelope is normalised
  to unit energy over that full length: with every band gain at 0 dB the IR has (about)
  unit energy whatever the decays (within ~0.6 dB when neighbouring bands decay very
  differently, where the crossovers overlap), i.e. wet RMS ~ dry RMS for broadband input,
  and ``mix`` means the same at every decay.  Band gains then act as an EQ on the wet signal.
* Convolution is by FFT (``rfft``/``irfft``, 2-3-5-smooth size).  Tail policy: the output
  has the input's length; the tail beyond it is dropped (pad the input with silence to
  keep it).  For a clip shorter than the IR only the first ``samples`` IR samples are
  used, which changes nothing in the truncated output: an optimisation on a crop and a
  render of the full file use the same IR.

Parameters (physical units): ``band{k}_rt60_s`` (k = 0..9; 0.1-8 s, log, neutral 1 s),
``band{k}_gain_db`` (-24..+12 dB, neutral 0), ``predelay_ms`` (0-100 ms, neutral 0),
``mix`` (0-100 %, equal-power dry/wet law, neutral 0 = dry).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import Tensor

from . import functional as F
from .effect import Effect, check_sample_rate, register_effect
from .params import ParamSpec

__all__ = ["NoiseReverb"]

RT60_RANGE_S = (0.1, 8.0)
MAX_PREDELAY_MS = 100.0


def _fmt_hz(f: float) -> str:
    return f"{f / 1000:g} kHz" if f >= 1000 else f"{f:g} Hz"


def _reverb_specs(centers: tuple[float, ...]) -> tuple[ParamSpec, ...]:
    rt = [
        ParamSpec(f"band{k}_rt60_s", "s", *RT60_RANGE_S, "log", 1.0, f"RT60 of the octave band at {_fmt_hz(f)}",
                  amount="keep")
        for k, f in enumerate(centers)
    ]
    gains = [
        ParamSpec(f"band{k}_gain_db", "dB", -24.0, 12.0, "linear", 0.0, f"wet gain of the octave band at {_fmt_hz(f)}",
                  amount="keep")
        for k, f in enumerate(centers)
    ]
    return tuple(
        rt
        + gains
        + [
            ParamSpec("predelay_ms", "ms", 0.0, MAX_PREDELAY_MS, "linear", 0.0, "delay before the reverb onset",
                      amount="keep"),
            ParamSpec("mix", "%", 0.0, 100.0, "linear", 0.0, "wet share (equal-power law); 0 = dry"),
        ]
    )


@register_effect
class NoiseReverb(Effect):
    """Noise-shaped reverb (22 parameters); see the module docstring.

    Args:
        seed: noise seed; the output is a deterministic function of seed and parameters.
        ir_length_s: impulse response length in seconds (>= the largest RT60 you use;
            the default covers the whole RT60 range).
        cache_size: number of ``(sample_rate, channels, device, dtype)`` noise tables kept.
    """

    type_name = "reverb"
    param_specs = _reverb_specs(F.OCTAVE_CENTERS_HZ)
    # The noise table is built on the first call and cached; later calls only launch kernels.
    graph_safe = True
    linear = True

    def __init__(self, seed: int = 0, ir_length_s: float = RT60_RANGE_S[1], cache_size: int = 4):
        super().__init__()
        if not ir_length_s > 0:
            raise ValueError(f"ir_length_s must be > 0, got {ir_length_s}")
        self.seed = int(seed)
        self.ir_length_s = float(ir_length_s)
        self.cache_size = int(cache_size)
        self.num_bands = len(F.OCTAVE_CENTERS_HZ)
        self._noise_cache: OrderedDict[tuple, Tensor] = OrderedDict()

    def __getstate__(self) -> dict:
        # The noise tables are a cache (tens of MB), rebuilt from the seed on first use: never pickled.
        state = dict(super().__getstate__())
        state["_noise_cache"] = OrderedDict()
        return state

    # the pre-delay's fractional-delay kernel reaches 7 samples ahead (at most 1 ms, at 8 kHz)
    lookahead_seconds = F.reverb.DELAY_HALF_TAPS / 8000

    def output_tail_seconds(self, sample_rate: float, params) -> float:
        """Pre-delay plus the longest RT60 among the bands below Nyquist (the wet decays by 60 dB by then),
        at most ``ir_length_s`` plus the pre-delay; 0 when the mix is 0 % (dry)."""
        if float(params["mix"]) <= 0.0:
            return 0.0
        rts = [float(params[f"band{k}_rt60_s"]) for k, c in enumerate(F.OCTAVE_CENTERS_HZ) if c / 2**0.5 < sample_rate / 2]
        return min(max(rts, default=0.0), self.ir_length_s) + float(params["predelay_ms"]) / 1000.0

    @property
    def tail_seconds(self) -> float:
        predelay_max_s = next(s.max for s in self.param_specs if s.name == "predelay_ms") / 1000.0
        return self.ir_length_s + predelay_max_s

    def ir_length(self, sample_rate: float) -> int:
        """IR length in samples at ``sample_rate``."""
        return max(1, round(self.ir_length_s * sample_rate))

    def band_noise(self, sample_rate: float, channels: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Cached ``(channels, bands, ir_length)`` band noise (see :func:`fx.functional.reverb_band_noise`)."""
        key = (float(sample_rate), int(channels), torch.device(device), dtype)
        noise = self._noise_cache.get(key)
        if noise is None:
            noise = F.reverb_band_noise(self.seed, channels, self.ir_length(sample_rate), sample_rate)
            noise = noise.to(device=device, dtype=dtype)
            self._noise_cache[key] = noise
            while len(self._noise_cache) > self.cache_size:
                self._noise_cache.popitem(last=False)
        else:
            self._noise_cache.move_to_end(key)
        return noise

    def _split(self, p: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        rt60 = torch.stack([p[f"band{k}_rt60_s"] for k in range(self.num_bands)], dim=1)
        gains = torch.stack([p[f"band{k}_gain_db"] for k in range(self.num_bands)], dim=1)
        return rt60, gains

    def _process(self, audio: Tensor, sample_rate: float, params: dict[str, Tensor]) -> Tensor:
        return F.noise_reverb(audio, sample_rate, *self._functional_args(audio, sample_rate, params))

    def response_length(self, sample_rate: float, samples: int) -> int:
        return F.reverb_response_length(samples, self.ir_length(sample_rate), MAX_PREDELAY_MS / 1000.0, sample_rate)

    def _frequency_response(self, audio: Tensor, sample_rate: float, params: dict[str, Tensor], n_fft: int) -> Tensor:
        args = self._functional_args(audio, sample_rate, params)
        return F.reverb_response(n_fft, audio.shape[-1], sample_rate, *args)

    def _functional_args(self, audio: Tensor, sample_rate: float, p: dict[str, Tensor]) -> tuple:
        # The arguments shared by F.noise_reverb and F.reverb_response, from batched physical parameters.
        rt60, gains = self._split(p)
        noise = self.band_noise(sample_rate, audio.shape[1], audio.device, audio.dtype)
        return noise, rt60, gains, p["predelay_ms"] / 1000.0, p["mix"], self.ir_length(sample_rate), MAX_PREDELAY_MS / 1000.0

    def impulse_response(
        self, sample_rate: float, params: Mapping[str, Tensor | float], channels: int = 1
    ) -> Tensor:
        """The wet impulse response (no pre-delay, no mix) for physical ``params``.

        Returns:
            ``(batch, channels, ir_length)``.
        """
        check_sample_rate(sample_rate)
        like = torch.empty(0)
        batch = max(torch.as_tensor(params[s.name]).numel() for s in self.param_specs if s.name in params)
        p = self.batch_params(params, batch, like)
        rt60, gains = self._split(p)
        noise = self.band_noise(sample_rate, channels, like.device, like.dtype)
        return F.reverb_impulse_response(noise, sample_rate, rt60, gains)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, seed={self.seed}, ir_length_s={self.ir_length_s}"
