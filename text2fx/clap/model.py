"""The CLAP model (HTSAT audio branch, RoBERTa text branch, projection heads), built straight from a checkpoint.

`ClapModel` has laion-clap's `clap_module.CLAP` parameter names and the computation of its non-fusion
HTSAT + RoBERTa configuration, from `text2fx.clap.htsat` and `text2fx.clap.roberta`, which import nothing but
torch. `build_clap_model` constructs it on the meta device (no memory, no random initialisation) and adopts
the checkpoint's tensors (`load_state_dict(assign=True)`): with a memory-mapped checkpoint (see
`text2fx.clap.files.load_clap_state_dict`) no weight is copied or computed before the model first runs.

laion-clap's own model code (`text2fx.clap.embedder.clap_module`) stays what `text2fx.testing` makes random
checkpoints with and what the tests compare against; it is never imported on the way to running a model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn as nn

from text2fx.clap import layers

from text2fx.clap.htsat import HTSAT, HTSAT_VARIANTS
from text2fx.clap.roberta import RobertaModel

# laion-clap's model_configs/HTSAT-*.json: the audio settings every released HTSAT checkpoint shares.
JOINT_EMBED_DIM = 512
TEXT_WIDTH = 768


@dataclass(frozen=True)
class AudioConfig:
    """The audio front-end settings of laion-clap's `CLAPAudioCfp` for its HTSAT models."""

    model_name: str = "tiny"
    model_type: str = "HTSAT"
    sample_rate: int = 48000  # Hz
    clip_samples: int = 480000  # 10 s at 48 kHz
    audio_length: int = 1024
    window_size: int = 1024  # STFT size, samples
    hop_size: int = 480  # samples
    mel_bins: int = 64
    fmin: int = 50  # Hz
    fmax: int = 14000  # Hz
    class_num: int = 527


class MLPLayers(nn.Module):
    """laion-clap's `MLPLayers` at its CLAP size (Linear, ReLU, Dropout, Linear): weights the checkpoint holds
    (`audio_transform`, `text_transform`) though embedding never uses them."""

    def __init__(self, width: int = JOINT_EMBED_DIM, dropout: float = 0.1) -> None:
        super().__init__()
        self.sequential = nn.Sequential(layers.Linear(width, width), nn.ReLU(), nn.Dropout(dropout),
                                        layers.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequential(x)


def _projection(width: int) -> nn.Sequential:
    return nn.Sequential(layers.Linear(width, JOINT_EMBED_DIM), nn.ReLU(), layers.Linear(JOINT_EMBED_DIM, JOINT_EMBED_DIM))


class ClapModel(nn.Module):
    """A non-fusion HTSAT + RoBERTa CLAP, parameter for parameter laion-clap's `CLAP`.

    `audio_arch` is "HTSAT-tiny", "HTSAT-base" or "HTSAT-large". Attributes used by the embedder:
    `audio_cfg` (an `AudioConfig`), `audio_branch` (`text2fx.clap.htsat.HTSAT`), `audio_projection`,
    `text_branch` (`text2fx.clap.roberta.RobertaModel`), `text_projection`.
    """

    def __init__(self, audio_arch: str) -> None:
        super().__init__()
        name = audio_arch.removeprefix("HTSAT-")
        if not audio_arch.startswith("HTSAT-") or name not in HTSAT_VARIANTS:
            raise ValueError(f"unknown CLAP audio architecture {audio_arch!r}")
        self.audio_arch = audio_arch
        self.audio_cfg = AudioConfig(model_name=name)
        self.joint_embed_shape = JOINT_EMBED_DIM
        self.text_branch_type = "roberta"
        cfg = self.audio_cfg
        variant = HTSAT_VARIANTS[name]
        self.audio_branch = HTSAT(variant, sample_rate=cfg.sample_rate, window_size=cfg.window_size,
                                  hop_size=cfg.hop_size, mel_bins=cfg.mel_bins, fmin=cfg.fmin, fmax=cfg.fmax)
        self.text_branch = RobertaModel()
        self.text_transform = MLPLayers()
        self.text_projection = _projection(TEXT_WIDTH)
        self.audio_transform = MLPLayers()
        self.audio_projection = _projection(variant.num_features)
        self.logit_scale_a = nn.Parameter(torch.empty([]))
        self.logit_scale_t = nn.Parameter(torch.empty([]))


def build_clap_model(state: dict[str, torch.Tensor], audio_arch: str) -> ClapModel:
    """`ClapModel(audio_arch)` holding the tensors of `state` (keys as laion-clap's `CLAP.state_dict()`, without
    the `module.` prefix), themselves, not copies. Raises `RuntimeError` (torch's message) if `state` does
    not fit exactly: a missing, unexpected or wrongly shaped tensor."""
    with torch.device("meta"):
        model = ClapModel(audio_arch)
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if leftover:  # every tensor of ClapModel is saved in the checkpoint; a meta one means a new kind of model
        raise RuntimeError(f"CLAP tensors not restored from the checkpoint: {leftover[:5]}")
    return model
