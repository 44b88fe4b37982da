"""Choosing the torch device a job runs on, and refusing one this machine does not have before any model
loads."""

from __future__ import annotations

import torch

from text2fx.errors import UsageError
from text2fx.options import device_value


def default_device() -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def available() -> list[str]:
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve(device: str | torch.device | None) -> torch.device:
    """`device` as a torch device, or the best available one for None.

    Raises:
        UsageError: an unknown name, or a device this machine does not have (one line listing those it has).
    """
    name = device_value(device)
    if name is None:
        return default_device()
    kind, _, index = name.partition(":")
    present = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}[kind]
    if present and index:
        present = int(index) < torch.cuda.device_count()
    if not present:
        raise UsageError(f"device {name!r} is not available on this machine (available: {', '.join(available())})")
    return torch.device(name)
