"""Stateless differentiable DSP functions (dasp-style), one module per topic.

Conventions: audio is ``(batch, channels, samples)`` float32/float64; every parameter is a
``(batch,)`` tensor in physical units (dB, Hz, s, ms, %), broadcast over channels and time.
Functions run on the device and in the dtype of the audio and are differentiable in the
audio and every parameter, unless their docstring says otherwise (the reverb's noise tables
are CPU float64 constants).  Nothing here caches or holds state; the effect classes in
:mod:`fx` cache what can be reused (e.g. the reverb noise) and call these functions.

Modules (everything is re-exported here, so ``from fx import functional as F; F.rfft``; the
modules are not named after functions, which would shadow them):

* :mod:`~fx.functional.fft`: ``next_fast_len``, ``rfft`` (cheaper backward), ``fft_convolve``.
* :mod:`~fx.functional.level`: ``db_to_amp``, ``gain``.
* :mod:`~fx.functional.eq`: the six-band parametric EQ and biquad responses.
* :mod:`~fx.functional.reverb`: the noise-shaped reverb, its band noise and ``fractional_delay``.
* :mod:`~fx.functional.dynamics`: ``compressor``.
* :mod:`~fx.functional.waveshaping`: ``distortion`` (oversampled, loudness-matched tanh waveshaper), ``oversampling``.
"""

from .dynamics import DETECTOR_MS, compressor, compressor_gain_db
from .eq import (
    EQ_MAX_FREQ_RATIO,
    EQ_RESPONSE_SECONDS,
    EQ_SECTIONS,
    eq_response,
    eq_sos,
    parametric_eq,
    rbj_biquad,
    sos_frequency_response,
)
from .fft import CrossfeedResponse, fft_convolve, next_fast_len, rfft
from .level import db_to_amp, gain
from .reverb import (
    OCTAVE_CENTERS_HZ,
    STEREO_CROSSFEED,
    fractional_delay,
    noise_reverb,
    octave_band_masks,
    reverb_band_noise,
    reverb_impulse_response,
    reverb_response,
    reverb_response_length,
)
from .waveshaping import (
    LEVEL_WINDOW_SECONDS,
    OVERSAMPLING_FOLD_HZ,
    OVERSAMPLING_HALF_TAPS,
    distortion,
    oversampling,
    tanh_rms_gain,
)

__all__ = [
    "CrossfeedResponse",
    "DETECTOR_MS",
    "compressor_gain_db",
    "STEREO_CROSSFEED",
    "EQ_MAX_FREQ_RATIO",
    "EQ_RESPONSE_SECONDS",
    "EQ_SECTIONS",
    "LEVEL_WINDOW_SECONDS",
    "OVERSAMPLING_FOLD_HZ",
    "OVERSAMPLING_HALF_TAPS",
    "OCTAVE_CENTERS_HZ",
    "compressor",
    "db_to_amp",
    "distortion",
    "eq_response",
    "eq_sos",
    "fft_convolve",
    "fractional_delay",
    "gain",
    "next_fast_len",
    "noise_reverb",
    "rbj_biquad",
    "octave_band_masks",
    "oversampling",
    "parametric_eq",
    "reverb_band_noise",
    "reverb_impulse_response",
    "reverb_response",
    "reverb_response_length",
    "rfft",
    "sos_frequency_response",
    "tanh_rms_gain",
]
