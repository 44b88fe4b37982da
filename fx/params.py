"""Parameter descriptions and the mapping between unit space and physical units.

Every effect parameter is described by a :class:`ParamSpec`.  The optimizer works in
*unit space*: one number in ``[0, 1]`` per parameter.  ``ParamSpec.to_physical`` maps it
to the physical value (dB, Hz, s, ...) and ``ParamSpec.to_unit`` maps back.  Parameters
with ``scale="log"`` (frequencies, times, Q, ratios) are mapped geometrically so that a
fixed step in unit space is a fixed *ratio* (e.g. octaves) in physical units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ParamSpec", "SCALES", "range_to_physical", "range_to_unit"]

SCALES = ("linear", "log")
AMOUNT_ROLES = ("move", "keep")


@dataclass(frozen=True)
class ParamSpec:
    """Description of one effect parameter.

    Attributes:
        name: identifier, unique within its effect, e.g. ``"low_shelf_gain_db"``.
        unit: physical unit: ``"dB"``, ``"Hz"``, ``""``, ``"s"``, ``"ms"``, ``"%"``, ...
        min: smallest physical value.
        max: largest physical value.
        scale: ``"linear"`` or ``"log"`` (log requires ``min > 0``).
        neutral: physical value that leaves the audio unchanged (or as close as possible).
        description: one line for humans.
        amount: how the parameter follows an effect "amount" (dry/wet-style scaling of found settings, see
            ``text2fx.amount``): ``"move"`` (the default) moves it from ``neutral`` toward the found value in
            its ``scale``; ``"keep"`` keeps the found value: parameters that shape an effect rather than set
            how much of it there is (a band's frequency and Q, a reverb's decay times).
    """

    name: str
    unit: str
    min: float
    max: float
    scale: str
    neutral: float
    description: str = ""
    amount: str = "move"

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"ParamSpec name must be an identifier, got {self.name!r}")
        if self.scale not in SCALES:
            raise ValueError(f"ParamSpec {self.name}: scale must be one of {SCALES}, got {self.scale!r}")
        if not (math.isfinite(self.min) and math.isfinite(self.max) and self.min < self.max):
            raise ValueError(f"ParamSpec {self.name}: need finite min < max, got [{self.min}, {self.max}]")
        if self.scale == "log" and self.min <= 0:
            raise ValueError(f"ParamSpec {self.name}: log scale needs min > 0, got {self.min}")
        if self.amount not in AMOUNT_ROLES:
            raise ValueError(f"ParamSpec {self.name}: amount must be one of {AMOUNT_ROLES}, got {self.amount!r}")
        if not self.min <= self.neutral <= self.max:
            raise ValueError(
                f"ParamSpec {self.name}: neutral {self.neutral} outside [{self.min}, {self.max}]"
            )

    def to_physical(self, u: Tensor | float) -> Tensor:
        """Map unit-space values ``u`` (any shape, nominally in ``[0, 1]``) to physical units.

        No clamping: values outside ``[0, 1]`` extrapolate (callers clamp when needed).
        """
        u = torch.as_tensor(u)
        if self.scale == "log":
            lo, hi = math.log(self.min), math.log(self.max)
            return torch.exp(lo + u * (hi - lo))
        return self.min + u * (self.max - self.min)

    def to_unit(self, x: Tensor | float) -> Tensor:
        """Map physical values ``x`` (any shape) to unit space; exact inverse of :meth:`to_physical`."""
        x = torch.as_tensor(x)
        if self.scale == "log":
            lo, hi = math.log(self.min), math.log(self.max)
            return (torch.log(x) - lo) / (hi - lo)
        return (x - self.min) / (self.max - self.min)

    @property
    def neutral_unit(self) -> float:
        """The neutral value in unit space (a Python float, computed in float64)."""
        return float(self.to_unit(torch.tensor(self.neutral, dtype=torch.float64)))

    def contains(self, x: float, rel_tol: float = 1e-9) -> bool:
        """True when the physical value ``x`` lies in ``[min, max]`` (with a relative tolerance)."""
        tol = rel_tol * max(abs(self.min), abs(self.max))
        return math.isfinite(x) and self.min - tol <= x <= self.max + tol


def range_to_physical(spec: ParamSpec, u: Tensor | float, low: float, high: float) -> Tensor:
    """Map unit values ``u`` (any shape) onto the physical range ``[low, high]`` with ``spec``'s scale.

    The mapping an effect uses at a sample rate where a parameter's range is narrower than its spec's (see
    ``Effect.param_ranges``): ``[0, 1]`` covers exactly what the rate can hold, so the gradient is that of
    :meth:`ParamSpec.to_physical` on the narrower range (non-zero everywhere inside it).  ``low == high`` (a
    parameter with a single possible value at that rate) gives that value for every ``u``, with zero gradient.
    On ``u``'s device and dtype; differentiable in ``u``; no clamping.
    """
    u = torch.as_tensor(u)
    if low == high:
        return torch.full_like(u, low) + 0.0 * u
    if spec.scale == "log":
        lo, hi = math.log(low), math.log(high)
        return torch.exp(lo + u * (hi - lo))
    return low + u * (high - low)


def range_to_unit(spec: ParamSpec, x: Tensor | float, low: float, high: float) -> Tensor:
    """Inverse of :func:`range_to_physical`; for ``low == high`` the spec's own :meth:`ParamSpec.to_unit`
    (every unit value maps to that one value then)."""
    x = torch.as_tensor(x)
    if low == high:
        return spec.to_unit(x)
    if spec.scale == "log":
        lo, hi = math.log(low), math.log(high)
        return (torch.log(x) - lo) / (hi - lo)
    return (x - low) / (high - low)


def clamp_in_range(x: Tensor, low: float, high: float) -> Tensor:
    """``x`` clamped to ``[low, high]``, keeping the gradient of values exactly on a bound.

    ``Tensor.clamp`` passes no gradient at the bounds themselves, and many neutral settings (a dry
    reverb's 0 % mix) sit exactly there; outside the range the gradient is zero as usual.
    """
    return torch.where((x >= low) & (x <= high), x, x.clamp(low, high))
