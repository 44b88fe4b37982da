"""fx: differentiable audio effects for Text2FX.

Effects are ``torch.nn.Module`` objects over stateless functions (:mod:`fx.functional`),
processing ``(batch, channels, samples)`` audio at 8-192 kHz with physical parameters
described by :class:`ParamSpec`; the base class :class:`Effect` validates the inputs and
batches the parameters, a subclass supplies the DSP (``_process``).  :class:`Chain` runs an
ordered list of them from one unit-space parameter vector, holds its own settings
(``chain(audio, sample_rate)``, ``chain.settings``, ``chain.set_settings``) and
exports/imports them as plain dicts (``to_dict`` / ``from_dict``).  A chain of linear
effects (``eq``, ``reverb``, ``gain``: ``Effect.linear``) runs as one product of frequency
responses, and ``Chain.process(..., mono=True)`` gives just the channel mean.

Unit vectors are mapped with the ranges the processing rate holds (``Effect.param_ranges(sample_rate)``,
``Chain.param_ranges(sample_rate)``): below 44.1 kHz the EQ's top bands end at 0.46 x the rate.  Pass the
rate wherever a unit vector becomes physical values or back (``Chain.to_dict(u, sample_rate=...)``,
``Chain.from_dict(d, sample_rate=...)``, ``Chain.set_settings(u, sample_rate=...)``); without it, the specs'
whole ranges are used, which is right from 44.1 kHz up.

Built-in effects (``type_name``): ``eq`` (:class:`ParametricEQ`), ``reverb``
(:class:`NoiseReverb`), ``compressor`` (:class:`Compressor`), ``gain`` (:class:`Gain`),
``distortion`` (:class:`Distortion`).  Add your own with :func:`register_effect`.
"""

from .chain import Chain
from .distortion import Distortion
from .dynamics import Compressor
from .effect import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    Effect,
    available_effects,
    check_audio,
    check_sample_rate,
    create_effect,
    effect_class,
    register_effect,
)
from .eq import ParametricEQ, eq_frequency_response
from .gain import Gain
from .params import ParamSpec
from .reverb import NoiseReverb

__all__ = [
    "Chain",
    "Compressor",
    "Distortion",
    "Effect",
    "Gain",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "NoiseReverb",
    "ParamSpec",
    "ParametricEQ",
    "available_effects",
    "check_audio",
    "check_sample_rate",
    "create_effect",
    "effect_class",
    "eq_frequency_response",
    "register_effect",
]
