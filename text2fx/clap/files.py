"""Where the CLAP checkpoint and the RoBERTa tokenizer files come from, and how a checkpoint is read.

Resolution order for each file: an explicit path (API argument / CLI flag), an environment variable, then
the Hugging Face cache (downloaded there once). A cached file is found without any network access, so after
the first successful run nothing touches the network. When a file is missing and cannot be downloaded, a
`ModelUnavailableError` says which file, where it was looked for, and how to provide it; the download is
attempted once with a short timeout (huggingface_hub's own retry loop can block for minutes offline).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from text2fx.errors import InputError, ModelUnavailableError

CLAP_REPO = "lukewys/laion_clap"
DEFAULT_CHECKPOINT = "630k-audioset-best.pt"
# The legacy id (not "FacebookAI/roberta-base") so a tokenizer that transformers/laion-clap already cached
# under models--roberta-base is found offline.
TOKENIZER_REPO = "roberta-base"
TOKENIZER_FILES = ("vocab.json", "merges.txt")
CHECKPOINT_ENV = "TEXT2FX_CLAP_CKPT"
TOKENIZER_ENV = "TEXT2FX_CLAP_TOKENIZER"
# Seconds to wait for the Hub to answer the one metadata request made before downloading.
_HUB_TIMEOUT_S = 5.0

# HTSAT variant by the width of its patch embedding (`audio_branch.patch_embed.proj.weight`), which is
# what sets every later shape (see laion_clap/clap_module/htsat.py: create_htsat_model).
_HTSAT_BY_EMBED_DIM = {96: "HTSAT-tiny", 128: "HTSAT-base", 256: "HTSAT-large"}


@dataclass(frozen=True)
class ModelFiles:
    """Resolved local paths: the checkpoint file and the folder holding `vocab.json` and `merges.txt`."""

    checkpoint: Path
    tokenizer_dir: Path


def resolve_model_files(
    checkpoint: str | Path | None = None,
    tokenizer: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
) -> ModelFiles:
    """Resolve (and download once if needed) both CLAP model files without loading the model."""
    return ModelFiles(
        checkpoint=resolve_checkpoint(checkpoint, cache_dir=cache_dir),
        tokenizer_dir=resolve_tokenizer(tokenizer, cache_dir=cache_dir),
    )


def resolve_checkpoint(checkpoint: str | Path | None = None, *, cache_dir: str | Path | None = None) -> Path:
    """Return a local CLAP checkpoint file.

    `checkpoint` may be a path to a file, or the bare name of a file in the `lukewys/laion_clap` Hugging Face
    repository (e.g. `music_audioset_epoch_15_esc_90.14.pt`), fetched into the cache. Without it,
    `$TEXT2FX_CLAP_CKPT` is used, then `630k-audioset-best.pt` from the cache (downloaded once).
    """
    how = f"pass a checkpoint path (checkpoint= / --clap-ckpt) or set {CHECKPOINT_ENV}"
    if checkpoint is None and os.environ.get(CHECKPOINT_ENV):
        path = Path(os.environ[CHECKPOINT_ENV]).expanduser()
        if not path.is_file():
            raise ModelUnavailableError(
                f"CLAP checkpoint not found: {CHECKPOINT_ENV}={path} is not a file; "
                f"point {CHECKPOINT_ENV} at a downloaded .pt file or pass --clap-ckpt"
            )
        return path
    name = DEFAULT_CHECKPOINT if checkpoint is None else str(checkpoint)
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if checkpoint is not None and (path.parent != Path(".") or not name.endswith(".pt")):
        raise ModelUnavailableError(f"CLAP checkpoint not found: {path} is not a file; {how}")
    return _hub_file(CLAP_REPO, name, what="CLAP checkpoint", how=how, cache_dir=cache_dir)


def resolve_tokenizer(tokenizer: str | Path | None = None, *, cache_dir: str | Path | None = None) -> Path:
    """Return a folder holding the RoBERTa tokenizer's `vocab.json` and `merges.txt`.

    Order: `tokenizer` (a folder), `$TEXT2FX_CLAP_TOKENIZER`, then the cached `roberta-base` files
    (downloaded once, just those two files).
    """
    how = f"pass a tokenizer folder (tokenizer= / --tokenizer) or set {TOKENIZER_ENV}"
    source = None
    if tokenizer is not None:
        source = str(tokenizer)
    elif os.environ.get(TOKENIZER_ENV):
        source = f"{TOKENIZER_ENV}={os.environ[TOKENIZER_ENV]}"
        tokenizer = os.environ[TOKENIZER_ENV]
    if tokenizer is not None:
        folder = Path(tokenizer).expanduser()
        missing = [f for f in TOKENIZER_FILES if not (folder / f).is_file()]
        if missing:
            raise ModelUnavailableError(
                f"CLAP tokenizer not found: {source} has no {' or '.join(missing)}; "
                f"{how} to a folder holding vocab.json and merges.txt"
            )
        return folder
    paths = [
        _hub_file(TOKENIZER_REPO, f, what="RoBERTa tokenizer file", how=how, cache_dir=cache_dir)
        for f in TOKENIZER_FILES
    ]
    return paths[0].parent


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder, read from the environment at call time (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline() -> bool:
    # Read at call time: huggingface_hub.constants.HF_HUB_OFFLINE is frozen when huggingface_hub is imported.
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_file(repo_id: str, filename: str, *, what: str, how: str, cache_dir: str | Path | None) -> Path:
    """Return `filename` from the cached `repo_id`, downloading it once (with a progress bar) if needed."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    where = f"the Hugging Face cache {cache} (repo {repo_id})"
    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if _offline():
        raise ModelUnavailableError(
            f"{what} {filename} not found in {where} and HF_HUB_OFFLINE is set, so it cannot be downloaded; {how}"
        )
    try:
        # One metadata request without retries: hf_hub_download alone would retry for up to a minute when
        # the network is unreachable.
        get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=_HUB_TIMEOUT_S)
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache, etag_timeout=_HUB_TIMEOUT_S))
    except Exception as exc:  # any network / HTTP / disk failure ends in the same user-facing message
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelUnavailableError(
            f"{what} {filename} not found in {where} and downloading it from huggingface.co failed "
            f"({reason}); {how}"
        ) from None


def load_clap_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a CLAP checkpoint into a plain `{name: tensor}` dict keyed like `clap_module.CLAP`'s parameters.

    Accepts the released formats: `{"state_dict": ..., "epoch": ..., ...}` or a bare state dict, with or
    without the DataParallel `module.` prefix and with or without `text_branch.embeddings.position_ids`.
    Uses `torch.load(weights_only=True)`, so a pickle that would run code is refused (`InputError`).
    """
    path = Path(path)
    try:
        # mmap: tensors are paged in from the file instead of copied, which keeps loading ~600 MB fast.
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(
            f"refusing to load CLAP checkpoint {path}: it is not a plain weights file ({first[:200]}); "
            "only checkpoints made of tensors are loaded, never ones that carry code"
        ) from None
    except Exception as exc:  # torch raises many types for truncated or foreign files; all mean "unreadable"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"cannot read CLAP checkpoint {path}: not a PyTorch checkpoint, or a truncated download "
            f"({type(exc).__name__}: {first[:160]})"
        ) from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state:
        raise InputError(f"cannot read CLAP checkpoint {path}: it holds no state dict")
    state = {
        (k[len("module."):] if k.startswith("module.") else k): v
        for k, v in state.items()
        if isinstance(v, torch.Tensor)
    }
    # Newer transformers keep RoBERTa's position_ids as a non-persistent buffer, so it is not a weight.
    state.pop("text_branch.embeddings.position_ids", None)
    return state


def detect_audio_arch(state: dict[str, torch.Tensor], *, source: str = "checkpoint") -> str:
    """Name of the HTSAT variant ("HTSAT-tiny", "HTSAT-base", "HTSAT-large") the weights in `state` belong to."""
    if any(k.startswith(("audio_branch.fusion_model.", "audio_branch.mel_conv")) for k in state):
        raise InputError(
            f"{source} is a feature-fusion CLAP checkpoint, which is not supported; "
            f"use a non-fusion one such as {DEFAULT_CHECKPOINT} or music_audioset_epoch_15_esc_90.14.pt"
        )
    weight = state.get("audio_branch.patch_embed.proj.weight")
    arch = _HTSAT_BY_EMBED_DIM.get(int(weight.shape[0])) if weight is not None else None
    if arch is None:
        raise InputError(f"{source} is not a LAION-CLAP HTSAT checkpoint (unrecognised audio branch weights)")
    return arch
