"""How to optimize: the `Recipe` and its named presets. Torch-free, so option parsing can validate a recipe
without loading torch.

Every bad value raises `text2fx.errors.InputError` (a `ValueError`) with a one-line message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from text2fx.checks import integer, real
from text2fx.errors import InputError

LOSS_MODES = ("cosine", "directional", "best")
INITS = ("random", "neutral")


@dataclass(frozen=True)
class Recipe:
    """How to optimize. See `PRESETS` for the named ones; `Recipe.from_preset` changes single settings of one.

    Attributes:
        steps: Adam steps (at most; `patience` can stop earlier). 0: no optimization: the (first) starting
            point is the result, kept even when it sounds less like the prompt than the input (no bypass):
            the `random` preset. `from_preset` refuses a change to 0 steps.
        lr: Adam learning rate, in the unconstrained parameter space.
        loss: "cosine", "directional", or "best" (both losses optimized side by side, the better kept).
        init: "random" (sigmoid of N(0, 1) logits, as in the paper) or "neutral" (the first restart starts
            from the chain's neutral settings, further restarts at random ones).
        restarts: independent starting points optimized together; the best is kept.
        excerpts: for inputs longer than the embedder's window, how many windows (the loudest,
            non-overlapping) the loss is averaged over.
        time_shift: circularly shift each clip by a random amount every step (the paper's augmentation).
        patience: stop once no candidate has improved its best loss by more than `min_delta` for this many
            steps (None: never).
        min_delta: the smallest loss decrease that counts as progress for `patience`.
        check_every: how often (steps) the host looks at the losses: progress reports and the early stop.
            Between checks the loop never waits for the device.

    Integer fields must be integers (`operator.index`; bools are refused) and are stored as Python ints;
    `lr` and `min_delta` are stored as floats.
    """

    steps: int = 300
    lr: float = 0.02
    loss: str = "cosine"
    init: str = "random"
    restarts: int = 4
    excerpts: int = 3
    time_shift: bool = True
    patience: int | None = 100
    min_delta: float = 1e-4
    check_every: int = 10

    def __post_init__(self) -> None:
        def store(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        store("steps", integer(self.steps, "steps", minimum=0))
        for name in ("restarts", "excerpts", "check_every"):
            store(name, integer(getattr(self, name), name, minimum=1))
        if self.patience is not None:
            store("patience", integer(self.patience, "patience", minimum=1))
        lr = real(self.lr, "lr")
        if lr <= 0:
            raise InputError(f"lr must be positive, got {lr}")
        store("lr", lr)
        min_delta = real(self.min_delta, "min_delta")
        if min_delta < 0:
            raise InputError(f"min_delta must be at least 0, got {min_delta}")
        store("min_delta", min_delta)
        if not isinstance(self.loss, str) or self.loss not in LOSS_MODES:
            raise InputError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSS_MODES)}")
        if not isinstance(self.init, str) or self.init not in INITS:
            raise InputError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}")
        if not isinstance(self.time_shift, bool):
            raise InputError(f"time_shift must be True or False, got {self.time_shift!r}")

    @classmethod
    def from_preset(cls, preset: str, **changes: Any) -> "Recipe":
        """The preset named `preset` (a key of `PRESETS`) with single fields changed.

        "auto" depends on the device: resolve it first with `resolve_preset`. Unknown preset names, unknown
        fields and bad values raise `InputError`.
        """
        if not isinstance(preset, str) or preset not in PRESETS:
            hint = " (resolve 'auto' with resolve_preset(preset, device) first)" if preset == "auto" else ""
            raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}{hint}")
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = [name for name in changes if name not in fields]
        if unknown:
            raise InputError(f"unknown recipe field {unknown[0]!r}; fields are {', '.join(fields)}")
        recipe = dataclasses.replace(PRESETS[preset], **changes)
        if "steps" in changes and recipe.steps == 0:
            # 0 steps is the `random` preset's contract (its starting point kept as it is, never bypassed), not a
            # setting to reach by accident
            raise InputError("steps must be at least 1, got 0 (random settings without optimization: preset 'random')")
        return recipe


def resolve_preset(preset: str, device: Any) -> str:
    """"auto" is "fast" on a CPU (where batched restarts cost their full price) and "default" elsewhere.

    `device` is a `torch.device` or its name ("cpu", "cuda:1"); other presets are returned unchanged.
    """
    if preset == "auto":
        kind = getattr(device, "type", str(device).split(":")[0])
        return "fast" if kind == "cpu" else "default"
    return preset


PRESETS: dict[str, Recipe] = {
    # The paper's recipe exactly: 600 Adam steps at lr 0.01 from random parameters, cosine loss, one run.
    "paper": Recipe(steps=600, lr=0.01, loss="cosine", init="random", restarts=1, excerpts=1, patience=None),
    # Batched restarts are nearly free on a GPU; a higher rate reaches the paper's loss in fewer steps.
    "default": Recipe(steps=300, lr=0.02, loss="cosine", init="random", restarts=4, excerpts=3, patience=100),
    # For CPUs: one run, few steps, early stop.
    "fast": Recipe(steps=100, lr=0.04, loss="cosine", init="random", restarts=1, excerpts=1, patience=30),
    # The paper's control: random settings (sigmoid of N(0, 1) logits per parameter, from the seed), no
    # optimization, no bypass. A baseline for studies (benchmarks/quality.py study), not for use.
    "random": Recipe(steps=0, lr=0.01, loss="cosine", init="random", restarts=1, excerpts=1, patience=None,
                     time_shift=False),
}
