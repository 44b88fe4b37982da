"""From the candidates' final losses to one `Outcome` per target: the choice among candidates, and the
bypass (the unprocessed input wins over a candidate that does not beat it)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from text2fx.optimize.layout import Layout


@dataclass
class Outcome:
    """The result of optimizing one target.

    Attributes:
        params: `(P,)` parameters in [0, 1] (unit space of the chain), on the CPU: the chosen candidate's
            best parameters, or the chain's neutral settings (`chain.neutral_unit()`) when `bypassed`.
        loss: "cosine" or "directional": the objective of the chosen candidate.
        loss_value: that objective at `params`, without time shift, averaged over excerpts. When bypassed,
            the loss of the unprocessed input: 1 - similarity_before (cosine), 1.0 (directional).
        history: the chosen candidate's loss at every step run (with the step's time shift); kept when
            bypassed, as the record of what the optimization reached.
        best_step: the step whose parameters the chosen candidate kept (when bypassed, those parameters were
            discarded in favour of the neutral settings).
        steps_run: steps actually taken (fewer than asked after an early stop).
        similarity_before: cosine similarity of the input to the prompt (mean over excerpts).
        similarity_after: the same for the processed input; never below `similarity_before` (equal to it
            exactly when bypassed).
        candidate: which of the target's candidates was chosen, and compared with the bypass (restarts
            first; for loss "best" the cosine restarts, then the directional ones).
        candidates: per candidate, its loss kind, final cosine/directional losses, its own objective's
            value (`own_loss`), `similarity_after`, `best_step`, and whether it alone would beat the bypass
            (`beats_bypass`): what `text2fx.candidates` chooses several distinct results from.
        bypassed: True when the chosen candidate did not beat the unprocessed input and `params` are the
            neutral settings.
        candidate_params: `(P,)` the chosen candidate's best parameters (at `best_step`), on the CPU: the
            same as `params` unless bypassed. With `history` and `best_step`, the record of the optimization.
        histories: every candidate's loss at every step run (`history` is `histories[candidate]`).
        candidates_params: `(K, P)` every candidate's best parameters (unit space), on the CPU.
        path: when recorded (`optimize(record_every=N)`), `(R, D)` embeddings of the chosen candidate's
            processed audio (mean over excerpts) at steps `path_steps` (0, N, 2N, ... < steps_run), on the CPU.
    """

    params: torch.Tensor
    loss: str
    loss_value: float
    history: list[float]
    best_step: int
    steps_run: int
    similarity_before: float
    similarity_after: float
    candidate: int
    candidates: list[dict]
    bypassed: bool = False
    candidate_params: torch.Tensor | None = None
    histories: list[list[float]] | None = None
    candidates_params: torch.Tensor | None = None
    path: torch.Tensor | None = None
    path_steps: list[int] | None = None


def choose(
    layout: Layout,
    final: tuple[torch.Tensor, torch.Tensor],
    unchanged: tuple[torch.Tensor, torch.Tensor],
    best_u: torch.Tensor,
    neutral_unit: torch.Tensor,
    history: torch.Tensor,
    best_step: torch.Tensor,
    steps_run: int,
    path: torch.Tensor | None = None,
    record_every: int | None = None,
    similarity: tuple[torch.Tensor, torch.Tensor] | None = None,
    bypass: bool = True,
) -> list[Outcome]:
    """One `Outcome` per target.

    Args:
        layout: the batch layout.
        final: `(C,)` cosine and directional losses of every candidate at its best parameters `best_u`.
        unchanged: the same two losses for the unprocessed input (see `layout.Objective.unchanged`).
        best_u: `(C, P)` each candidate's best parameters.
        neutral_unit: `(P,)` the chain's neutral settings.
        history: `(steps_run, C)` every candidate's loss at every step.
        best_step: `(C,)` the step of each candidate's best parameters.
        steps_run: steps taken.
        path, record_every: `(R, C, D)` embeddings recorded every `record_every` steps, or None.
        similarity: `(C,)` similarity to the target of every candidate and of the unprocessed input, when it is
            not `1 - cosine loss` (a loss with an avoid penalty, see `layout.Objective.similarity`).
        bypass: compare the chosen candidate with the unprocessed input (below). False (a recipe of 0 steps,
            the `random` preset: the paper's random-settings control) keeps the candidate whatever it scores.

    Within a target a single-loss run chooses the candidate with the lowest loss; "best" compares candidates
    of both losses on the sum of the two, since neither loss's values are on the other's scale. The chosen
    candidate then meets the bypass: it is kept only if its own loss is lower than the bypass's loss of the
    same kind AND its similarity to the text is not below the input's; otherwise the outcome is the bypass.
    """
    final_cos, final_dir = final
    unchanged_cos, unchanged_dir = unchanged
    k = layout.k
    directional = layout.directional
    own = torch.where(directional, final_dir, final_cos)
    bypass_own = torch.where(directional, unchanged_dir, unchanged_cos)
    score = (final_cos + final_dir) if layout.mixed else own
    chosen = score.view(layout.n_targets, k).argmin(1) + torch.arange(layout.n_targets, device=score.device) * k
    sim_before = 1.0 - unchanged_cos if similarity is None else similarity[1]
    sim_after = 1.0 - final_cos if similarity is None else similarity[0]
    # Written so that a NaN loss counts as not beating the input.
    wins = (own < bypass_own) & (sim_after >= sim_before)
    if not bypass:
        wins = torch.ones_like(wins)

    history_cpu = history[:steps_run].cpu()
    final_cos, final_dir, own, bypass_own = final_cos.cpu(), final_dir.cpu(), own.cpu(), bypass_own.cpu()
    sim_before, sim_after, wins, best_step = sim_before.cpu(), sim_after.cpu(), wins.cpu(), best_step.cpu()
    best_u_cpu = best_u.detach().cpu()
    neutral = neutral_unit.detach().to("cpu", torch.float32)
    path_steps, path_cpu = None, None
    if path is not None:
        path_steps = list(range(0, steps_run, record_every))
        path_cpu = path[: len(path_steps)].detach().float().cpu()
    outcomes = []
    for t, c in enumerate(chosen.tolist()):
        bypassed = not bool(wins[c])
        before = float(sim_before[c])
        optimized = best_u[c].detach().cpu()
        outcomes.append(
            Outcome(
                params=neutral.clone() if bypassed else optimized.clone(),
                loss=layout.kinds[c - t * k],
                loss_value=float(bypass_own[c] if bypassed else own[c]),
                history=history_cpu[:, c].tolist(),
                best_step=int(best_step[c]),
                steps_run=steps_run,
                similarity_before=before,
                similarity_after=before if bypassed else float(sim_after[c]),
                candidate=c - t * k,
                candidates=[
                    {
                        "loss": layout.kinds[j],
                        "cosine_loss": float(final_cos[t * k + j]),
                        "directional_loss": float(final_dir[t * k + j]),
                        "own_loss": float(own[t * k + j]),
                        "similarity_after": float(sim_after[t * k + j]),
                        "best_step": int(best_step[t * k + j]),
                        "beats_bypass": bool(wins[t * k + j]),
                    }
                    for j in range(k)
                ],
                bypassed=bypassed,
                candidate_params=optimized,
                histories=[history_cpu[:, t * k + j].tolist() for j in range(k)],
                candidates_params=best_u_cpu[t * k : (t + 1) * k].clone(),
                path=None if path_cpu is None else path_cpu[:, c].clone(),
                path_steps=path_steps,
            )
        )
    return outcomes
