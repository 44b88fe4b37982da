"""Effect base class, input validation and the effect registry.

An :class:`Effect` is a thin ``torch.nn.Module`` over stateless functions of
:mod:`fx.functional`.  It declares its parameters as a tuple of :class:`~fx.params.ParamSpec`
and processes ``(batch, channels, samples)`` audio with a dict of *physical* parameter
values, each a ``(batch,)`` tensor or a float.

The base class owns the pipeline: :meth:`Effect.process` (and ``forward``) checks the audio
(:func:`check_audio`) and the sample rate (:func:`check_sample_rate`), checks, clamps and
broadcasts the parameters (:meth:`Effect.batch_params`) once, then calls the subclass's DSP
hook ``_process(audio, sample_rate, params)`` with every parameter a ``(batch,)`` tensor on
the audio's device and dtype.  A linear effect implements ``_frequency_response`` the same way.

Registering your own differentiable effect::

    import math

    import torch

    import fx

    @fx.register_effect
    class Tremolo(fx.Effect):
        type_name = "tremolo"
        param_specs = (fx.ParamSpec("depth", "", 0.0, 1.0, "linear", 0.0),)

        def _process(self, audio, sample_rate, params):
            t = torch.arange(audio.shape[-1], device=audio.device, dtype=audio.dtype) / sample_rate
            depth = params["depth"].view(-1, 1, 1)
            return audio * (1 - depth * 0.5 * (1 - torch.cos(2 * math.pi * 5 * t)))

    chain = fx.Chain.from_spec("eq,tremolo")

The effect must be differentiable w.r.t. its parameters, accept any channel count and
every sample rate in ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]``, and return audio of the input
shape.  An effect whose ``__init__`` takes a ``seed`` keyword receives the chain's seed.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from .params import ParamSpec, clamp_in_range, range_to_physical, range_to_unit

__all__ = [
    "Effect",
    "register_effect",
    "available_effects",
    "create_effect",
    "effect_class",
    "check_audio",
    "check_sample_rate",
    "MIN_SAMPLE_RATE",
    "MAX_SAMPLE_RATE",
]

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000


def check_sample_rate(sample_rate: float) -> None:
    """Raise ``ValueError`` unless ``sample_rate`` is a number in ``[8000, 192000]`` Hz."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real):
        raise ValueError(f"sample_rate must be a number in Hz, got {type(sample_rate).__name__}")
    if not (MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE):
        raise ValueError(
            f"sample_rate {sample_rate} Hz outside the supported range "
            f"[{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}]"
        )


def check_audio(audio: Tensor) -> None:
    """Raise ``ValueError`` unless ``audio`` is a float32/float64 tensor ``(batch, channels, samples)``
    with at least one of each.  Shape checks only: no host synchronisation."""
    if not isinstance(audio, Tensor):
        raise ValueError(f"audio must be a torch.Tensor, got {type(audio).__name__}")
    if audio.ndim != 3:
        raise ValueError(
            f"audio must have shape (batch, channels, samples), got {audio.ndim} dims {tuple(audio.shape)}"
        )
    if min(audio.shape) < 1:
        raise ValueError(f"audio must be non-empty in every dim, got shape {tuple(audio.shape)}")
    if audio.dtype not in (torch.float32, torch.float64):
        # half precision has no usable FFTs here (and loses the EQ's low-frequency accuracy)
        raise ValueError(f"audio must be float32 or float64, got {audio.dtype}")


class Effect(torch.nn.Module):
    """Base class of all effects.

    Subclasses set ``type_name`` (registry key) and ``param_specs`` (class or instance
    attribute) and implement the DSP hook :meth:`_process`; the base :meth:`process` (``forward``)
    validates the inputs and batches the parameters before calling it.

    ``tail_seconds`` is the effect's memory: how far back (s) input still shapes the output (reverb length,
    filter ring-out, envelope release). Chunked rendering feeds each chunk that much earlier audio, so its
    output equals processing the whole input at once. ``None`` means unknown (a safe default is assumed).

    ``graph_safe`` says :meth:`process` can be recorded in a CUDA graph and replayed: for given shapes it
    launches the same kernels every call, reads nothing back to the host, and keeps no host-side randomness.
    Off by default, so an effect must opt in.

    ``linear`` says the effect is linear and time-invariant for given parameters and implements
    :meth:`response_length` and :meth:`_frequency_response`: a :class:`~fx.Chain` of such effects then runs
    as one multiplication of spectra (one forward and one inverse FFT for the whole chain).
    """

    type_name: ClassVar[str]
    param_specs: tuple[ParamSpec, ...]
    # Values for parameters added after settings files were first written: a settings dict without them loads
    # with these (see :meth:`upgrade_params`).
    legacy_defaults: ClassVar[dict[str, float]] = {}
    tail_seconds: float | None = None
    # How far ahead (s) input shapes the output (a linear-phase filter's half length); chunked rendering reads
    # that much later audio too.
    lookahead_seconds: float = 0.0
    graph_safe: bool = False
    linear: bool = False

    def process(self, audio: Tensor, sample_rate: float, params: Mapping[str, Tensor | float]) -> Tensor:
        """Apply the effect: validate, batch the parameters, then run :meth:`_process`.

        Args:
            audio: ``(batch, channels, samples)`` float32/float64, on any device.
            sample_rate: Hz, in ``[8000, 192000]``.
            params: physical value per parameter name, each ``(batch,)``, ``(1,)`` or a float
                (broadcast); clamped to the parameter's ``[min, max]``.

        Returns:
            ``(batch, channels, samples)``, differentiable in ``audio`` and every parameter.

        Raises:
            ValueError: bad audio, sample rate, missing parameter or parameter batch, or a value outside what
                ``sample_rate`` can hold (:meth:`param_ranges`; e.g. an EQ band above 0.46 x the rate), which
                is never moved into range silently.  That check reads the values on the host (one sync, only
                for effects whose ranges depend on the rate); :class:`~fx.Chain` skips it, its unit mapping
                cannot leave the rate's ranges.
        """
        prepared = self._prepare(audio, sample_rate, params)
        self.check_rate_limits(sample_rate, prepared)
        return self._process(audio, sample_rate, prepared)

    def forward(self, audio: Tensor, sample_rate: float, params: Mapping[str, Tensor | float]) -> Tensor:
        return self.process(audio, sample_rate, params)

    def _process(self, audio: Tensor, sample_rate: float, params: dict[str, Tensor]) -> Tensor:
        """The DSP, for subclasses: inputs already validated, every parameter a clamped ``(batch,)`` tensor
        on the audio's device and dtype.  Returns ``(batch, channels, samples)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement _process()")

    def _prepare(self, audio: Tensor, sample_rate: float, params: Mapping[str, Tensor | float]) -> dict[str, Tensor]:
        # The one place where an effect's inputs are checked: no host synchronisation.
        check_audio(audio)
        check_sample_rate(sample_rate)
        if not isinstance(params, Mapping):
            raise ValueError(f"{self.type_name}: params must be a dict of physical values, got {type(params).__name__}")
        return self.batch_params(params, audio.shape[0], audio)

    def response_length(self, sample_rate: float, samples: int) -> int:
        """For a ``linear`` effect: how many samples of its impulse response reach the first ``samples``
        output samples (``1`` for a pure gain)."""
        raise NotImplementedError(f"{type(self).__name__} is not a linear effect")

    def frequency_response(
        self, audio: Tensor, sample_rate: float, params: Mapping[str, Tensor | float], n_fft: int
    ) -> Tensor:
        """For a ``linear`` effect: the complex response ``H`` on the ``rfft`` grid of length ``n_fft`` such that
        ``irfft(rfft(audio, n_fft) * H, n_fft)[..., :samples]`` is ``process(audio, ...)`` whenever
        ``n_fft >= samples + response_length(sample_rate, samples) - 1``.

        Validates and batches like :meth:`process`, then runs :meth:`_frequency_response`.

        Args:
            audio: ``(batch, channels, samples)``; only its shape, device and dtype are used.
            sample_rate: Hz.
            params: as :meth:`process`.
            n_fft: transform length.

        Returns:
            ``(batch, channels, n_fft // 2 + 1)`` complex, or ``(batch, 1, n_fft // 2 + 1)`` when every
            channel gets the same filter, or a :class:`~fx.functional.CrossfeedResponse` when output channels
            hear other input channels (apply it with its ``apply``); on the audio's device, differentiable in
            every parameter.
        """
        if not self.linear:
            raise NotImplementedError(f"{type(self).__name__} is not a linear effect")
        prepared = self._prepare(audio, sample_rate, params)
        self.check_rate_limits(sample_rate, prepared)
        return self._frequency_response(audio, sample_rate, prepared, n_fft)

    def _frequency_response(self, audio: Tensor, sample_rate: float, params: dict[str, Tensor], n_fft: int) -> Tensor:
        """The response of a ``linear`` effect, for subclasses: inputs as for :meth:`_process`."""
        raise NotImplementedError(f"{type(self).__name__} is not a linear effect")

    @property
    def num_params(self) -> int:
        return len(self.param_specs)

    @property
    def param_names(self) -> list[str]:
        return [s.name for s in self.param_specs]

    def neutral_params(
        self, batch: int = 1, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> dict[str, Tensor]:
        """Physical neutral parameters, each ``(batch,)``."""
        return {s.name: torch.full((batch,), s.neutral, device=device, dtype=dtype) for s in self.param_specs}

    def param_ranges(self, sample_rate: float | None = None) -> dict[str, tuple[float, float]]:
        """Each parameter's physical ``(min, max)`` at ``sample_rate``: what that rate can hold.

        The spec's ``(min, max)`` unless the rate limits it (the EQ's top bands at rates below 44.1 kHz, see
        :meth:`fx.ParametricEQ.param_ranges`); ``min == max`` means the parameter has one possible value
        there.  ``None``: the specs' ranges, which every rate from 44.1 kHz up holds for the built-in effects.
        The unit mapping at that rate (:meth:`unit_to_physical`) covers exactly these ranges.  Pure Python.
        """
        if sample_rate is not None:
            check_sample_rate(sample_rate)
        return {s.name: (s.min, s.max) for s in self.param_specs}

    def check_rate_limits(self, sample_rate: float, params: Mapping[str, Tensor]) -> None:
        """Raise ``ValueError`` when a physical value (batched ``(batch,)`` tensors, as :meth:`_process` gets
        them) lies outside what ``sample_rate`` can hold.  Nothing to check by default; effects whose
        :meth:`param_ranges` depend on the rate override it."""

    def unit_to_physical(self, u: Tensor, sample_rate: float | None = None) -> dict[str, Tensor]:
        """``u`` ``(batch, num_params)`` in unit space -> dict of physical ``(batch,)`` tensors.

        ``sample_rate``: map ``[0, 1]`` onto the ranges that rate holds (:meth:`param_ranges`), so no unit
        value gives a setting the rate cannot realise and every gradient stays non-zero inside the range;
        ``None``: onto the specs' ranges (the same mapping for every rate where nothing is limited).  On
        ``u``'s device and dtype; differentiable in ``u``; no clamping.
        """
        if u.ndim != 2 or u.shape[1] != self.num_params:
            raise ValueError(
                f"{self.type_name}: expected unit params of shape (batch, {self.num_params}), got {tuple(u.shape)}"
            )
        ranges = self.param_ranges(sample_rate)
        out = {}
        for i, s in enumerate(self.param_specs):
            lo, hi = ranges[s.name]
            out[s.name] = s.to_physical(u[:, i]) if (lo, hi) == (s.min, s.max) else range_to_physical(s, u[:, i], lo, hi)
        return out

    def physical_to_unit(self, params: Mapping[str, Tensor | float], sample_rate: float | None = None) -> Tensor:
        """Dict of physical values (each ``(batch,)`` or scalar) -> ``(batch, num_params)`` unit tensor; the
        inverse of :meth:`unit_to_physical` at the same ``sample_rate`` (no range check: see
        :meth:`check_rate_limits`)."""
        missing = [s.name for s in self.param_specs if s.name not in params]
        if missing:
            raise ValueError(f"{self.type_name}: missing parameters {missing}")
        ranges = self.param_ranges(sample_rate)
        cols = []
        for s in self.param_specs:
            lo, hi = ranges[s.name]
            x = torch.as_tensor(params[s.name])
            cols.append(s.to_unit(x) if (lo, hi) == (s.min, s.max) else range_to_unit(s, x, lo, hi))
        return torch.stack(torch.broadcast_tensors(*[c.reshape(-1) for c in cols]), dim=1)

    def batch_params(
        self, params: Mapping[str, Tensor | float], batch: int, like: Tensor
    ) -> dict[str, Tensor]:
        """Check that every parameter is present, clamp it to its range and broadcast it to
        ``(batch,)`` on the device/dtype of ``like``.  Floats and 0-d/1-element tensors are broadcast."""
        out = {}
        for s in self.param_specs:
            if s.name not in params:
                raise ValueError(f"{self.type_name}: missing parameter {s.name!r} (expected {self.param_names})")
            v = torch.as_tensor(params[s.name], device=like.device, dtype=like.dtype).reshape(-1)
            if v.shape[0] not in (1, batch):
                raise ValueError(
                    f"{self.type_name}: parameter {s.name!r} has batch {v.shape[0]}, audio has batch {batch}"
                )
            # Clamped to the range the DSP is designed for (a 0 s decay or a negative pre-delay is undefined).
            out[s.name] = clamp_in_range(v, s.min, s.max).expand(batch)
        return out

    def upgrade_params(self, params: Mapping[str, float]) -> dict[str, float]:
        """The documented mapping from settings written by an earlier version to this one's: parameters
        missing from ``params`` that :attr:`legacy_defaults` names get those values.  Subclasses extend it
        (e.g. a range that shrank).  Settings already in this version's form are returned unchanged."""
        out = dict(params)
        for name, value in self.legacy_defaults.items():
            out.setdefault(name, value)
        return out

    def output_tail_seconds(self, sample_rate: float, params: Mapping[str, float]) -> float:
        """How long (s) the output rings on after the input ends, at physical ``params`` (floats): until it has
        decayed by 60 dB, at most the effect's own maximum.  0 for effects without a tail (the default)."""
        return 0.0

    def extra_repr(self) -> str:
        return f"type_name={self.type_name!r}, num_params={self.num_params}"


_REGISTRY: dict[str, type[Effect]] = {}


def register_effect(cls: type[Effect]) -> type[Effect]:
    """Class decorator: make ``cls`` available under ``cls.type_name`` to
    :func:`create_effect` and ``Chain.from_spec``.  Re-registering the same name with a
    different class raises ``ValueError`` (re-running the same class definition, e.g. in a
    notebook, replaces the entry)."""
    if not (isinstance(cls, type) and issubclass(cls, Effect)):
        raise ValueError(f"register_effect expects an Effect subclass, got {cls!r}")
    name = getattr(cls, "type_name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{cls.__name__}.type_name must be an identifier string, got {name!r}")
    known = _REGISTRY.get(name)
    same_definition = known is not None and (known.__module__, known.__qualname__) == (cls.__module__, cls.__qualname__)
    if known is not None and known is not cls and not same_definition:
        raise ValueError(f"effect type {name!r} is already registered by {known.__module__}.{known.__qualname__}")
    names = [s.name for s in getattr(cls, "param_specs", ())]
    if len(names) != len(set(names)):
        raise ValueError(f"{cls.__name__}: parameter names must be unique, got {names}")
    _REGISTRY[name] = cls
    return cls


def available_effects() -> list[str]:
    """Registered effect type names, sorted."""
    return sorted(_REGISTRY)


def effect_class(name: str) -> type[Effect]:
    """The registered class for ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown effect {name!r}; available: {', '.join(available_effects())}") from None


def create_effect(name: str, **kwargs) -> Effect:
    """Instantiate the registered effect ``name``.  A ``seed`` keyword is passed only to
    effects whose constructor accepts one (effects with noise), and dropped otherwise."""
    cls = effect_class(name)
    if "seed" in kwargs and "seed" not in inspect.signature(cls.__init__).parameters:
        kwargs = {k: v for k, v in kwargs.items() if k != "seed"}
    return cls(**kwargs)

