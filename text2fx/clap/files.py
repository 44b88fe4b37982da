"""Where the CLAP checkpoint and the RoBERTa tokenizer files come from, and how a checkpoint is read.

Resolution order for each file: an explicit path (API argument / CLI flag), an environment variable, then
the Hugging Face cache (downloaded there once). A cached file is found without any network access, so after
the first successful run nothing touches the network. When files are missing and cannot be downloaded, one
`ModelUnavailableError` names each of them, where it was looked for, and how to provide it; the download is
attempted once with a short timeout (huggingface_hub's own retry loop can block for minutes offline).
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import warnings
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
    """Resolve (and download once if needed) both CLAP model files without loading the model.

    Both are looked for before anything is reported, so when files are missing one `ModelUnavailableError`
    (one line) names each of them and how to provide it.
    """
    found: dict[str, Path] = {}
    missing: list[str] = []
    for field, resolve, given in (
        ("checkpoint", resolve_checkpoint, checkpoint),
        ("tokenizer_dir", resolve_tokenizer, tokenizer),
    ):
        try:
            found[field] = resolve(given, cache_dir=cache_dir)
        except ModelUnavailableError as exc:
            missing.append(str(exc))
    if len(missing) == 1:
        raise ModelUnavailableError(missing[0])
    if missing:
        raise ModelUnavailableError(
            f"{len(missing)} CLAP model files are missing: "
            + " ".join(f"({i}) {message}." for i, message in enumerate(missing, 1))
        )
    return ModelFiles(**found)


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


def load_tokenizer(folder: str | Path):
    """RoBERTa's tokenizer (a `transformers.RobertaTokenizer`) from the `vocab.json` and `merges.txt` in `folder`
    (see `resolve_tokenizer`): the tokenizer laion-clap's `CLAP_Module` uses, without a Hugging Face look-up.

    For laion-clap's reference model (`text2fx.testing.laion_reference_module`); embedders use
    `text2fx.clap.tokenizer.ClapTokenizer`, the same tokenizer without importing transformers."""
    from transformers import RobertaTokenizer

    folder = Path(folder)
    return RobertaTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))


def load_clap_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a CLAP checkpoint into a plain `{name: tensor}` dict keyed like `clap_module.CLAP`'s parameters.

    Accepts the released formats: `{"state_dict": ..., "epoch": ..., ...}` or a bare state dict, with or
    without the DataParallel `module.` prefix and with or without `text_branch.embeddings.position_ids`,
    written by `torch.save` in its zip or its legacy (`_use_new_zipfile_serialization=False`) format.
    Uses `torch.load(weights_only=True)`, so a pickle that references code is refused (`InputError`), as is
    a plain `pickle.dump` file, which `torch.load` cannot read. Warnings torch issues while reading (e.g. about
    the pickle protocol) are not shown: the result is checked here, and the user could not act on them.
    """
    path = Path(path)
    is_zip = zipfile.is_zipfile(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # mmap: tensors are paged in from the file instead of copied, which keeps loading ~600 MB fast.
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise _load_failure(path, exc) from None
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


# torch.serialization.MAGIC_NUMBER: the first pickle of a legacy-format torch.save file.
_TORCH_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
# Globals a weights file made of tensors references (torch's tensor and storage rebuilding, its containers).
_TENSOR_GLOBAL_PREFIXES = ("torch._utils._rebuild_", "torch._tensor._rebuild_")
# How `pickle.dump` stores a tensor's storage: as a nested torch.save file that it loads without torch's safety.
_PICKLED_STORAGE = "torch.storage._load_from_bytes"
_TENSOR_GLOBALS = {
    "collections.OrderedDict", "_codecs.encode", "builtins.set", "__builtin__.set", "torch.Size", "torch.device",
    "torch.Tensor", "torch.nn.parameter.Parameter",
}


def _is_tensor_global(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    return (
        name in _TENSOR_GLOBALS
        or name.startswith(_TENSOR_GLOBAL_PREFIXES)
        or (module == "torch" and (attr.endswith("Storage") or isinstance(getattr(torch, attr, None), torch.dtype)))
    )


def _load_failure(path: Path, exc: Exception) -> InputError:
    """The one-line error for a checkpoint `torch.load(weights_only=True)` failed on with `exc`.

    torch's own message is not passed on when it is about the safe unpickler: it blames the file's contents
    for any parse failure (random bytes included) and suggests `weights_only=False`, which would run whatever
    code the file carries. Instead the file's pickles are read here (never executed) to tell a pickle that
    references code from a file that is not a checkpoint at all.
    """
    report = _pickle_contents(path)
    if report is not None:
        kind, names, protocol = report
        if kind == "plain":  # refused below anyway, with the reason that matters
            names = [n for n in names if n != _PICKLED_STORAGE]
        foreign = list(dict.fromkeys(n for n in names if not _is_tensor_global(n)))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            return InputError(
                f"refusing to load CLAP checkpoint {path}: it carries code, not only weights (its pickle "
                f"references {shown}); only checkpoints made of tensors are loaded, never ones that carry code"
            )
        if kind == "plain":
            return InputError(
                f"cannot read CLAP checkpoint {path}: it is a plain Python pickle, not a torch.save file; "
                "save the state dict with torch.save instead"
            )
        if isinstance(exc, pickle.UnpicklingError) and protocol > 2:
            # A well-formed torch.save file of tensors that the safe unpickler refused: written with
            # pickle_protocol > 2, whose opcodes (FRAME, ...) it does not read.
            fmt = "legacy-format " if kind == "legacy" else ""
            return InputError(
                f"cannot read CLAP checkpoint {path} safely: it is a {fmt}torch.save file written with pickle "
                f"protocol {protocol}, which torch's safe loader does not read; re-save it with torch.save's "
                "default settings"
            )
    # The first sentence of torch's message (e.g. "PytorchStreamReader failed reading zip archive: failed
    # finding central directory"), unless it is the safe unpickler's, which is misleading here (see above).
    detail = str(exc).strip().splitlines()[0].split(". ")[0].strip() if str(exc).strip() else ""
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in detail:
        detail = ""
    return InputError(
        f"cannot read CLAP checkpoint {path}: not a PyTorch checkpoint (a corrupt or truncated download, or "
        f"another kind of file)" + (f" ({type(exc).__name__}: {detail[:120]})" if detail else "")
    )


def _pickle_contents(path: Path) -> tuple[str, list[str], int] | None:
    """`(kind, globals, protocol)` for the pickled objects in a checkpoint file, without unpickling anything.

    kind: "zip" (torch.save's default format), "legacy" (torch.save's legacy format), "plain" (`pickle.dump`).
    globals: every `module.name` the pickles would import. protocol: the highest pickle protocol among them.
    None if the file is no well-formed pickle at all.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                if not data:
                    return None
                names, _, protocol = _read_pickle(io.BytesIO(archive.read(data[0])))
                return "zip", names, protocol
        with open(path, "rb") as f:
            names, first_int, protocol = _read_pickle(f)
            if first_int != _TORCH_MAGIC_NUMBER:
                return "plain", names, protocol
            for _ in range(3):  # the legacy format's protocol version, system info, then the object itself
                more, _, more_protocol = _read_pickle(f)
                names, protocol = names + more, max(protocol, more_protocol)
            return "legacy", names, protocol
    except Exception:  # any parse failure: not a (complete) pickle
        return None


def _read_pickle(stream) -> tuple[list[str], int | None, int]:
    """Walk the pickle at `stream`'s position opcode by opcode (`pickletools.genops`), unpickling nothing, and
    return the globals it references, the first integer it holds and its protocol.

    The stack and memo are simulated as `pickletools.dis` does (without its text output, which would copy every
    tensor's bytes), so random bytes fail here: raises `ValueError` on a malformed or truncated pickle. The
    stream is left just past the pickle.
    """
    mark = pickletools.markobject
    names: list[str] = []
    stack: list[object] = []  # `mark` for a MARK, a string pushed (for STACK_GLOBAL), else None
    memo: dict[int, object] = {}
    first_int = None
    protocol = 0
    for opcode, arg, _ in pickletools.genops(stream):
        before, after = opcode.stack_before, opcode.stack_after
        if opcode.name == "STACK_GLOBAL" and len(stack) >= 2:
            module, name = stack[-2:]
            names.append(f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) else "?")
        elif opcode.name in ("GLOBAL", "INST"):
            names.append(str(arg).replace(" ", "."))
        elif opcode.name == "PROTO":
            protocol = int(arg)
        elif opcode.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            if not stack or stack[-1] is mark:
                raise ValueError(f"{opcode.name} with nothing to store")
            memo[len(memo) if opcode.name == "MEMOIZE" else int(arg)] = stack[-1]
            continue  # the stored item stays on the stack
        elif opcode.name in ("GET", "BINGET", "LONG_BINGET") and int(arg) not in memo:
            raise ValueError(f"{opcode.name} of an unset memo entry {arg}")
        elif first_int is None and opcode.name in ("INT", "LONG", "LONG1", "LONG4") and isinstance(arg, int):
            first_int = arg
        if mark in before or (opcode.name == "POP" and stack and stack[-1] is mark):
            if mark not in stack:
                raise ValueError(f"{opcode.name} without a MARK")
            while stack.pop() is not mark:
                pass
            to_pop = before.index(mark) if mark in before else 0
        else:
            to_pop = len(before)
        if to_pop > len(stack):
            raise ValueError(f"{opcode.name} pops {to_pop} items from a stack of {len(stack)}")
        del stack[len(stack) - to_pop:]
        if opcode.name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[int(arg)])
        elif after == [mark]:
            stack.append(mark)
        else:
            stack.extend([arg if isinstance(arg, str) else None] * len(after))
    if stack:
        raise ValueError("stack not empty after STOP")
    return names, first_int, protocol


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
