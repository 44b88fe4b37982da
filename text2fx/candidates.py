"""Several distinct results per input and goal (`--candidates K`): the best restarts that differ meaningfully.

The optimizer runs several restarts side by side and keeps every one's best settings
(`text2fx.optimize.Outcome.candidates_params`). From them `select` takes, best first, the candidates whose
settings are at least `min_distance` away from every one already taken:

    distance(u, v) = sqrt(mean_p (u_p - v_p)^2)

over the chain's `P` parameters in unit space (each parameter's range mapped to 0..1, frequencies on a log
scale, as the optimizer sees them): the RMS difference of the two settings, in fractions of the ranges. "Best"
is the outcome's own ranking: the lowest loss (for loss "best", the lowest sum of the cosine and directional
losses). Only candidates that beat the unprocessed input on their own (`beats_bypass`, the bypass rule of
`text2fx.optimize`) are offered; a bypassed outcome is offered alone. So there may be fewer than asked.

A candidate's distance counts every parameter alike, also those an effect's other settings make inaudible
(a reverb's decay at 0 % mix): two settings apart only there count as distinct.
"""

from __future__ import annotations

import dataclasses
import math


def distance(u, v) -> float:
    """RMS difference of two `(P,)` unit-space settings (torch or numpy), in fractions of the ranges."""
    diff = [float(a) - float(b) for a, b in zip(u.tolist(), v.tolist())]
    return math.sqrt(sum(d * d for d in diff) / max(1, len(diff)))


def _score(candidate: dict, mixed: bool) -> float:
    return candidate["cosine_loss"] + candidate["directional_loss"] if mixed else candidate["own_loss"]


def select(outcome, count: int, min_distance: float) -> list[tuple[object, dict]]:
    """Up to `count` distinct candidates of one optimized target, best first.

    Args:
        outcome: a `text2fx.optimize.Outcome` with `candidates` and `candidates_params`.
        count: how many are asked.
        min_distance: the least `distance` between any two taken.

    Returns:
        `(outcome, info)` pairs: the first is `outcome` itself (its chosen candidate, or the bypass), the
        others copies holding another restart's settings, losses, history and similarity. `info` is the
        report's `candidate` part: rank (1 = best), of (how many were found), asked, min_distance, restart
        (the candidate's index among the restarts) and distances (to each other one taken, in rank order).
    """
    picked = [outcome.candidate]
    if count > 1 and not outcome.bypassed and outcome.candidates_params is not None:
        mixed = len({c["loss"] for c in outcome.candidates}) > 1
        order = sorted(range(len(outcome.candidates)), key=lambda j: (_score(outcome.candidates[j], mixed), j))
        params = outcome.candidates_params
        for j in order:
            if len(picked) == count:
                break
            c = outcome.candidates[j]
            if j in picked or not c["beats_bypass"] or not math.isfinite(_score(c, mixed)):
                continue
            if all(distance(params[j], params[p]) >= min_distance for p in picked):
                picked.append(j)
    chosen = []
    for rank, j in enumerate(picked, 1):
        if j == outcome.candidate:
            o = outcome
        else:
            c = outcome.candidates[j]
            o = dataclasses.replace(
                outcome, params=outcome.candidates_params[j].clone(), loss=c["loss"], loss_value=c["own_loss"],
                history=list(outcome.histories[j]), best_step=c["best_step"], similarity_after=c["similarity_after"],
                candidate=j, candidate_params=outcome.candidates_params[j].clone(), path=None, path_steps=None,
            )
        distances = [] if outcome.bypassed or outcome.candidates_params is None else [
            round(distance(outcome.candidates_params[j], outcome.candidates_params[p]), 4) for p in picked if p != j]
        chosen.append((o, {"rank": rank, "of": len(picked), "asked": count, "min_distance": min_distance,
                           "restart": j, "distances": distances}))
    return chosen


def link(results: list, choices: list) -> list:
    """The results of a job with candidates (every candidate, pair by pair, rank by rank, as `choices` says)
    -> one `Result` per pair, the best, whose `candidates` lists them all (itself first)."""
    primaries = []
    for result, choice in zip(results, choices):
        if choice["rank"] == 1:
            primaries.append(result)
            result.candidates = []
        primaries[-1].candidates.append(result)
    return primaries
