"""The frozen LAION-CLAP embedder: audio and text into CLAP's joint 512-d space.

Runs laion-clap's model (HTSAT audio branch, RoBERTa text branch, projection heads) on weights from a
released checkpoint, in this package's own inference copy of its code (`text2fx.clap.model`), which imports
nothing but torch and is built around the checkpoint's memory-mapped tensors without random initialisation;
text is tokenized with the `tokenizers` library alone (`text2fx.clap.tokenizer`). laion-clap's own code
(`clap_module`, `create_clap_model`) is what random test checkpoints are made with and what the tests compare
against. The audio path (resampling, mono downmix, 10 s window, optional int16 quantization) is batched tensor
code, so gradients reach the input waveform.

Importing this module only imports torch; neither transformers nor laion-clap is imported to embed.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import warnings
from pathlib import Path
from types import ModuleType
from typing import Sequence
from unittest import mock

import torch
import torch.nn.functional as F

from text2fx.devices import resolve as resolve_device
from text2fx.errors import InputError
from text2fx.clap.frontend import install_fast_frontend
from text2fx.clap.files import (
    TOKENIZER_FILES,
    ModelFiles,
    detect_audio_arch,
    load_clap_state_dict,
    resolve_model_files,
    resolve_tokenizer,
)
from text2fx.clap.resample import Resampler
from text2fx.clap.text_cache import TextEmbeddingCache, cache_enabled, default_cache_dir, model_key
from text2fx.clap.tokenizer import ClapTokenizer

# laion-clap tokenizes with padding="max_length", truncation=True, max_length=77 (CLAP_Module.tokenizer).
TEXT_MAX_TOKENS = 77
EMBEDDING_DIM = 512
# int16 full scale used by laion-clap's float32_to_int16 / int16_to_float32.
_INT16_SCALE = 32767.0


# Numeric precision of the audio branch (see ClapEmbedder).
PRECISIONS = ("float32", "bfloat16")


def clap_module() -> ModuleType:
    """laion-clap's model code (`laion_clap/clap_module`: `model`, `htsat`, ...) as the package
    `text2fx.clap._laion`, with its `model_configs` folder as `config_dir`.

    Neither `laion_clap/__init__.py` nor `clap_module/__init__.py` runs. The first imports `hook.py`, whose
    `training/data.py` calls `from_pretrained` for three Hugging Face tokenizers at import time: offline that
    blocks for minutes in huggingface_hub's retry loop, online it downloads tokenizers this project never uses.
    The second imports the training loss (scikit-learn), the BPE tokenizer and the image transforms, none of
    which the model needs and which take longer to import than the model files do. The model files use
    relative imports alone, so they load under any package name; a package of our own keeps these copies apart
    from a real `import laion_clap`.
    """
    package = importlib.import_module("text2fx.clap._laion")
    importlib.import_module("text2fx.clap._laion.model")
    return package


def roberta_base_config():
    """The fixed `roberta-base` configuration of CLAP's text branch (a `transformers.RobertaConfig`)."""
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=50265,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        hidden_act="gelu",
    )


def create_clap_model(audio_arch: str, *, init_text_branch: bool = True) -> torch.nn.Module:
    """Build an untrained non-fusion `clap_module.CLAP` (HTSAT `audio_arch` + RoBERTa) on the CPU as
    laion-clap's `create_model` does, randomly initialised as laion-clap does, with laion-clap's own code
    (slow to import and build: `text2fx.testing` makes random checkpoints with it; embedders run
    `text2fx.clap.model` instead).

    With `init_text_branch=False` the RoBERTa text branch (125 M parameters, most of the model) is built
    directly on the meta device (nothing allocated or initialised) and the whole model is returned on the
    meta device, for weights that come from a checkpoint next.
    """
    clap = clap_module()
    from transformers import RobertaModel

    config = roberta_base_config()

    class OfflineRoberta:
        # CLAP.__init__ calls RobertaModel.from_pretrained('roberta-base'), which downloads ~500 MB of weights
        # that the CLAP checkpoint replaces anyway; the architecture is fully given by the fixed config.
        @staticmethod
        def from_pretrained(*_args, **_kwargs):
            with torch.device("cpu" if init_text_branch else "meta"):
                return RobertaModel(config)

    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(clap.model, "RobertaModel", OfflineRoberta))
        if not init_text_branch:
            # HTSAT's truncated-normal init is most of its build time, and every tensor it fills is
            # overwritten by the checkpoint.
            patches.enter_context(mock.patch.object(clap.htsat, "trunc_normal_", lambda tensor, *a, **k: tensor))
        # What laion-clap's `factory.create_model(audio_arch, "roberta")` does without a pretrained checkpoint.
        model_config = json.loads((clap.config_dir / f"{audio_arch}.json").read_text())
        model_config["text_cfg"]["model_type"] = "roberta"
        model_config.update(enable_fusion=False, fusion_type="None")
        try:
            model = clap.model.CLAP(**model_config)
        except RuntimeError as exc:
            # HTSAT's builder turns everything it catches (a bare `except:`), Ctrl-C and SIGTERM included, into
            # "Import Model ... not found": give an interrupt back as the interrupt it was.
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise exc.__context__ from None
            raise
    return model.to("cpu" if init_text_branch else "meta")


def load_clap_model(
    state: dict[str, torch.Tensor], audio_arch: str, device: torch.device, *, source: str = "checkpoint"
) -> torch.nn.Module:
    """Build the `audio_arch` CLAP model from a state dict (see `load_clap_state_dict`), frozen, on `device`.

    The model (`text2fx.clap.model.ClapModel`) is laion-clap's in parameters and computation, built on the
    meta device around the state dict's own tensors: nothing is randomly initialised or copied first.
    """
    from text2fx.clap.model import build_clap_model

    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model = build_clap_model(state, audio_arch)
    except RuntimeError as exc:
        summary = " ".join(str(exc).split())[:400]
        raise InputError(f"{source} does not fit a {audio_arch} CLAP model: {summary}") from None
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def _outside_autocast(parent: torch.nn.Module, names: Sequence[str], device_type: str) -> None:
    """Run the named submodules in float32 even inside an autocast region. HTSAT's spectrogram and log-mel
    front end must: in bfloat16 its decibel levels would be rounded to steps of up to 0.5 dB before `bn0`
    normalizes them (after it, bfloat16 rounds the normalized values, a far smaller error)."""
    for name in names:
        module = getattr(parent, name, None)
        if module is None:
            continue

        def float32_forward(x: torch.Tensor, _forward=module.forward) -> torch.Tensor:
            with torch.autocast(device_type, enabled=False):
                return _forward(x.float())

        module.forward = float32_forward


@contextlib.contextmanager
def _no_meshgrid_warning():
    # laion-clap's HTSAT calls torch.meshgrid without `indexing` when built and on every forward; users cannot
    # act on that warning, so it is not shown to them.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
        yield


def _text_list(texts: Sequence[str], what: str) -> list[str]:
    """`texts` as a list, or `InputError` unless it is a sequence of strings (a bare string is refused)."""
    try:
        items = None if isinstance(texts, str) else list(texts)
    except TypeError:
        items = None
    if items is None or not all(isinstance(t, str) for t in items):
        raise InputError(f"{what} takes a list of strings")
    return items


def _check_token_counts(tokenizer, texts: Sequence[str]) -> None:
    """Raise `InputError` naming the first of `texts` that `tokenizer` (CLAP's RoBERTa tokenizer, see
    `text2fx.clap.tokenizer.ClapTokenizer`) makes longer than `TEXT_MAX_TOKENS`.

    Counted with the call laion-clap's `CLAP_Module.tokenizer` makes (start and end tokens added), without
    its truncation and padding.
    """
    unique = list(dict.fromkeys(texts))
    if not unique:
        return
    counts = [len(ids) for ids in tokenizer(unique, truncation=False, padding=False)["input_ids"]]
    too_long = [(text, n) for text, n in zip(unique, counts) if n > TEXT_MAX_TOKENS]
    if too_long:
        text, n = too_long[0]
        shown = text[:40] + ("..." if len(text) > 40 else "")
        more = len(too_long) - 1
        others = f" ({more} more {'text is' if more == 1 else 'texts are'} too long too)" if more else ""
        raise InputError(
            f"text {shown!r} is {n} tokens long; CLAP reads at most {TEXT_MAX_TOKENS}: shorten the prompt{others}"
        )


def check_text_length(texts: Sequence[str], tokenizer: str | Path | None = None) -> None:
    """Raise `InputError` if any of `texts` is longer than the 77 tokens CLAP reads, loading only the tokenizer.

    For refusing a long prompt before the CLAP model is loaded; `ClapEmbedder.check_texts` makes the same check.
    `tokenizer` is found as `ClapEmbedder` finds it: a folder holding `vocab.json` and `merges.txt`, else
    `$TEXT2FX_CLAP_TOKENIZER`, else the cached `roberta-base` tokenizer (`ModelUnavailableError` if none is).
    """
    texts = _text_list(texts, "check_text_length")
    _check_token_counts(ClapTokenizer(resolve_tokenizer(tokenizer)), texts)


class ClapEmbedder:
    """A frozen LAION-CLAP model, loaded once and reused (satisfies `text2fx.embedder.Embedder`).

    Args:
        checkpoint: CLAP checkpoint path, or a file name in the `lukewys/laion_clap` Hugging Face repository;
            default `$TEXT2FX_CLAP_CKPT`, then `630k-audioset-best.pt` (downloaded once into the HF cache).
        tokenizer: folder holding RoBERTa's `vocab.json` and `merges.txt`; default `$TEXT2FX_CLAP_TOKENIZER`,
            then the cached `roberta-base` tokenizer (downloaded once).
        device: `"cpu"`, `"cuda"`, `"mps"`, ...; default: the best available one.
        reference_frontend: run HTSAT's spectrogram and time stretch as laion-clap computes them (torchlibrosa's
            convolution STFT, bicubic `F.interpolate`), bit for bit, instead of the equivalent FFT and matrix forms (`text2fx.clap.frontend`), which are faster and
            more accurate in float32.
        precision: "float32" (default), or "bfloat16": the audio branch after its log-mel front end runs
            under bfloat16 autocast (matrix products and convolutions in bfloat16; on CUDA normalizations and
            softmax in float32, on a CPU autocast leaves those in bfloat16 too), which is faster on GPUs and
            on CPUs with bfloat16 instructions. The front end (spectrogram, log-mel) stays float32. Embeddings
            stay within a cosine similarity of 0.9999 of float32 ones, and an optimization reaches the float32
            run's loss to within 1e-3 and a tenth of what it gained (`tests/test_clap.py`, random weights):
            a few times what a 1e-4 change of its starting point does. Text embeddings are always float32.
            With "float32", an autocast region around `embed_audio` has no effect on it.
        text_cache: where text embeddings are kept between runs (`text2fx.clap.text_cache`): None (default)
            uses `$TEXT2FX_CACHE_DIR`, else `$XDG_CACHE_HOME/text2fx` or `~/.cache/text2fx`, unless
            `$TEXT2FX_TEXT_CACHE=0`; True the same folder whatever that variable says; a folder uses that
            folder; False keeps them in memory only. Entries are
            keyed by the checkpoint's and tokenizer's content and the device type, so a cached embedding is
            the one this embedder would compute, bit for bit.

    Attributes:
        name: checkpoint file name. sample_rate: 48000 (Hz). window_samples: 480000 (10 s at 48 kHz).
        device: where the model runs. audio_arch: "HTSAT-tiny" or "HTSAT-base" (read from the weights).
        precision: "float32" or "bfloat16" (see Args).
        files: the resolved checkpoint and tokenizer paths.
        frontend: the front-end replacements in use (empty with `reference_frontend=True`).

    Raises:
        ModelUnavailableError: a model file is missing and cannot be downloaded.
        InputError: the checkpoint is unreadable, unsafe (pickled code) or not a supported CLAP checkpoint.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        tokenizer: str | Path | None = None,
        device: str | torch.device | None = None,
        *,
        reference_frontend: bool = False,
        precision: str = "float32",
        text_cache: bool | str | Path | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        self._precision = precision
        # an unavailable device is refused before minutes go into finding and loading the weights
        self.device = resolve_device(device)
        self.files: ModelFiles = resolve_model_files(checkpoint, tokenizer)
        source = f"CLAP checkpoint {self.files.checkpoint}"
        state = load_clap_state_dict(self.files.checkpoint)
        self.audio_arch = detect_audio_arch(state, source=source)
        self.name = self.files.checkpoint.name
        with _no_meshgrid_warning():
            self.model = load_clap_model(state, self.audio_arch, self.device, source=source)
        self.frontend: list[str] = [] if reference_frontend else install_fast_frontend(self.model.audio_branch)
        if precision == "bfloat16":
            _outside_autocast(self.model.audio_branch, ("spectrogram_extractor", "logmel_extractor"), self.device.type)
        self.sample_rate: int = self.model.audio_cfg.sample_rate
        self.window_samples: int = self.model.audio_cfg.clip_samples
        self.embedding_dim = EMBEDDING_DIM

        self._tokenizer = ClapTokenizer(self.files.tokenizer_dir)
        self._resampler = Resampler(self.sample_rate)
        self._text_cache: dict[str, torch.Tensor] = {}
        self._disk_cache_setting = text_cache
        self._disk_cache: TextEmbeddingCache | None | bool = False  # False: not looked up yet
        # embed_audio launches the same kernels for the same shapes and never waits for the device
        # (given no `offsets`), so the optimizer may record it in a CUDA graph.
        self.graph_safe = True
        # model_input averages the channels before anything else.
        self.mixes_to_mono = True

    @property
    def precision(self) -> str:
        """"float32" or "bfloat16"; fixed at construction (the float32 front end is set up for it there)."""
        return self._precision

    def __repr__(self) -> str:
        return (
            f"ClapEmbedder(name={self.name!r}, audio_arch={self.audio_arch!r}, device={str(self.device)!r}, "
            f"precision={self.precision!r})"
        )

    def model_input(
        self,
        audio: torch.Tensor,
        sample_rate: int,
        offsets: Sequence[int] | torch.Tensor | None = None,
        *,
        quantize: bool = False,
    ) -> torch.Tensor:
        """The exact waveform CLAP's audio branch sees: `(batch, channels, samples)` -> `(batch, window_samples)`.

        Mono downmix (channel mean), resampling from `sample_rate` Hz to 48 kHz, then laion-clap's 10 s window:
        audio shorter than the window is repeated `window // length` times and zero-padded ("repeatpad"), longer
        audio is cropped at `offsets` (one per item, in samples at `sample_rate`; default 0; ignored when the
        audio is not longer than the window). `quantize` rounds to int16 steps toward zero as laion-clap's data
        path does, with a straight-through gradient. Differentiable with respect to `audio`.
        """
        if not isinstance(audio, torch.Tensor) or audio.dim() != 3 or audio.shape[-1] == 0 or audio.numel() == 0:
            shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
            raise InputError(f"audio must be a non-empty (batch, channels, samples) tensor, got {shape}")
        if not audio.is_floating_point():
            raise InputError(f"audio must be a floating-point tensor, got {audio.dtype}")
        if int(sample_rate) != sample_rate or sample_rate <= 0:
            raise InputError(f"sample rate must be a positive integer (Hz), got {sample_rate}")
        x = audio.to(device=self.device, dtype=torch.float32).mean(dim=1)
        x = self._resampler(x, int(sample_rate))
        batch, length = x.shape
        window = self.window_samples
        if length > window and offsets is None:
            x = x[:, :window]
        elif length > window:
            x = x.gather(1, self._crop_index(offsets, batch, length, int(sample_rate)))
        elif length < window:
            x = F.pad(x.repeat(1, window // length), (0, window - (window // length) * length))
        if quantize:
            q = torch.trunc(x.clamp(-1.0, 1.0) * _INT16_SCALE) / _INT16_SCALE
            x = x + (q - x).detach()
        return x

    def _crop_index(
        self, offsets: Sequence[int] | torch.Tensor, batch: int, length: int, sample_rate: int
    ) -> torch.Tensor:
        """`(batch, window_samples)` gather indices of each item's crop in the 48 kHz signal of `length` samples."""
        start = torch.as_tensor(offsets).detach().to("cpu").reshape(-1)
        if start.is_floating_point() or start.numel() != batch:
            raise InputError(f"offsets must be {batch} integer sample positions, got {offsets!r}")
        start = start.long() * self.sample_rate // sample_rate
        last = length - self.window_samples
        if bool((start < 0).any()) or bool((start > last).any()):
            raise InputError(
                f"crop offsets must lie in [0, {last * sample_rate // self.sample_rate}] samples "
                f"for this audio, got {torch.as_tensor(offsets).tolist()}"
            )
        steps = torch.arange(self.window_samples)
        return (start[:, None] + steps[None, :]).to(self.device)

    def embed_audio(
        self,
        audio: torch.Tensor,
        sample_rate: int,
        offsets: Sequence[int] | torch.Tensor | None = None,
        *,
        quantize: bool = False,
    ) -> torch.Tensor:
        """Embed audio `(batch, channels, samples)` at `sample_rate` Hz -> `(batch, 512)`, L2-normalized.

        The window handling is `model_input`'s. The computation after it is `CLAP.get_audio_embedding`'s:
        audio branch, audio projection, L2 normalisation. Differentiable with respect to `audio`.
        """
        x = self.model_input(audio, sample_rate, offsets, quantize=quantize)
        # Made on the device: a host-to-device copy here would stop the step from being captured in a CUDA graph.
        longer = torch.full(
            (x.shape[0],), audio.shape[-1] * self.sample_rate > self.window_samples * sample_rate, device=self.device
        )
        # No autocast weight cache: a captured CUDA graph must not refer to casts made (and freed) before it.
        with _no_meshgrid_warning(), torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16", cache_enabled=False
        ):
            features = self.model.audio_branch(
                {"waveform": x, "longer": longer}, mixup_lambda=None, device=self.device
            )["embedding"]
            projected = self.model.audio_projection(features)
        return F.normalize(projected.float(), dim=-1)

    def check_texts(self, texts: Sequence[str]) -> None:
        """Raise `InputError` if any of `texts` is longer than the 77 tokens CLAP reads (counted with the
        start and end tokens), instead of letting `embed_text` cut it short silently."""
        _check_token_counts(self._tokenizer, _text_list(texts, "check_texts"))

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed strings -> `(len(texts), 512)`, L2-normalized, no gradient.

        Each distinct string is encoded once per embedder and cached, in memory and on disk (see `text_cache`).
        Tokenization matches `CLAP_Module.get_text_embedding` (padded to 77 tokens). Each text is encoded on
        its own, so its embedding is the same to the bit whatever texts it is asked with. A text longer than
        77 tokens, which laion-clap would truncate, is refused (`InputError`; see `check_texts`).
        """
        texts = _text_list(texts, "embed_text")
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        disk = self._text_disk_cache() if missing else None
        if disk is not None:
            # stored only after passing check_texts with this very tokenizer (part of the key)
            found = disk.get(missing)
            self._text_cache.update((t, e.to(self.device)) for t, e in found.items())
            missing = [t for t in missing if t not in found]
        if missing:
            self.check_texts(missing)
            tokens = self._tokenizer(
                missing, padding="max_length", truncation=True, max_length=TEXT_MAX_TOKENS, return_tensors="pt"
            )
            ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
            # One text at a time: in a batch, a text's embedding changes in its last bits with the texts
            # beside it (the matrix kernels block by batch size). Alone, it is the same in every run, so
            # what the disk cache returns is exactly what recomputing would give.
            embeddings = []
            for i in range(len(missing)):
                pooled = self.model.text_branch(input_ids=ids[i : i + 1], attention_mask=mask[i : i + 1])
                embeddings.append(F.normalize(self.model.text_projection(pooled["pooler_output"]), dim=-1)[0])
            self._text_cache.update(zip(missing, embeddings))
            if disk is not None:
                disk.put(dict(zip(missing, embeddings)))
        if not texts:
            return torch.empty(0, self.embedding_dim, device=self.device)
        return torch.stack([self._text_cache[t] for t in texts])

    def _text_disk_cache(self) -> TextEmbeddingCache | None:
        """The on-disk text embedding cache of this model, or None when it is off or cannot be used."""
        if self._disk_cache is False:
            setting, cache = self._disk_cache_setting, None
            if setting is not False and (setting is not None or cache_enabled()):
                folder = default_cache_dir() if setting in (None, True) else Path(setting)
                try:
                    files = [self.files.tokenizer_dir / name for name in TOKENIZER_FILES]
                    key = model_key(self.files.checkpoint, files, self.device.type, folder)
                    cache = TextEmbeddingCache(folder, key, self.embedding_dim)
                except OSError:
                    cache = None  # an unreadable file: embed without the cache
            self._disk_cache = cache
        return self._disk_cache
