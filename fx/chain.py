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

Every parameter of every effect must be present, with no extra keys, as a finite number
inside its ``[min, max]``.  Values are written rounded to 12 significant digits, so
``Chain.from_dict(d).to_dict() == d`` holds exactly for every dict written by ``to_dict``
(and for any dict whose values have at most 12 significant digits): the settings are kept
in float64.
"""

from __future__ import annotations

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

    def set_settings(self, unit: Tensor | Sequence[float]) -> "Chain":
        """Store new settings: ``(num_params,)`` (or ``(1, num_params)``) unit-space values, kept as float64
        on the CPU and clamped to ``[0, 1]``.  ``ValueError`` for another shape or NaN/Inf.  Returns the chain."""
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
        return self

    def physical_settings(self, params: Tensor | None = None) -> list[dict[str, float]]:
        """The settings in physical units, one ``{name: value}`` dict per effect in chain order: the
        ``"params"`` entries of :meth:`to_dict` (same rounding).  ``params``: a unit vector to describe
        instead of the stored settings."""
        return [e["params"] for e in self.to_dict(params)["effects"]]

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
    def param_specs(self) -> list[tuple[int, ParamSpec]]:
        return [(i, s) for i, e in enumerate(self.effects) for s in e.param_specs]

    def neutral_unit(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        """``(num_params,)`` unit-space vector of the neutral settings."""
        return torch.tensor([s.neutral_unit for _, s in self.param_specs], dtype=dtype, device=device)

    def unit_to_physical(self, u: Tensor) -> list[dict[str, Tensor]]:
        """``u`` ``(batch, num_params)`` -> one dict per effect of physical ``(batch,)`` tensors.
        No clamping (``process`` clamps)."""
        if u.ndim != 2 or u.shape[1] != self.num_params:
            raise ValueError(f"expected params of shape (batch, {self.num_params}), got {tuple(u.shape)}")
        out, start = [], 0
        for e in self.effects:
            out.append(e.unit_to_physical(u[:, start : start + e.num_params]))
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
            params: ``(batch, num_params)`` (or ``(num_params,)`` for batch 1) in unit space;
                values outside ``[0, 1]`` are clamped (zero gradient outside).  Cast to the
                audio's device and dtype.  ``None``: the stored :attr:`settings`, for every
                item of the audio batch.
            validate: check ``params`` for NaN/Inf (``ValueError``); costs one host sync,
                so a hot loop may pass ``False`` once its inputs are known to be good.
                Shape and sample-rate checks always run (no sync).
            mono: return the mean of the output channels, ``(batch, 1, samples)``: what a listener
                that downmixes to mono hears, computed without forming every channel's output when
                the chain is linear.

        Returns:
            ``(batch, channels, samples)``, or ``(batch, 1, samples)`` with ``mono``.
        """
        check_audio(audio)
        check_sample_rate(sample_rate)
        if params is None:
            params = self._settings[None].expand(audio.shape[0], -1)
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
        params = clamp_in_range(params.to(device=audio.device, dtype=audio.dtype), 0.0, 1.0)
        x = audio.expand(batch, -1, -1)
        physical = self.unit_to_physical(params)
        if self._spectral_pays(sample_rate, x.shape[-1], mono):
            return self._process_spectral(x, sample_rate, physical, mono)
        for effect, p in zip(self.effects, physical):
            x = effect.process(x, sample_rate, p)
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
        # Responses shared by all channels (shape (batch, 1, bins)) are kept apart from per-channel ones: the
        # channel mean can then be taken before they are applied, on one channel's worth of bins.
        shared = per_channel = None
        for effect, p in zip(self.effects, physical):
            h = effect.frequency_response(x, sample_rate, p, n_fft)
            if h.shape[1] == 1:
                shared = h if shared is None else shared * h
            else:
                per_channel = h if per_channel is None else per_channel * h
        if x.shape[0] > 1 and x.stride(0) == 0:
            x = x[:1]  # one input shared by the batch: transformed once
        if mono:
            # The mean's 1 / channels scales the (real) input, so the channel sum below has no backward pass
            # of its own over the spectra.
            x = x / x.shape[1]
        out = F.rfft(x, n_fft)
        if per_channel is not None:
            out = out * per_channel
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
    ) -> Tensor:
        return self.process(audio, sample_rate, params, validate, mono)

    # -- export / import ------------------------------------------------------------------

    def to_dict(self, params: Tensor | None = None) -> dict:
        """The stored settings, or ``params`` ``(num_params,)`` (or ``(1, num_params)``) unit vector,
        as a plain dict in physical units (format in the module docstring).  Values are clamped
        to ``[0, 1]`` first, as :meth:`process` does."""
        if params is None:
            params = self._settings
        u = torch.as_tensor(params).detach().to("cpu", torch.float64).reshape(-1)
        if u.shape[0] != self.num_params:
            raise ValueError(f"expected {self.num_params} params for chain {self.spec!r}, got {tuple(params.shape)}")
        if not bool(torch.isfinite(u).all()):
            raise ValueError("params contain NaN or Inf")
        u = u.clamp(0.0, 1.0)
        effects, start = [], 0
        for e in self.effects:
            vals = {s.name: _round(float(s.to_physical(u[start + j]))) for j, s in enumerate(e.param_specs)}
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
    def from_dict(cls, d: dict) -> "Chain":
        """Rebuild the chain from a dict written by :meth:`to_dict`, holding the dict's values as its
        :attr:`settings` (float64, so ``from_dict(d).to_dict() == d``)."""
        cls._check_dict(d)
        chain = cls.from_spec(d["chain"], seed=d.get("seed", 0))
        return chain.set_settings(chain.params_from_dict(d))

    def params_from_dict(self, d: dict) -> Tensor:
        """Unit vector ``(num_params,)`` float64 from a dict for *this* chain; ``ValueError``
        if the dict is for another chain (spec, seed, effect types, parameter names) or
        holds a missing, extra, non-finite or out-of-range value."""
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
            p = entry["params"]
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
                units.append(min(max(float(s.to_unit(torch.tensor(float(v), dtype=torch.float64))), 0.0), 1.0))
        return torch.tensor(units, dtype=torch.float64)

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, num_params={self.num_params}"
