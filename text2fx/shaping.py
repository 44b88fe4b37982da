"""A job's found settings, shaped for output: the amount applied (`text2fx.amount`) and the history of turns
(`text2fx.turns`) recorded on each `Result`. Used by `text2fx.pipeline.run` between optimizing and writing."""

from __future__ import annotations

from dataclasses import dataclass

from text2fx import amount as amount_
from text2fx import turns as turns_


@dataclass
class Shaped:
    """One result's settings at the job's amount.

    Attributes:
        unit: `(P,)` unit vector to render (at the input's rate).
        found: the chain dict at amount 1 (what the optimizer found).
        applied: the chain dict at the amount (what is rendered and reported as `chain`).
        amount: the amount.
        clamped: parameters the amount pushed past their range (`text2fx.amount.scale`).
    """

    unit: object
    found: dict
    applied: dict
    amount: float
    clamped: list


def shape(chain, unit, sample_rate: int, amount: float) -> Shaped:
    """`unit` (the found `(P,)` unit settings of `chain` at `sample_rate`) at `amount`."""
    found = chain.to_dict(unit, sample_rate=sample_rate)
    if amount == 1.0:
        return Shaped(unit, found, found, amount, [])
    applied, clamped = amount_.scale(found, amount, amount_.chain_specs(chain))
    return Shaped(chain.params_from_dict(applied, sample_rate), found, applied, amount, clamped)


def annotate(result, shaped: Shaped, options, prompt: int, chain, preset: str, recipe, max_batch: int,
             bypassed: bool) -> None:
    """Record on `result` (a `text2fx.result.Result`) the settings applied, the amount and the turns."""
    result.params = shaped.applied
    result.amount = amount_.record(shaped.amount, shaped.found, shaped.clamped)
    record = turns_.turn_record(options, prompt, chain.spec, preset, recipe, max_batch, bypassed, shaped.applied)
    result.turns = turns_.history(options, record)
