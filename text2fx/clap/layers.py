"""torch.nn layers that skip their random initialisation, for models whose every weight comes from a checkpoint.

Each class is its torch.nn base class with `reset_parameters` doing nothing, so construction only allocates
(on the meta device: nothing at all). Initialising on the meta device would not be free either: several of
torch's meta kernels (`normal_`, for one) are Python reference implementations whose first call imports
torch._dynamo, seconds on a small CPU. Forward passes are the base classes' own.
"""

from __future__ import annotations

import torch.nn as nn


class Linear(nn.Linear):
    def reset_parameters(self) -> None:
        pass


class Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        pass


class LayerNorm(nn.LayerNorm):
    def reset_parameters(self) -> None:
        pass


class Conv1d(nn.Conv1d):
    def reset_parameters(self) -> None:
        pass


class Conv2d(nn.Conv2d):
    def reset_parameters(self) -> None:
        pass


class BatchNorm2d(nn.BatchNorm2d):
    def reset_parameters(self) -> None:
        pass
