"""How much of the found effect to apply: `--amount A` (API `amount=`), from the settings in physical units.

Amount 1 is the settings the optimizer found; 0 is the input itself (returned bit-exact: no effect is run and
no level policy is applied); values in between move each parameter from its neutral value toward the found
one, in the parameter's own scale (its `fx.ParamSpec`):

- parameters that set *how much* of an effect there is (`ParamSpec.amount == "move"`: EQ band gains, gain,
  a reverb's or a distortion's mix, drive, a compressor's threshold, ratio and make-up gain) move linearly in
  their unit when their scale is linear (dB, %): `neutral + A * (found - neutral)`, so amount 0.5 is half the
  dB of every EQ band; geometrically when it is logarithmic (a compressor's ratio): `neutral * (found /
  neutral) ** A`;
- parameters that *shape* an effect (`"keep"`: frequencies, Q, a reverb's decay times, pre-delay and wet
  tone, a compressor's attack, release and knee) keep their found value: half of a "cathedral" is the same
  cathedral, quieter (a send turned down), not a smaller room; half of an EQ boost at 120 Hz is at 120 Hz.

For the EQ, whose RBJ biquads are what `fx` runs, this gives exactly half the dB at each band's centre
frequency and on each shelf's plateau, and the RBJ curve of the halved gains elsewhere (the curve of one
biquad is not proportional to its gain in dB: between centre and skirts a +12 dB band at amount 0.5 departs
from half its dB by at most 0.12 dB, whatever its Q, a +20 dB one by 0.48 dB; `tests/test_amount.py`).
A negative amount of the EQ is its exact inverse at every frequency (an RBJ peak or shelf of -G dB is the
reciprocal of the one of +G dB).

Above 1 the movement extrapolates, each parameter clamped to its range (the clamped ones are listed in the
report). Below 0 the gains invert (-1: every EQ band and gain flipped): that is meaningful only for
parameters whose neutral lies strictly inside a linear range (a dB gain around 0 dB); a chain with any other
"move" parameter (a reverb's mix, a compressor's threshold, a distortion's drive) refuses negative amounts
with a one-line error. The range is [-2, 2].

Torch-free: the effects' parameter descriptions (`ParamSpec`s, or anything with the same attributes) are
passed in.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from text2fx.checks import real
from text2fx.errors import InputError, UsageError

AMOUNT_MIN, AMOUNT_MAX = -2.0, 2.0
_DIGITS = 12  # settings files hold 12 significant digits (fx.Chain.to_dict)


def amount_value(value: Any, name: str = "amount") -> float:
    """An amount: a finite number in [-2, 2] (1: the found settings, 0: the input)."""
    try:
        number = real(value, name)
    except InputError as e:
        raise UsageError(str(e)) from None
    if not AMOUNT_MIN <= number <= AMOUNT_MAX:
        raise UsageError(f"{name} must be between {AMOUNT_MIN:g} and {AMOUNT_MAX:g} (1: the found settings, "
                         f"0: the input unchanged), got {number:g}")
    return number


def moved(spec, found: float, amount: float) -> float:
    """The value of one parameter at `amount`, before clamping to its range: see the module docstring."""
    if spec.amount == "keep" or amount == 1.0:
        return float(found)
    if amount == 0.0:
        return float(spec.neutral)
    if spec.scale == "log":
        return float(spec.neutral * (found / spec.neutral) ** amount)
    return float(spec.neutral + amount * (found - spec.neutral))


def invertible(spec) -> bool:
    """Whether a negative amount means something for this parameter: it is kept, or it is a linear one whose
    neutral lies strictly inside its range (a gain in dB around 0 dB), so the opposite side exists."""
    return spec.amount == "keep" or (spec.scale == "linear" and spec.min < spec.neutral < spec.max)


def check(amount: float, effects: Iterable[tuple[str, Sequence]]) -> None:
    """Refuse a negative `amount` for a chain that cannot be inverted. `effects`: (type name, param specs) of
    each effect in chain order (`chain_specs`)."""
    if amount >= 0:
        return
    for type_name, specs in effects:
        stuck = [s.name for s in specs if not invertible(s)]
        if stuck:
            raise UsageError(f"amount {amount:g}: a negative amount inverts gains (EQ, gain) and this chain's "
                             f"{type_name} cannot be inverted ({stuck[0]} has no opposite); use 0 to 2")


def chain_specs(chain) -> list[tuple[str, tuple]]:
    """(type name, param specs) of each effect of an `fx.Chain` (or a chain spec string such as "eq,reverb",
    which imports fx)."""
    if isinstance(chain, str):
        import fx

        try:
            return [(name, tuple(fx.create_effect(name).param_specs)) for name in chain.split(",")]
        except ValueError as e:
            raise InputError(f"chain {chain!r}: {e}") from None
    return [(effect.type_name, tuple(effect.param_specs)) for effect in chain]


def scale(settings: dict, amount: float, effects: Sequence[tuple[str, Sequence]]) -> tuple[dict, list[dict]]:
    """The chain dict `settings` (fx's format, physical units) at `amount`.

    Returns the new chain dict (same chain and seed; values rounded to 12 significant digits as settings
    files hold them; at amount 1 the values themselves) and the parameters clamped to their range, each
    `{"effect": index, "type", "param", "value": clamped value, "unclamped": value before clamping}`.
    """
    amount = amount_value(amount)
    check(amount, effects)
    entries = settings["effects"]
    if len(entries) != len(effects):
        raise InputError(f"settings have {len(entries)} effects, the chain has {len(effects)}")
    out, clamped = [], []
    for i, (entry, (type_name, specs)) in enumerate(zip(entries, effects)):
        params = dict(entry["params"])
        for spec in specs:
            if spec.name not in params:
                continue  # a legacy file's missing parameter: filled in when the chain is built
            raw = moved(spec, float(params[spec.name]), amount)
            value = min(max(raw, spec.min), spec.max)
            if not math.isclose(value, raw, rel_tol=1e-9, abs_tol=1e-12):
                clamped.append({"effect": i, "type": type_name, "param": spec.name,
                                "value": value, "unclamped": float(f"{raw:.{_DIGITS}g}")})
            params[spec.name] = params[spec.name] if amount == 1.0 else float(f"{value:.{_DIGITS}g}")
        out.append({**entry, "params": params})
    return {**settings, "effects": out}, clamped


def record(amount: float, found: dict, clamped: list[dict]) -> dict:
    """The report's `amount` part: the amount applied, the settings at amount 1 (`found`, so the file can be
    rendered again at any amount) and the parameters clamped to their range."""
    return {"value": float(amount), "found": found, "clamped": list(clamped)}


def saved(params: Any, amount: float | None, source: str = "params") -> tuple[dict, float, list[dict]]:
    """What `render` applies: the chain dict at `amount` and the amount, from a report, a chain dict or a
    JSON path. `amount` None: the settings as saved (`chain`, at the report's own amount, 1 without one); a
    number: that amount of the *found* settings (the report's `amount.found`, else its `chain`).

    Raises:
        InputError: unreadable or malformed settings (one line, as `text2fx.report.read_settings`).
        UsageError: an amount out of range, or negative for a chain that cannot be inverted.
    """
    from text2fx.report import read_settings

    whole = params
    if isinstance(params, (str, os.PathLike)):
        settings = read_settings(params)  # one-line errors for missing, unreadable or malformed files
        whole = json.loads(Path(params).read_text(encoding="utf-8-sig"))
    else:
        settings = read_settings(params, source)
    record_ = whole.get("amount") if isinstance(whole, dict) and "schema" in whole else None
    own = 1.0
    if isinstance(record_, dict):
        own = amount_value(record_.get("value", 1.0), f"{source}: amount.value")
    if amount is None:
        return settings, own, list(record_.get("clamped", [])) if isinstance(record_, dict) else []
    amount = amount_value(amount)
    found = settings
    if isinstance(record_, dict) and "found" in record_:
        found = read_settings(record_["found"], f"{source}: amount.found")
    if settings.get("chain", "").replace(" ", "") != found.get("chain", "").replace(" ", ""):
        raise InputError(f"{source}: amount.found is for chain {found['chain']!r}, the settings for "
                         f"{settings['chain']!r}")
    scaled, clamped = scale(found, amount, chain_specs(found["chain"].replace(" ", "")))
    return scaled, amount, clamped
