"""The optimization loop's state: fixed device tensors updated in place.

The parameters `z`, Adam's moments, the step counter, the loss history, the best loss / parameters / step of
every candidate and the early-stop tracking all live in tensors allocated once. The step number is a device
tensor too, so a step is the same sequence of kernels every time, with no read back to the host: a CUDA
graph can record it once and replay it (see `graph`).

Adam is written out here (Kingma & Ba, 2015, as `torch.optim.Adam` computes it with `capturable=True`) rather
than taken from `torch.optim`: constructing a `torch.optim` optimizer imports `torch._dynamo` and sympy (about
2 s on a 2-core CPU, a quarter of a 1-step command), for one tensor and three lines of arithmetic.
"""

from __future__ import annotations

from typing import Callable

import torch

# `loss_of(u, step)`: `(C, P)` unit parameters and the `(1,)` step tensor -> `(C,)` losses (differentiable in u)
# and, when the state records the path, `(C, D)` embeddings of what each candidate's audio became (else None).
LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


class LoopState:
    """Adam on `(C, P)` logits `z` (the chain sees `sigmoid(z)`), tracking each candidate's best iterate.

    Args:
        z0: `(C, P)` starting logits on the loop's device.
        lr: Adam's learning rate.
        steps: the most steps the loop runs (the history's length).
        min_delta: the smallest loss decrease that counts as progress for the early stop.
        record_every: also keep every candidate's embedding at steps 0, N, 2N, ... (`path`, `(ceil(steps /
            N), C, D)`), written in place by the step itself: no extra forward pass, no wait for the device.
        embed_dim: `D`, needed with `record_every`.
    """

    def __init__(self, z0: torch.Tensor, lr: float, steps: int, min_delta: float, record_every: int | None = None,
                 embed_dim: int | None = None):
        device = z0.device
        n_cand = z0.shape[0]
        self.z0 = z0
        self.min_delta = min_delta
        self.z = z0.clone().requires_grad_(True)
        self.lr = lr
        self.exp_avg = torch.zeros_like(z0)  # Adam's first moment
        self.exp_avg_sq = torch.zeros_like(z0)  # and its second
        self.step_t = torch.zeros(1, dtype=torch.long, device=device)
        self.history = torch.empty(steps, n_cand, device=device)  # loss of every candidate at every step
        self.last_loss = torch.empty(n_cand, device=device)
        self.best_loss = torch.empty(n_cand, device=device)
        self.best_u = torch.empty_like(z0)  # unit parameters at each candidate's best step
        self.best_step = torch.empty(n_cand, dtype=torch.long, device=device)
        # The early stop: the last loss that improved on the one before by more than min_delta, and its step.
        self.progress_loss = torch.empty(n_cand, device=device)
        self.progress_step = torch.empty(n_cand, dtype=torch.long, device=device)
        self.record_every = record_every
        self.path = None
        if record_every is not None:
            self.path = torch.zeros(-(-steps // record_every), n_cand, embed_dim, device=device)
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        """Back to the start: `z = z0`, Adam's moments and step at zero, nothing recorded."""
        self.z.copy_(self.z0)
        self.z.grad = None
        self.exp_avg.zero_()
        self.exp_avg_sq.zero_()
        self.step_t.zero_()
        self.best_loss.fill_(float("inf"))
        self.best_u.copy_(torch.sigmoid(self.z0))
        self.best_step.zero_()
        self.progress_loss.fill_(float("inf"))
        self.progress_step.zero_()

    def step(self, loss_of: LossFn) -> None:
        """One Adam step on every candidate. Device work only: nothing here waits for the device."""
        self.z.grad = None
        u = torch.sigmoid(self.z)
        loss, emb = loss_of(u, self.step_t)
        self._record(loss, u)
        if self.path is not None:
            self._record_path(emb)
        loss.sum().backward()
        self._adam()
        self.step_t.add_(1)

    @torch.no_grad()
    def _adam(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        # torch.optim.Adam's defaults and its capturable arithmetic: the bias corrections come from the step
        # tensor, so nothing is read back to the host and a CUDA graph replays the update as recorded.
        grad = self.z.grad
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        t = (self.step_t + 1).to(self.z.dtype)
        step_size = self.lr / (1 - beta1**t)
        denom = (self.exp_avg_sq.sqrt() / (1 - beta2**t).sqrt()).add_(eps)
        self.z.sub_(step_size * self.exp_avg / denom)

    @torch.no_grad()
    def _record(self, loss: torch.Tensor, u: torch.Tensor) -> None:
        step_t = self.step_t
        self.last_loss.copy_(loss)
        self.history.index_copy_(0, step_t, loss[None])
        better = loss < self.best_loss
        self.best_loss.copy_(torch.where(better, loss, self.best_loss))
        self.best_u.copy_(torch.where(better[:, None], u, self.best_u))
        self.best_step.copy_(torch.where(better, step_t, self.best_step))
        progressed = loss < self.progress_loss - self.min_delta
        self.progress_loss.copy_(torch.where(progressed, loss, self.progress_loss))
        self.progress_step.copy_(torch.where(progressed, step_t, self.progress_step))

    @torch.no_grad()
    def _record_path(self, emb: torch.Tensor) -> None:
        # The same kernels every step (a CUDA graph replays them): write slot step // N, with the new embedding
        # on steps that are multiples of N and with what the slot holds on the others.
        slot = torch.div(self.step_t, self.record_every, rounding_mode="floor").clamp_max(self.path.shape[0] - 1)
        due = (self.step_t % self.record_every == 0)[:, None, None]
        self.path.index_copy_(0, slot, torch.where(due, emb[None].to(self.path.dtype), self.path.index_select(0, slot)))

    # The two reads below wait for the device; the loop calls them only every `check_every` steps.

    def losses_now(self) -> tuple[float, float]:
        """The lowest loss over candidates at the last step, and the lowest so far."""
        current, best = torch.stack([self.last_loss.min(), self.best_loss.min()]).tolist()
        return current, best

    def stalled(self, last_step: int, patience: int) -> bool:
        """Whether no candidate has made progress in the `patience` steps up to step `last_step` (0-based)."""
        return bool((last_step - self.progress_step >= patience).all())
