"""An ordered chain of effects driven by one flat parameter vector in unit space.

Parameter vector: the concatenation, in chain order, of each effect's parameters in its
``param_specs`` order; every entry in ``[0, 1]`` (``ParamSpec.to_physical`` maps it to
physical units).  ``Chain.param_specs`` lists ``(effect index, ParamSpec)`` in vector order.

A chain carries its settings (as Spotify's pedalboard plugins do): one such vector,
``Chain.settings`` (``(num_params,)`` float64, set by ``Chain.set_settings``; neutral for a
chain built by ``from_spec``, the dict's values for one built by ``from_dict``).
``chain(audio, sample_rate)`` processes with them; ``chain(audio, sample_rate, params)`` with
an explicit ``(batch, num_params)`` vector instead (what the optimizer does).

Exported dict (``Chain.to_dict`` / ``Chain.from_dict``), JSON-compatible, physical units::

    {
      "chain": "eq,reverb",            # the spec: effect type names joined by ","
      "seed": 0,                       # noise seed of the effects that use one (reverb)
      "effects": [                     # one entry per effect, in chain order
        {"type": "eq", "params": {"low_shelf_gain_db": -3.1, "low_shelf_cutoff_freq": 120.0, ...}},
        {"type": "reverb", "params": {"band0_rt60_s": 1.2, ..., "mix": 25.0}}
      ]
    }

Sample rates: a unit vector means the physical values it maps to *at the rate it is processed at*
(``Effect.unit_to_physical(u, sample_rate)``): where a rate cannot hold a parameter's whole range (the EQ's
top bands below 44.1 kHz, ``Chain.param_ranges``), ``[0, 1]`` covers what it holds.  From 44.1 kHz up the
built-in effects' ranges are whole and every rate maps alike, which is what ``sample_rate=None`` means
throughout (``to_dict``, ``from_dict``, ``set_settings``, ``unit_to_physical``).  The stored settings remember
the rate they were made for, so ``chain(audio, sample_rate)`` applies the same physical values at any rate
(``Chain.settings_for``), or raises ``ValueError`` when that rate cannot hold them.

Every parameter of every effect must be present, with no extra keys, as a finite number
inside its ``[min, max]``.  Values are written rounded to 12 significant digits, so
``Chain.from_dict(d).to_dict() == d`` holds exactly for every dict written by ``to_dict``
(and for any dict whose values have at most 12 significant digits): the settings are kept
in float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from numbers import Real

import torch
from torch import Tensor

from . import functional as F
from .effect import Effect, check_audio, check_sample_rate, create_effect
from .params import ParamSpec, clamp_in_range

__all__ = ["Chain"]

_DIGITS = 12


def _round(x: float) -> float:
    return float(f"{x:.{_DIGITS}g}")


class Chain(torch.nn.Module):
    """Ordered effects (any order, repeats allowed) and their settings; behaves like a list.

    Args:
        effects: the effects, in processing order.
        seed: the chain's seed as recorded by :meth:`to_dict` when no effect carries a
            seed of its own (effects with a ``seed`` attribute define it otherwise).

    The chain starts with neutral settings (:meth:`neutral_unit`); :meth:`append` adds the new
    effect's neutral settings, and a slice ``chain[i:j]`` keeps its effects' settings.
    """

    def __init__(self, effects: Sequence[Effect] = (), seed: int = 0):
        super().__init__()
        for e in effects:
            if not isinstance(e, Effect):
                raise ValueError(f"Chain items must be fx.Effect instances, got {type(e).__name__}")
        self.effects = torch.nn.ModuleList(effects)
        self._seed = int(seed)
        # A plain CPU float64 tensor rather than a buffer: Module.to(dtype) would round a buffer to float32
        # and break the exact dict round trip; process() casts it to the audio's device and dtype.
        self._settings = self.neutral_unit(torch.float64)
        # The rate whose ranges the settings' unit values are mapped with (None: the specs' whole ranges).
        self._settings_rate: float | None = None

    @classmethod
    def from_spec(cls, spec: str, seed: int = 0) -> "Chain":
        """Build from ``"eq,reverb"`` (names from :func:`fx.available_effects`; ``""`` is the
        empty chain).  ``seed`` goes to every effect whose constructor takes one."""
        if not isinstance(spec, str):
            raise ValueError(f"chain spec must be a string like 'eq,reverb', got {type(spec).__name__}")
        names = [n.strip() for n in spec.split(",")] if spec.strip() else []
        if any(not n for n in names):
            raise ValueError(f"empty effect name in chain spec {spec!r}")
        return cls([create_effect(n, seed=seed) for n in names], seed=seed)

    # -- list behaviour -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.effects)

    def __iter__(self) -> Iterator[Effect]:
        return iter(self.effects)

    def __getitem__(self, i: int | slice) -> Effect | "Chain":
        if isinstance(i, slice):
            starts = [0]
            for e in self.effects:
                starts.append(starts[-1] + e.num_params)
            picked = range(len(self.effects))[i]
            sub = Chain([self.effects[k] for k in picked], seed=self._seed)
            if len(picked):
                sub._settings = torch.cat([self._settings[starts[k] : starts[k + 1]] for k in picked])
                sub._settings_rate = self._settings_rate
            return sub
        return self.effects[i]

    def append(self, effect: Effect) -> "Chain":
        """Add ``effect`` at the end, with its neutral settings; returns the chain."""
        if not isinstance(effect, Effect):
            raise ValueError(f"Chain items must be fx.Effect instances, got {type(effect).__name__}")
        self.effects.append(effect)
        neutral = torch.tensor([s.neutral_unit for s in effect.param_specs], dtype=torch.float64)
        self._settings = torch.cat([self._settings, neutral])
        return self

    # -- settings -------------------------------------------------------------------------

    @property
    def settings(self) -> Tensor:
        """The stored settings: a ``(num_params,)`` float64 CPU unit vector (a copy; change them with
        :meth:`set_settings`)."""
        return self._settings.clone()

    def set_settings(self, unit: Tensor | Sequence[float], sample_rate: float | None = None) -> "Chain":
        """Store new settings: ``(num_params,)`` (or ``(1, num_params)``) unit-space values, kept as float64
        on the CPU and clamped to ``[0, 1]``.  ``sample_rate``: the rate whose ranges ``unit`` is mapped with
        (the rate an optimizer processed at; ``None``: the specs' whole ranges, as at 44.1 kHz and up).
        ``ValueError`` for another shape or NaN/Inf.  Returns the chain."""
        if sample_rate is not None:
            check_sample_rate(sample_rate)
        u = torch.as_tensor(unit).detach().to("cpu", torch.float64)
        if u.ndim == 2 and u.shape[0] == 1:
            u = u[0]
        if u.shape != (self.num_params,):
            raise ValueError(
                f"settings must have shape ({self.num_params},) for chain {self.spec!r}, got {tuple(u.shape)}"
            )
        if not bool(torch.isfinite(u).all()):
            raise ValueError("settings contain NaN or Inf")
        self._settings = u.clamp(0.0, 1.0)
        self._settings_rate = None if sample_rate is None else float(sample_rate)
        return self

    @property
    def settings_rate(self) -> float | None:
        """The rate whose ranges the stored settings are mapped with (``None``: the specs' whole ranges)."""
        return self._settings_rate

    def settings_for(self, sample_rate: float) -> Tensor:
        """The stored settings as a unit vector for processing at ``sample_rate``: the same physical values,
        mapped with that rate's ranges (the stored vector itself when the two rates' ranges agree).
        ``(num_params,)`` float64 on the CPU.

        Raises:
            ValueError: ``sample_rate`` cannot hold a stored value (e.g. an EQ band set at 15 kHz, not at 0 dB,
                for 22.05 kHz audio).
        """
        check_sample_rate(sample_rate)
        if self.param_ranges(sample_rate) == self.param_ranges(self._settings_rate):
            return self._settings.clone()
        physical = self.unit_to_physical(self._settings[None], self._settings_rate)
        units = []
        for effect, p in zip(self.effects, physical):
            effect.check_rate_limits(sample_rate, p)
            units.append(effect.physical_to_unit(p, sample_rate))
        # a flat EQ band (0 dB) may sit above the rate's range: clamped, it stays flat
        return torch.cat(units, dim=1)[0].clamp(0.0, 1.0) if units else self._settings.clone()

    def param_ranges(self, sample_rate: float | None = None) -> list[dict[str, tuple[float, float]]]:
        """Each effect's ``{parameter: (min, max)}`` at ``sample_rate`` (:meth:`Effect.param_ranges`), in chain
        order: the physical ranges that rate holds, which the unit mapping at that rate covers.  ``None``: the
        specs' ranges.  Pure Python."""
        return [e.param_ranges(sample_rate) for e in self.effects]

    def physical_settings(self, params: Tensor | None = None, sample_rate: float | None = None) -> list[dict[str, float]]:
        """The settings in physical units, one ``{name: value}`` dict per effect in chain order: the
        ``"params"`` entries of :meth:`to_dict` (same rounding).  ``params``: a unit vector to describe
        instead of the stored settings, mapped at ``sample_rate`` (as :meth:`to_dict`)."""
        return [e["params"] for e in self.to_dict(params, sample_rate)["effects"]]

    # -- description ----------------------------------------------------------------------

    @property
    def spec(self) -> str:
        return ",".join(e.type_name for e in self.effects)

    @property
    def seed(self) -> int:
        """The seed shared by the effects that have one, else the chain's own seed."""
        seeds = {int(e.seed) for e in self.effects if hasattr(e, "seed")}
        if len(seeds) > 1:
            raise ValueError(f"effects of chain {self.spec!r} have different seeds {sorted(seeds)}")
        return seeds.pop() if seeds else self._seed

    @property
    def graph_safe(self) -> bool:
        """Whether every effect can be recorded in a CUDA graph (see ``Effect.graph_safe``)."""
        return all(e.graph_safe for e in self.effects)

    @property
    def num_params(self) -> int:
        return sum(e.num_params for e in self.effects)

    @property
    def lookahead_seconds(self) -> float:
        """How far ahead (s) input shapes the output: the sum of the effects' ``lookahead_seconds``."""
        return sum(float(getattr(e, "lookahead_seconds", 0.0)) for e in self.effects)

    def tail_samples(self, sample_rate: float, params: Tensor | None = None) -> int:
        """How many samples the output rings on after the input ends: the sum over the effects of
        ``Effect.output_tail_seconds`` (each until it has decayed by 60 dB, bounded by its own maximum), the
        largest over a batch of settings.  ``params``: ``(num_params,)`` or ``(batch, num_params)`` unit
        vector (default: the stored settings).  Reads the settings on the host (one sync)."""
        check_sample_rate(sample_rate)
        u = self.settings_for(sample_rate) if params is None else torch.as_tensor(params)
        u = u.detach().to("cpu", torch.float64).reshape(-1, self.num_params).clamp(0.0, 1.0)
        longest = 0.0
        for row in u:
            total = 0.0
            for effect, p in zip(self.effects, self.unit_to_physical(row[None], sample_rate)):
                total += float(effect.output_tail_seconds(sample_rate, {k: float(v[0]) for k, v in p.items()}))
            longest = max(longest, total)
        return int(math.ceil(longest * sample_rate))

    @property
    def param_specs(self) -> list[tuple[int, ParamSpec]]:
        return [(i, s) for i, e in enumerate(self.effects) for s in e.param_specs]

    def neutral_unit(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        """``(num_params,)`` unit-space vector of the neutral settings."""
        return torch.tensor([s.neutral_unit for _, s in self.param_specs], dtype=dtype, device=device)

    def unit_to_physical(self, u: Tensor, sample_rate: float | None = None) -> list[dict[str, Tensor]]:
        """``u`` ``(batch, num_params)`` -> one dict per effect of physical ``(batch,)`` tensors, mapped with
        ``sample_rate``'s ranges (:meth:`param_ranges`; ``None``: the specs' ranges).  On ``u``'s device and
        dtype, differentiable in ``u``.  No clamping (``process`` clamps)."""
        if u.ndim != 2 or u.shape[1] != self.num_params:
            raise ValueError(f"expected params of shape (batch, {self.num_params}), got {tuple(u.shape)}")
        out, start = [], 0
        for e in self.effects:
            out.append(e.unit_to_physical(u[:, start : start + e.num_params], sample_rate))
            start += e.num_params
        return out

    # -- processing -----------------------------------------------------------------------

    @property
    def linear(self) -> bool:
        """Whether every effect is linear and time-invariant (see ``Effect.linear``): the chain then runs as
        one product of frequency responses."""
        return len(self.effects) > 0 and all(e.linear for e in self.effects)

    def process(
        self,
        audio: Tensor,
        sample_rate: float,
        params: Tensor | None = None,
        validate: bool = True,
        mono: bool = False,
        tail: bool = False,
    ) -> Tensor:
        """Run the chain.

        A chain of linear effects (``self.linear``) with two filters or more (or one, with ``mono``) runs in
        the frequency domain: one FFT of the input, the product of the effects' responses, one inverse FFT
        (with ``mono``, one per item rather than per channel).  Other chains run effect by effect.  Both
        give the same output, to float rounding.

        Args:
            audio: ``(batch, channels, samples)`` or ``(1, channels, samples)`` (broadcast
                to the parameter batch).
            sample_rate: Hz, in ``[8000, 192000]``.
            params: ``(batch, num_params)`` (or ``(num_params,)`` for batch 1) in unit space, mapped with
                ``sample_rate``'s ranges (:meth:`param_ranges`); values outside ``[0, 1]`` are clamped
                (zero gradient outside).  Cast to the audio's device and dtype.  ``None``: the stored
                settings (:meth:`settings_for` ``sample_rate``: the same physical values at every rate,
                ``ValueError`` where the rate cannot hold one), for every item of the audio batch.
            validate: check ``params`` for NaN/Inf (``ValueError``); costs one host sync,
                so a hot loop may pass ``False`` once its inputs are known to be good.
                Shape and sample-rate checks always run (no sync).
            mono: return the mean of the output channels, ``(batch, 1, samples)``: what a listener
                that downmixes to mono hears, computed without forming every channel's output when
                the chain is linear.
            tail: keep the effects' tails: the output is longer than the input by
                :meth:`tail_samples` (the input followed by that much silence, processed; its start stays
                sample-aligned with the input).  Reads the settings on the host (one sync).

        Returns:
            ``(batch, channels, samples)`` (``samples + tail_samples(...)`` with ``tail``), or
            ``(batch, 1, ...)`` with ``mono``.
        """
        check_audio(audio)
        check_sample_rate(sample_rate)
        if params is None:
            params = self.settings_for(sample_rate)[None].expand(audio.shape[0], -1)
        if not isinstance(params, Tensor):
            raise ValueError(f"params must be a torch.Tensor, got {type(params).__name__}")
        if params.ndim == 1:
            params = params[None]
        if params.ndim != 2 or params.shape[1] != self.num_params or params.shape[0] < 1:
            raise ValueError(
                f"params must have shape (batch, {self.num_params}) for chain {self.spec!r}, got {tuple(params.shape)}"
            )
        batch = params.shape[0]
        if audio.shape[0] not in (1, batch):
            raise ValueError(f"audio batch {audio.shape[0]} does not match params batch {batch} (or 1)")
        if validate and not bool(torch.isfinite(params).all()):
            raise ValueError("params contain NaN or Inf")
        if tail:
            extra = self.tail_samples(sample_rate, params)
            if extra:
                audio = torch.nn.functional.pad(audio, (0, extra))
        params = clamp_in_range(params.to(device=audio.device, dtype=audio.dtype), 0.0, 1.0)
        x = audio.expand(batch, -1, -1)
        physical = self.unit_to_physical(params, sample_rate)
        if self._spectral_pays(sample_rate, x.shape[-1], mono):
            return self._process_spectral(x, sample_rate, physical, mono)
        for effect, p in zip(self.effects, physical):
            # the unit mapping at this rate holds every value in its range: no host-side range check
            x = effect._process(x, sample_rate, effect._prepare(x, sample_rate, p))
        return x.mean(dim=1, keepdim=True) if mono else x

    def _spectral_pays(self, sample_rate: float, samples: int, mono: bool) -> bool:
        # One pass through the frequency domain replaces each filter's own FFTs: worth it from two filters on,
        # or from one when only the channel mean is wanted. Gains alone stay in the time domain (exact).
        if not self.linear:
            return False
        filters = sum(e.response_length(sample_rate, samples) > 1 for e in self.effects)
        return filters >= 2 or (mono and filters >= 1)

    def _process_spectral(self, x: Tensor, sample_rate: float, physical: list[dict[str, Tensor]], mono: bool) -> Tensor:
        samples = x.shape[-1]
        # The chain's impulse response is as long as the effects' together: room for it keeps the
        # circular convolution from wrapping onto the output.
        n_fft = F.next_fast_len(samples + sum(e.response_length(sample_rate, samples) - 1 for e in self.effects))
        # Responses shared by all channels (shape (batch, 1, bins)) are kept apart from per-channel and channel-
        # mixing ones: they commute with everything, so the channel mean can be taken before they are applied,
        # on one channel's worth of bins. The others are applied in chain order (a mix does not commute).
        shared, ops = None, []
        for effect, p in zip(self.effects, physical):
            h = effect._frequency_response(x, sample_rate, effect._prepare(x, sample_rate, p), n_fft)
            if isinstance(h, Tensor) and h.shape[1] == 1:
                shared = h if shared is None else shared * h
            else:
                ops.append(h)
        if x.shape[0] > 1 and x.stride(0) == 0:
            x = x[:1]  # one input shared by the batch: transformed once
        if mono:
            # The mean's 1 / channels scales the (real) input, so the channel sum below has no backward pass
            # of its own over the spectra.
            x = x / x.shape[1]
        out = F.rfft(x, n_fft)
        for h in ops:
            out = h.apply(out) if isinstance(h, F.CrossfeedResponse) else out * h
        if mono:
            out = out.sum(dim=1, keepdim=True)
        if shared is not None:
            out = out * shared
        return torch.fft.irfft(out, n=n_fft)[..., :samples]

    def forward(
        self,
        audio: Tensor,
        sample_rate: float,
        params: Tensor | None = None,
        validate: bool = True,
        mono: bool = False,
        tail: bool = False,
    ) -> Tensor:
        return self.process(audio, sample_rate, params, validate, mono, tail)

    # -- export / import ------------------------------------------------------------------

    def to_dict(self, params: Tensor | None = None, sample_rate: float | None = None) -> dict:
        """The stored settings, or ``params`` ``(num_params,)`` (or ``(1, num_params)``) unit vector,
        as a plain dict in physical units (format in the module docstring).  Values are clamped
        to ``[0, 1]`` first, as :meth:`process` does.

        ``sample_rate``: the rate ``params`` were processed at (the optimizer's), whose ranges map them
        (:meth:`param_ranges`); ``None`` maps with the specs' ranges, which is the same for every rate from
        44.1 kHz up and wrong below it wherever a range is limited (an EQ's top bands).  The stored settings
        are always mapped with the rate they were stored for (:attr:`settings_rate`)."""
        if params is None:
            params, sample_rate = self._settings, self._settings_rate
        elif sample_rate is not None:
            check_sample_rate(sample_rate)
        u = torch.as_tensor(params).detach().to("cpu", torch.float64).reshape(-1)
        if u.shape[0] != self.num_params:
            raise ValueError(f"expected {self.num_params} params for chain {self.spec!r}, got {tuple(params.shape)}")
        if not bool(torch.isfinite(u).all()):
            raise ValueError("params contain NaN or Inf")
        u = u.clamp(0.0, 1.0)
        effects, start = [], 0
        for e in self.effects:
            phys = e.unit_to_physical(u[None, start : start + e.num_params], sample_rate)
            vals = {s.name: _round(float(phys[s.name][0])) for s in e.param_specs}
            effects.append({"type": e.type_name, "params": vals})
            start += e.num_params
        return {"chain": self.spec, "seed": self.seed, "effects": effects}

    @staticmethod
    def _check_dict(d: dict) -> None:
        if not isinstance(d, dict):
            raise ValueError(f"expected a dict, got {type(d).__name__}")
        for key, typ in (("chain", str), ("effects", list)):
            if not isinstance(d.get(key), typ):
                raise ValueError(f"params dict needs {key!r} of type {typ.__name__}")
        seed = d.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"params dict 'seed' must be an int, got {seed!r}")
        extra = set(d) - {"chain", "seed", "effects"}
        if extra:
            raise ValueError(f"unknown keys in params dict: {sorted(extra)}")

    @classmethod
    def from_dict(cls, d: dict, sample_rate: float | None = None) -> "Chain":
        """Rebuild the chain from a dict written by :meth:`to_dict`, holding the dict's values as its
        :attr:`settings` (float64, so ``from_dict(d).to_dict() == d``).  ``sample_rate``: the rate the settings
        will be processed at, checked and mapped as :meth:`params_from_dict` does (processing at another rate
        still applies the dict's values, see :meth:`settings_for`)."""
        cls._check_dict(d)
        chain = cls.from_spec(d["chain"], seed=d.get("seed", 0))
        return chain.set_settings(chain.params_from_dict(d, sample_rate), sample_rate)

    def params_from_dict(self, d: dict, sample_rate: float | None = None) -> Tensor:
        """Unit vector ``(num_params,)`` float64 from a dict for *this* chain, mapped with ``sample_rate``'s
        ranges (``None``: the specs' ranges; see :meth:`to_dict`); ``ValueError``
        if the dict is for another chain (spec, seed, effect types, parameter names),
        holds a missing, extra, non-finite or out-of-range value, or a value ``sample_rate`` cannot hold
        (e.g. an EQ band at 15 kHz, not at 0 dB, for 22.05 kHz audio: never moved into range)."""
        if sample_rate is not None:
            check_sample_rate(sample_rate)
        self._check_dict(d)
        if d["chain"].replace(" ", "") != self.spec:
            raise ValueError(f"params dict is for chain {d['chain']!r}, this chain is {self.spec!r}")
        seeded = any(hasattr(e, "seed") for e in self.effects)
        if seeded and d.get("seed", 0) != self.seed:
            raise ValueError(f"params dict has seed {d.get('seed', 0)}, this chain has seed {self.seed}")
        if len(d["effects"]) != len(self.effects):
            raise ValueError(f"params dict has {len(d['effects'])} effects, chain {self.spec!r} has {len(self)}")
        units = []
        for i, (e, entry) in enumerate(zip(self.effects, d["effects"])):
            if not isinstance(entry, dict) or entry.get("type") != e.type_name or not isinstance(entry.get("params"), dict):
                raise ValueError(f"effect {i} of params dict must be {{'type': {e.type_name!r}, 'params': {{...}}}}")
            p = e.upgrade_params(entry["params"])
            names = set(e.param_names)
            if set(p) != names:
                raise ValueError(
                    f"effect {i} ({e.type_name}): missing {sorted(names - set(p))}, unknown {sorted(set(p) - names)}"
                )
            for s in e.param_specs:
                v = p[s.name]
                if isinstance(v, bool) or not isinstance(v, Real) or not s.contains(float(v)):
                    raise ValueError(
                        f"effect {i} ({e.type_name}): {s.name}={v!r} is not a number in [{s.min}, {s.max}] {s.unit}"
                    )
            values = {s.name: torch.tensor([float(p[s.name])], dtype=torch.float64) for s in e.param_specs}
            if sample_rate is not None:
                e.check_rate_limits(sample_rate, values)
            units += e.physical_to_unit(values, sample_rate)[0].clamp(0.0, 1.0).tolist()
        return torch.tensor(units, dtype=torch.float64)

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, num_params={self.num_params}"
