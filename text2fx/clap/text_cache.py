"""Text embeddings kept on disk per CLAP model, so a prompt, template or anchor is encoded once per machine.

Where: `$TEXT2FX_CACHE_DIR`, else `$XDG_CACHE_HOME/text2fx`, else `~/.cache/text2fx`; entries live under
`text-embeddings/`. Off: `TEXT2FX_TEXT_CACHE=0` (or `off`, `false`, `no`), or `ClapEmbedder(text_cache=False)`.

What an entry is keyed by - everything a text embedding depends on: the checkpoint's content (its SHA-256),
the tokenizer files' content, the device type (a GPU rounds differently from a CPU), the torch and tokenizers
versions, and this code's format version. Hashing a 600 MB checkpoint takes about a second, too slow for
every command, so its digest is memoised under `checkpoint-digests/`, keyed by the file's identity and state:
(real path, device, inode, size, modification and change times in ns). Writing a file in place changes its
change time (which no tool can set back), replacing it changes its inode, so a stale digest is never used;
the first command after a checkpoint changes hashes it once (a file changed in the last two seconds is
hashed every time until it has settled).

Safe against corruption and concurrent use: each entry is one small file written to a temporary name and
renamed into place (atomic on POSIX and Windows), carrying a magic number, the model key and the text's
digest it was stored under, its shape and dtype, and a SHA-256 of its values. A file that fails any check is
ignored (and replaced on the next store); a cache folder that cannot be written only costs the recomputation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

CACHE_DIR_ENV = "TEXT2FX_CACHE_DIR"
ENABLE_ENV = "TEXT2FX_TEXT_CACHE"
_OFF = {"0", "off", "false", "no"}
# Bump when anything that changes text embeddings changes in text2fx's text path (tokenizer, encoder code).
FORMAT_VERSION = 2
_MAGIC = b"T2FXTXT1"
# magic, model key (32 bytes), text digest (32), dtype code (u32: 1 = float32), length (u32), values' SHA-256 (32)
_HEADER = struct.Struct("<8s32s32sII32s")
_FLOAT32 = 1
# A file changed less than this long ago (ns) is hashed but its digest not memoised: it could change again
# within the same timestamp tick, unseen by its stat (git's "racy" files).
_RACY_NS = 2_000_000_000


def default_cache_dir() -> Path:
    """`$TEXT2FX_CACHE_DIR`, else `$XDG_CACHE_HOME/text2fx`, else `~/.cache/text2fx` (read at call time)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "text2fx"


def cache_enabled() -> bool:
    """False when `$TEXT2FX_TEXT_CACHE` is 0, off, false or no."""
    return os.environ.get(ENABLE_ENV, "").strip().lower() not in _OFF


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 23), b""):
            sha.update(block)
    return sha.hexdigest()


def file_digest(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """SHA-256 (hex) of the file at `path`, memoised in `cache_dir/checkpoint-digests` by the file's identity
    and state (see the module docstring), so an unchanged file is hashed once. `cache_dir=None` hashes
    without memoising."""
    real = Path(path).resolve()
    st = real.stat()
    identity = [str(real), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    memo = None
    if cache_dir is not None:
        name = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:40]
        memo = Path(cache_dir) / "checkpoint-digests" / f"{name}.json"
        try:
            record = json.loads(memo.read_text(encoding="utf-8"))
            digest = record.get("sha256")
            if record.get("identity") == identity and isinstance(digest, str) and len(digest) == 64:
                return digest
        except (OSError, ValueError, AttributeError):
            pass  # absent or unreadable: hash the file
    digest = _sha256_file(real)
    if memo is not None and time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _RACY_NS:
        with contextlib.suppress(OSError):
            _atomic_write(memo, json.dumps({"identity": identity, "sha256": digest}).encode())
    return digest


def model_key(checkpoint: str | Path, tokenizer_files: Iterable[str | Path], device_type: str,
              cache_dir: str | Path | None = None) -> bytes:
    """The 32-byte key of one model's text embeddings: what `TextEmbeddingCache` entries are filed under."""
    import tokenizers

    parts = {
        "format": FORMAT_VERSION,
        "checkpoint": file_digest(checkpoint, cache_dir),
        "tokenizer": [hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in tokenizer_files],
        "device": device_type,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).digest()


class TextEmbeddingCache:
    """Text embeddings of one model (`key`, from `model_key`) stored as files under `folder`.

    `get(texts)` returns `{text: (dim,) float32 CPU tensor}` for the texts found intact; `put({text:
    embedding})` stores them. Neither raises for file-system trouble: a miss is a recomputation.
    """

    def __init__(self, folder: str | Path, key: bytes, dim: int) -> None:
        if len(key) != 32:
            raise ValueError("the model key must be 32 bytes")
        self.key, self.dim = key, dim
        self.folder = Path(folder) / "text-embeddings" / key.hex()[:32]

    def _path(self, text_digest: bytes) -> Path:
        return self.folder / f"{text_digest.hex()[:40]}.emb"

    @staticmethod
    def _digest(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

    def get(self, texts: Iterable[str]) -> dict[str, torch.Tensor]:
        found = {}
        for text in dict.fromkeys(texts):
            embedding = self._read(text)
            if embedding is not None:
                found[text] = embedding
        return found

    def _read(self, text: str) -> torch.Tensor | None:
        digest = self._digest(text)
        try:
            data = self._path(digest).read_bytes()
        except OSError:
            return None
        if len(data) != _HEADER.size + 4 * self.dim:
            return None
        magic, key, text_digest, dtype, length, checksum = _HEADER.unpack_from(data)
        payload = data[_HEADER.size:]
        if (magic, key, text_digest, dtype, length) != (_MAGIC, self.key, digest, _FLOAT32, self.dim):
            return None
        if hashlib.sha256(payload).digest() != checksum:
            return None
        values = torch.from_numpy(np.frombuffer(payload, dtype="<f4").astype(np.float32))
        if not bool(torch.isfinite(values).all()):
            return None
        return values

    def put(self, embeddings: Mapping[str, torch.Tensor]) -> None:
        for text, embedding in embeddings.items():
            values = embedding.detach().to("cpu", torch.float32).contiguous().reshape(-1)
            if values.numel() != self.dim:
                raise ValueError(f"a text embedding has {values.numel()} values, this cache holds {self.dim}")
            # little-endian float32, whatever the machine
            payload = values.numpy().astype("<f4", copy=False).tobytes()
            digest = self._digest(text)
            header = _HEADER.pack(_MAGIC, self.key, digest, _FLOAT32, self.dim, hashlib.sha256(payload).digest())
            with contextlib.suppress(OSError):
                _atomic_write(self._path(digest), header + payload)
