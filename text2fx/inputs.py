"""A job's inputs: audio arrays or files, checked, and cut into the windows the optimizer listens to.

Every input is read through a `Source` (`ArraySource` for arrays, `FileSource` for files read block by
block), so long files are never held in memory whole. Imports numpy, not torch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from text2fx import audio_io
from text2fx.errors import InputError
from text2fx.excerpts import choose_offsets
from text2fx.options import sample_rate_value

# CLAP's audio window; an embedder states its own, this is for checking inputs before one is loaded.
CLAP_WINDOW_S = 10.0
# Peaks below this (-120 dBFS) count as digital silence.
_SILENCE = 1e-6


class Source(Protocol):
    """Audio to read in pieces: `read(start, frames)` -> `(channels, frames)` float32."""

    sample_rate: int
    channels: int
    frames: int
    path: Path | None

    def read(self, start: int, frames: int) -> np.ndarray: ...


class ArraySource:
    """A `(channels, samples)` float32 array as a source."""

    path = None

    def __init__(self, audio: np.ndarray, sample_rate: int):
        self.audio = audio
        self.sample_rate = int(sample_rate)
        self.channels, self.frames = audio.shape

    def read(self, start: int, frames: int) -> np.ndarray:
        return self.audio[:, start : start + frames]


class FileSource:
    """An audio file as a source, read block by block."""

    def __init__(self, info: audio_io.AudioInfo):
        self.info = info
        self.path = info.path
        self.sample_rate, self.channels, self.frames = info.sample_rate, info.channels, info.frames

    def read(self, start: int, frames: int) -> np.ndarray:
        return audio_io.read(self.info.path, start, frames)


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or hasattr(x, "detach")  # numpy or torch


def as_audio(audio, sample_rate, what: str = "audio") -> np.ndarray:
    """Validate and convert audio to `(channels, samples)` float32 numpy (a 1-D array is mono).

    Accepts numpy arrays and torch tensors of real numbers; integer data is scaled from its full range
    (unsigned as offset binary, e.g. 8-bit WAV data).
    """
    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().numpy()
    if not isinstance(audio, np.ndarray):
        raise InputError(f"{what}: expected a numpy array or torch tensor (channels, samples), "
                         f"got {type(audio).__name__}")
    rate = sample_rate_value(sample_rate, f"{what}: sample_rate")
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2:
        raise InputError(f"{what}: expected shape (channels, samples) or (samples,), got {audio.shape}")
    if np.issubdtype(audio.dtype, np.complexfloating) or not (
        np.issubdtype(audio.dtype, np.floating) or np.issubdtype(audio.dtype, np.integer)
    ):
        raise InputError(f"{what}: expected real numbers, got dtype {audio.dtype}")
    if audio.size == 0:
        raise InputError(f"{what}: zero-length audio")
    if audio.shape[0] > audio.shape[1]:
        raise InputError(f"{what}: shape {audio.shape} has more channels than samples; pass (channels, samples)")
    audio_io.check_sample_rate(rate, what)
    if audio.shape[1] < audio_io.MIN_DURATION_S * rate:
        raise InputError(
            f"{what}: too short ({audio.shape[1] / rate:.3f} s); at least {audio_io.MIN_DURATION_S} s is needed"
        )
    if np.issubdtype(audio.dtype, np.unsignedinteger):
        half = float(np.iinfo(audio.dtype).max + 1) / 2
        audio = (audio - half) / half
    elif np.issubdtype(audio.dtype, np.integer):
        audio = audio / float(np.iinfo(audio.dtype).max + 1)
    return np.ascontiguousarray(audio, dtype=np.float32)


def array_sources(audio, sample_rate) -> tuple[list[ArraySource], bool]:
    """Sources for one array or a list of arrays (each numpy or torch), with one sample rate for all or one
    per input. Returns (sources, whether a single array was given)."""
    single = _is_array(audio)
    if not single and not isinstance(audio, (list, tuple)):
        raise InputError(f"audio must be a numpy array or torch tensor, or a list of them; got {type(audio).__name__}")
    audios = [audio] if single else list(audio)
    if not audios:
        raise InputError("no input audio given")
    if not all(_is_array(a) for a in audios):
        raise InputError("audio must be a numpy array or torch tensor (a list means several inputs, each an "
                         "array); convert nested lists with numpy.asarray")
    rates = list(sample_rate) if isinstance(sample_rate, (list, tuple)) else [sample_rate] * len(audios)
    if len(rates) != len(audios):
        raise InputError(f"{len(audios)} inputs but {len(rates)} sample rates")
    name = (lambda i: "audio") if single else (lambda i: f"input {i}")
    sources = []
    for i, (a, sr) in enumerate(zip(audios, rates)):
        x = as_audio(a, sr, name(i))
        sources.append(ArraySource(x, sample_rate_value(sr)))
    return sources, single


def file_sources(paths: Sequence[str | os.PathLike]) -> list[FileSource]:
    """Sources for audio files (each probed: exists, readable, supported, long enough)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise InputError("no input file given")
    return [FileSource(audio_io.probe(Path(p))) for p in paths]


@dataclass
class Prepared:
    """An input ready for optimization: the windows (`excerpts`, `(E, channels, window)`) the optimizer
    listens to and where they start (`offsets`, frames)."""

    source: Source
    offsets: list[int]
    excerpts: np.ndarray


def prepare(source: Source, count: int, window_s: float = CLAP_WINDOW_S, what: str | None = None) -> Prepared:
    """Check an input's samples (NaN/Inf, silence) and cut up to `count` windows of `window_s` seconds: the
    loudest ones that do not overlap (see `text2fx.excerpts.choose_offsets`)."""
    what = what or (str(source.path) if source.path is not None else "input")
    sr = source.sample_rate
    window = min(source.frames, int(math.ceil(window_s * sr)))
    block = sr  # one-second blocks: fine enough to find the loud parts
    energies, peak = [], 0.0
    for start in range(0, source.frames, block * 60):
        chunk = source.read(start, min(block * 60, source.frames - start))
        if not np.isfinite(chunk).all():
            raise InputError(f"{what}: audio contains NaN or Inf samples")
        peak = max(peak, float(np.abs(chunk).max(initial=0.0)))
        sq = np.square(chunk, dtype=np.float64).sum(0)
        energies.extend(sq[k : k + block].sum() for k in range(0, sq.size, block))
    if peak < _SILENCE:
        raise InputError(f"{what}: audio is silent; there is nothing for the effects to change")
    offsets = choose_offsets(source.frames, window, np.asarray(energies), block, count)
    excerpts = np.stack([source.read(o, window) for o in offsets]).astype(np.float32, copy=False)
    return Prepared(source, offsets, excerpts)
