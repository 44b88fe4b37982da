"""The frozen LAION-CLAP embedder: audio and text into CLAP's joint 512-d space.

Runs laion-clap's own model code (`clap_module`: HTSAT audio branch, RoBERTa text branch, projection heads)
on weights from a released checkpoint. Two things are done differently from `laion_clap.CLAP_Module`, both
to stay off the network and fast: the package is imported without its import-time tokenizer downloads, and
the RoBERTa text branch is built from its fixed configuration instead of `from_pretrained('roberta-base')`.
The audio path (resampling, mono downmix, 10 s window, optional int16 quantization) is batched tensor code,
so gradients reach the input waveform.

Importing this module only imports torch; transformers and laion-clap are imported when an embedder is built.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
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
    ModelFiles,
    detect_audio_arch,
    load_clap_state_dict,
    load_tokenizer,
    resolve_model_files,
    resolve_tokenizer,
)
from text2fx.clap.resample import Resampler

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
    laion-clap's `create_model` does, randomly initialised as laion-clap does.

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


def _rebuild_unsaved_buffers(model: torch.nn.Module) -> None:
    # Non-persistent buffers are not in any checkpoint, so after a meta-device build + assign-load they are
    # still meta tensors. CLAP's causal mask (unused with RoBERTa) and RoBERTa's position and token-type ids
    # are the only ones; they are rebuilt as CLAP.__init__ and RobertaEmbeddings.__init__ build them.
    embeddings = model.text_branch.embeddings
    positions = torch.arange(embeddings.position_ids.shape[-1]).expand((1, -1))
    embeddings.position_ids = positions
    embeddings.token_type_ids = torch.zeros(positions.shape, dtype=torch.long)
    model.attn_mask = model.build_attention_mask()
    leftover = [n for n, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(f"CLAP tensors not restored from the checkpoint: {leftover[:5]}")


def load_clap_model(
    state: dict[str, torch.Tensor], audio_arch: str, device: torch.device, *, source: str = "checkpoint"
) -> torch.nn.Module:
    """Build the `audio_arch` CLAP model from a state dict (see `load_clap_state_dict`), frozen, on `device`."""
    model = create_clap_model(audio_arch, init_text_branch=False)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        # assign=True adopts the checkpoint tensors instead of copying into freshly initialised ones.
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        summary = " ".join(str(exc).split())[:400]
        raise InputError(f"{source} does not fit a {audio_arch} CLAP model: {summary}") from None
    _rebuild_unsaved_buffers(model)
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
    `text2fx.clap.files.load_tokenizer`) makes longer than `TEXT_MAX_TOKENS`.

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
    _check_token_counts(load_tokenizer(resolve_tokenizer(tokenizer)), texts)


class ClapEmbedder:
    """A frozen LAION-CLAP model, loaded once and reused (satisfies `text2fx.embedder.Embedder`).

    Args:
        checkpoint: CLAP checkpoint path, or a file name in the `lukewys/laion_clap` Hugging Face repository;
            default `$TEXT2FX_CLAP_CKPT`, then `630k-audioset-best.pt` (downloaded once into the HF cache).
        tokenizer: folder holding RoBERTa's `vocab.json` and `merges.txt`; default `$TEXT2FX_CLAP_TOKENIZER`,
            then the cached `roberta-base` tokenizer (downloaded once).
        device: `"cpu"`, `"cuda"`, `"mps"`, ...; default: the best available one.
        reference_frontend: run HTSAT's spectrogram and time stretch with laion-clap's own code, bit for bit,
            instead of the equivalent FFT and matrix forms (`text2fx.clap.frontend`), which are faster and
            more accurate in float32.
        precision: "float32" (default), or "bfloat16": the audio branch after its log-mel front end runs
            under bfloat16 autocast (matrix products and convolutions in bfloat16; on CUDA normalizations and
            softmax in float32, on a CPU autocast leaves those in bfloat16 too), which is faster on GPUs and
            on CPUs with bfloat16 instructions. The front end (spectrogram, log-mel) stays float32. Embeddings
            stay within a cosine similarity of 0.9999 of float32 ones, and an optimization reaches the float32
            run's loss to within 1e-3 and a tenth of what it gained (`tests/test_clap.py`, random weights):
            a few times what a 1e-4 change of its starting point does. Text embeddings are always float32.
            With "float32", an autocast region around `embed_audio` has no effect on it.

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

        self._tokenizer = load_tokenizer(self.files.tokenizer_dir)
        self._resampler = Resampler(self.sample_rate)
        self._text_cache: dict[str, torch.Tensor] = {}
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

        Each distinct string is encoded once per embedder and cached. Tokenization matches
        `CLAP_Module.get_text_embedding` (padded to 77 tokens), whatever the batch size. A text longer than
        77 tokens, which laion-clap would truncate, is refused (`InputError`; see `check_texts`).
        """
        texts = _text_list(texts, "embed_text")
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            self.check_texts(missing)
            tokens = self._tokenizer(
                missing, padding="max_length", truncation=True, max_length=TEXT_MAX_TOKENS, return_tensors="pt"
            )
            pooled = self.model.text_branch(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )["pooler_output"]
            embeddings = F.normalize(self.model.text_projection(pooled), dim=-1)
            self._text_cache.update(zip(missing, embeddings))
        if not texts:
            return torch.empty(0, self.embedding_dim, device=self.device)
        return torch.stack([self._text_cache[t] for t in texts])
