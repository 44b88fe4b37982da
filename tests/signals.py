"""Test signals shared by the API tests."""

import numpy as np


def tone(sr=16000, seconds=1.5, channels=2, seed=0):
    """A 220 Hz sine with a little noise, `(channels, samples)` float32, each channel 20 % quieter."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    return np.stack([x * (1 - 0.2 * c) for c in range(channels)]).astype(np.float32)
