"""Applying a chain with fixed settings to whole inputs, in bounded memory, with the output level policy.

Level policy: the output is never clipped. After processing, if its peak exceeds -1 dBFS the whole output is
scaled down (one gain for the whole file) so that its peak is exactly -1 dBFS; otherwise it is left as is
(no gain is ever added). The gain applied is reported (`output_gain_db`, 0 or negative).

Inputs are processed in chunks of `chunk_seconds`, each preceded by enough earlier audio ("context") for the
effects' memory (reverb tail, filter ring, compressor envelope) and followed by the little later audio their
linear-phase filters look ahead to (`lookahead_seconds`), so the output is exact and an hour-long file needs no
more memory than a minute of it.

Tails: with `keep_length=False`, the output is longer than the input by the chain's tail (`fx.Chain.tail_samples`:
until a reverb has decayed by 60 dB), processed as the input followed by that much silence; its start stays
sample-aligned with the input. With `keep_length=True` the output has the input's length. `render_array` and
`render_file` take `keep_length` as a required keyword, so every caller states which it wants; the jobs
(`JobOptions.keep_length`), `text2fx.render` and the command's `--keep-length` default to False (tails kept).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from text2fx import audio_io
from text2fx.errors import OutputError
from text2fx.inputs import ArraySource, FileSource, Source

PEAK_CEILING_DB = -1.0
PEAK_CEILING = 10.0 ** (PEAK_CEILING_DB / 20.0)
DEFAULT_CHUNK_SECONDS = 60.0
# Memory assumed for an effect that does not state its own (`tail_seconds`).
_DEFAULT_TAIL_SECONDS = 2.0


def context_seconds(chain) -> float:
    """How much earlier audio the chain needs to process a chunk exactly: the sum of its effects' memories."""
    if chain is None:
        return 0.0
    total = 0.0
    for effect in chain:
        tail = getattr(effect, "tail_seconds", None)
        total += _DEFAULT_TAIL_SECONDS if tail is None else float(tail)
    return total


def tail_frames(chain, params: torch.Tensor, sample_rate: int, keep_length: bool = False) -> int:
    """Frames the output adds after the input: the chain's tail at `params` (`(P,)` unit space), 0 with
    `keep_length` or without a chain (a bypassed result)."""
    if chain is None or keep_length or not hasattr(chain, "tail_samples"):
        return 0
    return int(chain.tail_samples(sample_rate, params.detach().reshape(1, -1)))


def _read_padded(source: Source, start: int, frames: int) -> np.ndarray:
    # `frames` frames from `start` of the source followed by silence (the tail's input)
    have = max(0, min(frames, source.frames - start))
    block = source.read(start, have) if have else np.zeros((source.channels, 0), dtype=np.float32)
    if have == frames:
        return np.ascontiguousarray(block)
    return np.concatenate([block, np.zeros((block.shape[0], frames - have), dtype=block.dtype)], axis=1)


def process_chunks(
    chain,
    params: torch.Tensor,
    source: Source,
    write: Callable[[np.ndarray], None],
    device: torch.device | str = "cpu",
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    tail: int = 0,
) -> float:
    """Process `source` followed by `tail` frames of silence through `chain` at `params` (`(P,)` unit space),
    handing each output chunk `(channels, frames)` to `write` in order. Returns the output's peak absolute
    value. `chain` None passes the audio through untouched (a bypassed result)."""
    sr = source.sample_rate
    chunk = max(1, int(chunk_seconds * sr))
    context = int(math.ceil(context_seconds(chain) * sr))
    ahead = 0 if chain is None else int(math.ceil(float(getattr(chain, "lookahead_seconds", 0.0)) * sr))
    total = source.frames + max(0, int(tail))
    p = params.detach().reshape(1, -1).to(device=device, dtype=torch.float32)
    peak = 0.0
    with torch.no_grad():
        for start in range(0, total, chunk):
            n = min(chunk, total - start)
            pre = min(context, start)
            post = min(ahead, total - start - n)
            x = torch.from_numpy(_read_padded(source, start - pre, n + pre + post)).to(device)
            y = x[:, pre : pre + n] if chain is None else chain.process(x[None], sr, p)[0, :, pre : pre + n]
            y = y.cpu().numpy()
            if not np.isfinite(y).all():
                raise FloatingPointError("effect chain produced NaN or Inf")
            peak = max(peak, float(np.abs(y).max(initial=0.0)))
            write(y)
    return peak


def level_gain(peak: float) -> float:
    """The linear gain the level policy applies to an output whose peak is `peak`."""
    return 1.0 if peak <= PEAK_CEILING else PEAK_CEILING / peak


def gain_db(gain: float) -> float:
    return 20.0 * math.log10(gain)


def render_array(
    chain, params: torch.Tensor, audio: np.ndarray, sample_rate: int, device="cpu",
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS, *, keep_length: bool, level: bool = True,
) -> tuple[np.ndarray, float]:
    """Process `(channels, samples)` audio; returns (output `(channels, samples + tail)` float32, gain in dB),
    the tail being `tail_frames(...)` (0 with `keep_length`). `level` False: no level policy (`chain` None
    then gives the input's own samples, as amount 0 does)."""
    tail = tail_frames(chain, params, sample_rate, keep_length)
    out = np.empty((audio.shape[0], audio.shape[1] + tail), dtype=np.float32)
    pos = 0

    def write(block: np.ndarray) -> None:
        nonlocal pos
        out[:, pos : pos + block.shape[1]] = block
        pos += block.shape[1]

    peak = process_chunks(chain, params, ArraySource(audio, sample_rate), write, device, chunk_seconds, tail)
    gain = level_gain(peak) if level else 1.0
    if gain != 1.0:
        out *= np.float32(gain)
    return out, gain_db(gain)


def render_file(
    chain, params: torch.Tensor, info: audio_io.AudioInfo, out_path: Path, fmt: str, subtype: str,
    device="cpu", chunk_seconds: float = DEFAULT_CHUNK_SECONDS, *, keep_length: bool, level: bool = True,
) -> float:
    """Process the file `info` into `out_path` (atomically; a float scratch file holds the output until its
    peak is known), `tail_frames(...)` longer than the input unless `keep_length`. Returns the gain applied
    in dB. `level` False: no level policy (see `render_array`)."""
    tail = tail_frames(chain, params, info.sample_rate, keep_length)
    out_path = Path(out_path)
    scratch = None
    try:
        fd, scratch = tempfile.mkstemp(prefix=f".{out_path.stem}.", suffix=".scratch.wav", dir=out_path.parent)
        os.close(fd)
        with audio_io.BlockWriter(Path(scratch), info.sample_rate, info.channels, "RF64", "FLOAT") as w:
            peak = process_chunks(chain, params, FileSource(info), w.write, device, chunk_seconds, tail)
        gain = np.float32(level_gain(peak) if level else 1.0)
        block = max(1, int(chunk_seconds * info.sample_rate))
        with audio_io.atomic_path(out_path) as tmp, audio_io.BlockWriter(
            tmp, info.sample_rate, info.channels, fmt, subtype
        ) as w:
            for b in audio_io.iter_blocks(scratch, block):
                w.write(b * gain if gain != 1.0 else b)
    except (OSError, RuntimeError) as e:  # disk full, folder gone, codec refusing the data
        raise OutputError(f"cannot write {out_path}: {audio_io.os_error_text(e, out_path)}") from None
    finally:
        if scratch is not None:
            Path(scratch).unlink(missing_ok=True)
    return gain_db(float(gain))
