"""Refine in turns: `text2fx in.wav "a bit less boomy" --from first.json` (API `previous=`).

A turn starts from the settings a previous turn left (its report's `chain`: the settings it applied, at its
amount) and optimizes toward the new words *relative to that sound*:

- the optimizer's first restart starts at the previous settings (parameters sitting at the very edge of
  their range start just inside it, 2 % of the range, as a neutral start does, so they can still move);
  further restarts start at random perturbations around them (logits + 0.5 x N(0, 1), seeded: about an
  eighth of a parameter's range in the middle of it), so `--restarts` explores near the previous sound
  instead of anywhere; `--init` does not apply;
- the "before" is the input processed with the previous settings: the directional loss's reference
  embedding, the similarity before, and the bypass (a turn that finds nothing better keeps the previous
  settings, and a candidate whose best point is where it started is that: the previous settings, exactly);
- the chain is the previous one, or a longer one that holds the previous effects in the same order (extra
  effects start neutral, so the sound starts where it was); a shorter chain or another order is refused;
  the chain's noise seed (the reverb's) stays the previous settings' own, `--seed` seeds the optimizer.

The report keeps `turns`: every turn's prompt, options, recipe, seed, amount and the settings it left, so
`replay` runs a sequence again (bit-exact on a CPU) and `text2fx render` of the last report reproduces the
last audio. A previous file without a history (a bare chain dict, an older report) enters the history as one
turn holding only its settings.

Reading and checking a previous file is torch-free (before any model load); the unit vectors need fx.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text2fx.errors import InputError, UsageError

# Restarts after the first start this far around the previous settings (standard deviation, in logits).
START_SPREAD = 0.5


@dataclass(frozen=True)
class Previous:
    """What a refinement starts from.

    Attributes:
        settings: the chain dict (fx's format, physical units) the previous turn applied.
        turns: the history up to and including the previous turn (`turn_record` entries).
        source: where it came from, for messages (a path, or "previous").
    """

    settings: dict
    turns: tuple
    source: str

    @property
    def chain(self) -> str:
        return canonical(self.settings["chain"])

    @property
    def seed(self) -> int:
        return int(self.settings.get("seed", 0))


def canonical(spec: str) -> str:
    return ",".join(n.strip() for n in str(spec).split(","))


def previous_value(value: Any) -> Previous | None:
    """The previous settings from a report or chain dict, a JSON path, a `Result` (anything with `report()`)
    or a `Previous`; None stays None. Unreadable files and files without settings raise `InputError`."""
    if value is None or isinstance(value, Previous):
        return value
    from text2fx.report import read_settings

    source = "previous"
    if isinstance(value, (str, os.PathLike)):
        source = str(value)
        settings = read_settings(value)  # one-line errors: missing, unreadable, not JSON, no settings
        whole = json.loads(Path(value).read_text(encoding="utf-8-sig"))
    else:
        if callable(getattr(value, "report", None)):
            value = value.report()
        if not isinstance(value, dict):
            raise UsageError(f"previous must be a settings file, a report, a chain dict or a Result, got "
                             f"{type(value).__name__}")
        settings, whole = read_settings(value, source), value
    history = whole.get("turns") if "schema" in whole else None
    if history is None:
        history = [{"settings": settings}]  # no history: the given settings are where the sequence starts
    if not isinstance(history, list) or not all(isinstance(t, dict) and "settings" in t for t in history):
        raise InputError(f"{source}: 'turns' must be a list of turns, each with its settings")
    return Previous(settings=settings, turns=tuple(history), source=source)


def match(previous: str, chain: str) -> list[int] | None:
    """Where each effect of the `previous` chain sits in `chain` (the first fit, in order), or None when
    `chain` does not hold them in that order."""
    names, positions, k = chain.split(","), [], 0
    for name in previous.split(","):
        while k < len(names) and names[k] != name:
            k += 1
        if k == len(names):
            return None
        positions.append(k)
        k += 1
    return positions


def check_chain(previous: Previous, chain: str) -> None:
    """Refuse a chain that does not continue the previous one: it must hold the previous effects in order."""
    if match(previous.chain, canonical(chain)) is None:
        raise UsageError(f"--from {previous.source}: its settings are for chain '{previous.chain}'; refine with "
                         f"that chain or a longer one holding its effects in that order, not '{chain}'")


def check_rates(previous: Previous, chain: str, sample_rates) -> None:
    """Build the previous chain (its values checked) and its unit vector at each rate: one-line errors
    before any model load. Imports fx."""
    for rate in sorted(set(sample_rates)):
        start_unit(previous, chain, rate)


def start_unit(previous: Previous, chain, sample_rate: int):
    """`(P,)` float64 unit vector of `chain` (an `fx.Chain` or a spec) at `sample_rate`: the previous
    settings for its effects, neutral for the others."""
    import fx
    import torch

    from text2fx.report import load_chain, settings_at

    if isinstance(chain, str):
        chain = fx.Chain.from_spec(chain, seed=previous.seed)
    before = load_chain(previous.settings, source=previous.source)
    positions = match(before.spec, chain.spec)
    if positions is None:
        check_chain(previous, chain.spec)
    unit_before = settings_at(before, sample_rate)
    sizes = [e.num_params for e in chain]
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    u = chain.neutral_unit(torch.float64)
    k = 0
    for effect, position in zip(before, positions):
        u[starts[position] : starts[position] + effect.num_params] = unit_before[k : k + effect.num_params]
        k += effect.num_params
    return u


def settle(outcome, start, restarts: int) -> None:
    """With a start: a bypass keeps the previous settings exactly (float64), and so does a candidate whose
    best point is its start (best step 0 of a restart that started at the previous settings): it did not move,
    and is then reported as the bypass it is. Changes `outcome` in place."""
    import torch

    moved = not (outcome.best_step == 0 and outcome.candidate % restarts == 0)
    if outcome.bypassed or not moved:
        outcome.params = start.detach().to("cpu", torch.float64).clone()
        if not outcome.bypassed:
            outcome.bypassed = True
            outcome.similarity_after = outcome.similarity_before
            outcome.loss_value = 1.0 - outcome.similarity_before if outcome.loss == "cosine" else 1.0


def turn_record(options, prompt: int, chain_spec: str, preset: str, recipe, max_batch: int, bypassed: bool,
                settings: dict) -> dict:
    """One entry of the report's `turns`: what `replay` needs to run the turn again, and what it left.
    `prompt` indexes the job's goals (its prompts; None for a reference recording without a prompt)."""
    record = {
        "prompt": options.goals[prompt],  # None: a reference (like) without a prompt
        "template": options.template,
        "anchor": options.anchor,
        "chain": chain_spec,
        "seed": options.seed,
        "preset": preset,
        "recipe": dataclasses.asdict(recipe),
        "max_batch": max_batch,
        "amount": options.amount,
        "from_previous": options.previous is not None,
        "bypassed": bool(bypassed),
        "settings": settings,
    }
    # what else aimed the turn (`text2fx.targets`), when it was used
    if getattr(options, "avoid", ()):
        record["avoid"] = list(options.avoid)
        record["avoid_weight"] = options.avoid_weight
    like = getattr(options, "like", None)
    if like is not None:
        path = like if isinstance(like, (str, os.PathLike)) else getattr(like, "path", None)
        record["like"] = None if path is None else str(path)  # None: an array, which a report cannot hold
        record["like_weight"] = options.like_weight
    return record


def history(options, record: dict) -> list[dict]:
    """The report's `turns`: the previous history, then this turn."""
    before = [] if options.previous is None else [dict(t) for t in options.previous.turns]
    return before + [record]


def replay(engine, audio, sample_rate: int, report: Any, keep_length: bool = False):
    """Run the turns of `report` (a report dict, a JSON path or a `Result`) again on `audio`, each from the
    one before, with the recorded prompts, options, recipes and seeds; returns the last turn's `Result`. On a
    CPU the settings come out identical (the optimizer is bit-reproducible there); `engine` must batch as the
    recorded run did (`max_batch`, which decides when an early stop happens).

    Raises:
        InputError: no history in `report`, or an engine whose `max_batch` differs from the recorded one.
    """
    from text2fx.recipe import PRESETS

    previous = previous_value(report)
    turns = list(previous.turns)
    if not turns or "recipe" not in turns[-1]:
        raise InputError(f"{previous.source}: no turns to replay")
    result = None
    start: Any = None
    for n, turn in enumerate(turns):
        if "recipe" not in turn:  # a sequence that started from given settings
            start = turn["settings"]
            continue
        if turn["max_batch"] != engine.max_batch and turn["recipe"].get("patience") is not None:
            raise InputError(f"turn {n + 1} ran with max_batch {turn['max_batch']}; replay it with "
                             f"Engine(max_batch={turn['max_batch']})")
        aims = {k: turn[k] for k in ("avoid", "avoid_weight", "like", "like_weight") if k in turn}
        if "like" in aims and aims["like"] is None:
            raise InputError(f"turn {n + 1} matched a reference recording given as an array; replay needs it "
                             f"as a file")
        # the recorded recipe, as changes to its preset's (a preset's own values, e.g. the random preset's 0
        # steps, are not options one may set)
        preset = PRESETS.get(turn["preset"])
        base = dataclasses.asdict(preset) if preset is not None else {}
        changes = {k: v for k, v in turn["recipe"].items() if k not in base or base[k] != v}
        result = engine.apply(
            audio, sample_rate, turn["prompt"], chain=turn["chain"], preset=turn["preset"], seed=turn["seed"],
            template=turn["template"], anchor=turn["anchor"], keep_length=keep_length, amount=turn["amount"],
            previous=start, **aims, **changes,
        )
        start = result
    return result
