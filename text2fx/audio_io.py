"""Reading and writing audio files: clear errors for bad files, block-wise access, atomic writes.

Audio arrays here are numpy `(channels, samples)` float32, the layout the rest of the engine uses
(soundfile's own layout is `(samples, channels)`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from text2fx.errors import InputError

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MIN_DURATION_S = 0.1


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds: rate (Hz), channels, frames, container format and sample subtype (soundfile names)."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _soundfile():
    import soundfile

    return soundfile


def probe(path: str | os.PathLike) -> AudioInfo:
    """Check that `path` is a readable audio file the engine supports and describe it.

    Raises:
        InputError: missing, unreadable, corrupt or unsupported file; empty or shorter than 0.1 s;
            sample rate outside 8-192 kHz.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input file not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a directory, not an audio file: {path}")
    if not os.access(path, os.R_OK):
        raise InputError(f"input file is not readable (permission denied): {path}")
    sf = _soundfile()
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile reports corrupt and unsupported files alike
        raise InputError(f"cannot read {path} as audio (corrupt or unsupported format): {_one_line(e)}") from None
    if info.frames <= 0:
        raise InputError(f"input file has no audio (zero length): {path}")
    check_sample_rate(info.samplerate, what=str(path))
    if info.frames < MIN_DURATION_S * info.samplerate:
        raise InputError(
            f"input is too short ({info.frames / info.samplerate:.3f} s); at least {MIN_DURATION_S} s is needed: {path}"
        )
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames), info.format, info.subtype)


def check_sample_rate(sample_rate: int, what: str = "audio") -> None:
    if not (MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE):
        raise InputError(
            f"{what}: sample rate {sample_rate} Hz is outside the supported {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )


def read(path: str | os.PathLike, start: int = 0, frames: int = -1) -> np.ndarray:
    """Read `frames` frames from `start` -> `(channels, frames)` float32."""
    sf = _soundfile()
    try:
        with sf.SoundFile(str(path)) as f:
            f.seek(start)
            data = f.read(frames, dtype="float32", always_2d=True)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"cannot read {path}: {_one_line(e)}") from None
    return np.ascontiguousarray(data.T)


def iter_blocks(path: str | os.PathLike, block_frames: int) -> Iterator[np.ndarray]:
    """Yield the file as consecutive `(channels, <=block_frames)` float32 blocks."""
    sf = _soundfile()
    try:
        with sf.SoundFile(str(path)) as f:
            while True:
                data = f.read(block_frames, dtype="float32", always_2d=True)
                if len(data) == 0:
                    return
                yield np.ascontiguousarray(data.T)
    except Exception as e:
        raise InputError(f"cannot read {path}: {_one_line(e)}") from None


_ALIASES = {"aif": "aiff", "oga": "ogg", "opus": "ogg"}


def container(path: Path) -> str | None:
    """The soundfile container format that `path`'s extension names (e.g. "WAV", "FLAC"), or None."""
    ext = Path(path).suffix.lower().lstrip(".")
    formats = {k.lower(): k for k in _soundfile().available_formats()}
    return formats.get(_ALIASES.get(ext, ext)) if ext else None


def output_format(path: Path, like: AudioInfo | None, subtype: str | None = None) -> tuple[str, str]:
    """Pick (format, subtype) for writing `path`: the input's when the container matches, else the
    container's default. An explicit `subtype` wins."""
    sf = _soundfile()
    fmt = container(path)
    if fmt is None:
        raise InputError(f"unsupported output file type '{Path(path).suffix}' for {path} "
                         f"(use e.g. .wav, .flac, .ogg, .aiff)")
    if subtype is None:
        # Keep the input's sample format whenever the new container can hold it (24-bit FLAC -> 24-bit WAV).
        if like is not None and sf.check_format(fmt, like.subtype):
            subtype = like.subtype
        elif Path(path).suffix.lower() == ".opus":
            subtype = "OPUS"
        else:
            subtype = sf.default_subtype(fmt)
    if subtype not in sf.available_subtypes():
        raise InputError(f"unknown sample format {subtype!r}; e.g. PCM_16, PCM_24, FLOAT")
    if not sf.check_format(fmt, subtype):
        raise InputError(f"cannot write subtype {subtype} in a {fmt} file: {path}")
    return fmt, subtype


def check_container(probe: Path, info: AudioInfo, fmt: str, subtype: str, shown: Path | None = None) -> None:
    """Open `probe` for writing as (`fmt`, `subtype`) with `info`'s rate and channels; InputError naming what
    the container refuses (libsndfile itself only says "Format not recognised")."""
    sf = _soundfile()
    try:
        sf.SoundFile(str(probe), "w", samplerate=info.sample_rate, channels=info.channels, format=fmt,
                     subtype=subtype).close()
    except OSError:
        raise
    except Exception as e:
        raise InputError(
            f"cannot write {shown or probe}: a {fmt} ({subtype}) file cannot hold {info.channels} channel(s) at "
            f"{info.sample_rate} Hz ({_one_line(e)}); choose another format, e.g. .wav or .flac"
        ) from None


def os_error_text(e: BaseException, path: Path | None = None) -> str:
    """One line for an error from writing a file, naming a full disk as such."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "no space left on the device"
    if path is not None and "System error" in str(e):
        # libsndfile reports a failed write(2) (a full disk, above all) as just "System error."
        try:
            if shutil.disk_usage(Path(path).parent).free < 16 * 2**20:
                return "no space left on the device"
        except OSError:
            pass
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower() + (f": {e.filename}" if e.filename else "")
    return _one_line(e)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename, on any error or
    Ctrl-C it is removed, so a reader never sees a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes owner-only files; give the result the permissions a plain open() would
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


class BlockWriter:
    """Write `(channels, frames)` blocks into an open soundfile."""

    def __init__(self, path: Path, sample_rate: int, channels: int, fmt: str, subtype: str):
        sf = _soundfile()
        self._file = sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=channels, format=fmt, subtype=subtype)

    def write(self, block: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(block.T))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "BlockWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, fmt: str, subtype: str) -> None:
    """Atomically write `audio` `(channels, samples)` to `path`."""
    path = Path(path)
    with atomic_path(path) as tmp, BlockWriter(tmp, sample_rate, audio.shape[0], fmt, subtype) as w:
        w.write(audio)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
