"""HTSAT, CLAP's audio branch, as inference code that builds without computing anything the checkpoint holds.

The layers, parameter names and forward computation are laion-clap's (`laion_clap/clap_module/htsat.py`, after
Ke Chen's HTS-AT and Microsoft's Swin Transformer, MIT licence), for non-fusion models. What differs is what
happens at construction, so the model can be built on the meta device in milliseconds and then take its
tensors from a checkpoint (`text2fx.clap.model.build_clap_model`):

- the spectrogram and log-mel front end are small modules holding the same parameters as torchlibrosa's
  `Spectrogram` and `LogmelFilterBank` (the STFT's DFT kernels and the mel filterbank, both saved in every
  laion-clap checkpoint) and computing torchlibrosa's forward, but they do not compute those kernels (about
  4 s of NumPy on a small CPU, through librosa's import) only for the checkpoint to overwrite them;
- no random initialisation: every parameter and persistent buffer (Swin's relative position indices and
  shifted-window masks included) comes from the checkpoint;
- no timm, torchvision, librosa or torchlibrosa imports; SpecAugmentation and mixup (training only) are left out.

`tests/test_clap_equivalence.py` checks the result against laion-clap's own model, bit for bit on the
reference front end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from text2fx.clap import layers


@dataclass(frozen=True)
class HTSATConfig:
    """The architecture of one HTSAT variant (laion-clap's `create_htsat_model` settings)."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    spec_size: int = 256
    patch_size: int = 4
    patch_stride: tuple[int, int] = (4, 4)
    window_size: int = 8
    num_classes: int = 527

    @property
    def num_features(self) -> int:
        """Width of the audio embedding before CLAP's projection (`embed_dim * 2 ** (stages - 1)`)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)


HTSAT_VARIANTS = {
    "tiny": HTSATConfig(embed_dim=96, depths=(2, 2, 6, 2)),
    "base": HTSATConfig(embed_dim=128, depths=(2, 2, 12, 2)),
    "large": HTSATConfig(embed_dim=256, depths=(2, 2, 12, 2)),
}


class STFT(nn.Module):
    """torchlibrosa's `STFT`: the windowed DFT as two strided `Conv1d`s whose kernels come from the checkpoint."""

    def __init__(self, n_fft: int, hop_length: int, center: bool = True, pad_mode: str = "reflect") -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, n_fft
        self.window, self.center, self.pad_mode = "hann", center, pad_mode
        bins = n_fft // 2 + 1
        self.conv_real = layers.Conv1d(1, bins, kernel_size=n_fft, stride=hop_length, padding=0, bias=False)
        self.conv_imag = layers.Conv1d(1, bins, kernel_size=n_fft, stride=hop_length, padding=0, bias=False)
        self.requires_grad_(False)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # (batch, samples) -> real, imag: (batch, 1, frames, n_fft // 2 + 1)
        x = input[:, None, :]
        if self.center:
            x = F.pad(x, pad=(self.n_fft // 2, self.n_fft // 2), mode=self.pad_mode)
        real = self.conv_real(x)[:, None, :, :].transpose(2, 3)
        imag = self.conv_imag(x)[:, None, :, :].transpose(2, 3)
        return real, imag


class Spectrogram(nn.Module):
    """torchlibrosa's power `Spectrogram` (power 2): `(batch, samples)` -> `(batch, 1, frames, n_fft // 2 + 1)`."""

    def __init__(self, n_fft: int, hop_length: int) -> None:
        super().__init__()
        self.power = 2.0
        self.stft = STFT(n_fft, hop_length)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        real, imag = self.stft.forward(input)
        return real**2 + imag**2


class LogmelFilterBank(nn.Module):
    """torchlibrosa's `LogmelFilterBank` with ref 1, amin 1e-10 and no top_db, its `melW` from the checkpoint:
    power spectrogram `(..., n_fft // 2 + 1)` -> log-mel in dB `(..., mel_bins)`."""

    def __init__(self, n_fft: int, n_mels: int, ref: float = 1.0, amin: float = 1e-10) -> None:
        super().__init__()
        self.is_log, self.ref, self.amin, self.top_db = True, ref, amin, None
        self.melW = nn.Parameter(torch.empty(n_fft // 2 + 1, n_mels), requires_grad=False)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(input, self.melW)
        log_spec = 10.0 * torch.log10(torch.clamp(mel, min=self.amin, max=math.inf))
        log_spec -= 10.0 * math.log10(max(self.amin, self.ref))
        return log_spec


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (num_windows * B, window_size, window_size, C)."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)


def window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    """(num_windows * B, window_size, window_size, C) -> (B, H, W, C)."""
    B = int(windows.shape[0] / (H * W / window_size / window_size))
    x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


def _frame_repeat(x: torch.Tensor, ratio: int) -> torch.Tensor:
    # laion-clap's `utils.interpolate`: (batch, time, classes) -> (batch, time * ratio, classes)
    batch, steps, classes = x.shape
    return x[:, :, None, :].repeat(1, 1, ratio, 1).reshape(batch, steps * ratio, classes)


class PatchEmbed(nn.Module):
    """The spectrogram image cut into patches and projected: (B, 1, H, W) -> (B, H*W / stride^2, embed_dim)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, patch_stride: tuple[int, int]):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.patch_stride = patch_stride
        self.grid_size = (img_size // patch_stride[0], img_size // patch_stride[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        padding = ((patch_size - patch_stride[0]) // 2, (patch_size - patch_stride[1]) // 2)
        self.proj = layers.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=patch_stride, padding=padding)
        self.norm = layers.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        assert H == self.img_size[0] and W == self.img_size[1], \
            f"Input image size ({H}*{W}) doesn't match model ({self.img_size[0]}*{self.img_size[1]})."
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm(x)


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = layers.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = layers.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self attention within a window, with Swin's relative position bias."""

    def __init__(self, dim: int, window_size: tuple[int, int], num_heads: int) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.empty((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))
        # Swin's index of each (query, key) pair's relative offset: a persistent buffer, so the checkpoint
        # holds it (as the shifted windows' mask below); it is not computed here only to be overwritten.
        area = window_size[0] * window_size[1]
        self.register_buffer("relative_position_index", torch.empty(area, area, dtype=torch.long))
        self.qkv = layers.Linear(dim, dim * 3, bias=True)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = layers.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        area = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(area, area, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_drop(self.softmax(attn))
        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(x)), attn


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int, window_size: int,
                 shift_size: int) -> None:
        super().__init__()
        self.dim, self.input_resolution, self.num_heads = dim, input_resolution, num_heads
        self.window_size, self.shift_size, self.mlp_ratio = window_size, shift_size, 4.0
        if min(input_resolution) <= window_size:
            self.shift_size = 0
            self.window_size = min(input_resolution)
        self.norm1 = layers.LayerNorm(dim)
        self.attn = WindowAttention(dim, (self.window_size, self.window_size), num_heads)
        # DropPath (stochastic depth) is the identity outside training; this model never trains.
        self.drop_path = nn.Identity()
        self.norm2 = layers.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * self.mlp_ratio))
        # Shifted windows: the (0 / -100) mask that keeps them from attending across the image's wrapped
        # edges, one (area, area) matrix per window; a persistent buffer, so it comes from the checkpoint.
        mask = None
        if self.shift_size > 0:
            windows = (input_resolution[0] // self.window_size) * (input_resolution[1] // self.window_size)
            mask = torch.empty(windows, self.window_size**2, self.window_size**2)
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        H, W = self.input_resolution
        B, L, C = x.shape
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = window_partition(x, self.window_size).view(-1, self.window_size * self.window_size, C)
        attn_windows, attn = self.attn(windows, mask=self.attn_mask)
        attn_windows = attn_windows.view(-1, self.window_size, self.window_size, C)
        x = window_reverse(attn_windows, self.window_size, H, W)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x.view(B, H * W, C)
        x = shortcut + self.drop_path(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, attn


class PatchMerging(nn.Module):
    def __init__(self, input_resolution: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.input_resolution, self.dim = input_resolution, dim
        self.reduction = layers.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = layers.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.input_resolution
        B, L, C = x.shape
        x = x.view(B, H, W, C)
        x = torch.cat([x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]], -1)
        return self.reduction(self.norm(x.view(B, -1, 4 * C)))


class BasicLayer(nn.Module):
    """One Swin stage: `depth` blocks alternating plain and shifted windows, then optional patch merging."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], depth: int, num_heads: int, window_size: int,
                 downsample: bool) -> None:
        super().__init__()
        self.dim, self.input_resolution, self.depth = dim, input_resolution, depth
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size,
                                 shift_size=0 if i % 2 == 0 else window_size // 2)
            for i in range(depth)
        ])
        self.downsample = PatchMerging(input_resolution, dim) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attns = []
        for block in self.blocks:
            x, attn = block(x)
            if not self.training:
                attns.append(attn.unsqueeze(0))
        if self.downsample is not None:
            x = self.downsample(x)
        if not self.training:
            attn = torch.mean(torch.cat(attns, dim=0), dim=0)
        return x, attn


class HTSAT(nn.Module):
    """HTSAT's Swin transformer over a log-mel image, as laion-clap's `HTSAT_Swin_Transformer` (non-fusion).

    Input `{"waveform": (batch, samples) at `sample_rate` Hz, ...}`; output a dict whose `"embedding"` is
    `(batch, config.num_features)`, with laion-clap's other outputs beside it.
    """

    def __init__(self, config: HTSATConfig, *, sample_rate: int, window_size: int, hop_size: int, mel_bins: int,
                 fmin: int, fmax: int) -> None:
        super().__init__()
        self.config = config
        self.spec_size, self.patch_size, self.patch_stride = config.spec_size, config.patch_size, config.patch_stride
        self.window_size, self.embed_dim, self.depths = config.window_size, config.embed_dim, list(config.depths)
        self.num_heads, self.num_classes = list(config.num_heads), config.num_classes
        self.num_layers = len(config.depths)
        self.num_features = config.num_features
        self.freq_ratio = config.spec_size // mel_bins
        self.sample_rate, self.fmin, self.fmax = sample_rate, fmin, fmax
        self.enable_fusion, self.ape = False, False
        self.interpolate_ratio = 32
        self.spectrogram_extractor = Spectrogram(n_fft=window_size, hop_length=hop_size)
        self.logmel_extractor = LogmelFilterBank(n_fft=window_size, n_mels=mel_bins)
        self.bn0 = layers.BatchNorm2d(mel_bins)
        self.patch_embed = PatchEmbed(config.spec_size, config.patch_size, 1, config.embed_dim, config.patch_stride)
        resolution = self.patch_embed.grid_size
        self.patches_resolution = resolution
        self.pos_drop = nn.Dropout(p=0.0)
        self.layers = nn.ModuleList([
            BasicLayer(dim=config.embed_dim * 2**i, input_resolution=(resolution[0] // 2**i, resolution[1] // 2**i),
                       depth=config.depths[i], num_heads=config.num_heads[i], window_size=config.window_size,
                       downsample=i < self.num_layers - 1)
            for i in range(self.num_layers)
        ])
        self.norm = layers.LayerNorm(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.maxpool = nn.AdaptiveMaxPool1d(1)
        SF = config.spec_size // 2 ** (self.num_layers - 1) // config.patch_stride[0] // self.freq_ratio
        self.tscam_conv = layers.Conv2d(self.num_features, config.num_classes, kernel_size=(SF, 3), padding=(0, 1))
        self.head = layers.Linear(config.num_classes, config.num_classes)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        frames_num = x.shape[2]
        x = self.pos_drop(self.patch_embed(x))
        for layer in self.layers:
            x, _ = layer(x)
        x = self.norm(x)
        B, N, C = x.shape
        SF = frames_num // 2 ** (self.num_layers - 1) // self.patch_stride[0]
        ST = frames_num // 2 ** (self.num_layers - 1) // self.patch_stride[1]
        x = x.permute(0, 2, 1).contiguous().reshape(B, C, SF, ST)
        B, C, Fr, T = x.shape
        c_freq_bin = Fr // self.freq_ratio
        x = x.reshape(B, C, Fr // c_freq_bin, c_freq_bin, T)
        x = x.permute(0, 1, 3, 2, 4).contiguous().reshape(B, C, c_freq_bin, -1)
        fine_grained = _frame_repeat(torch.mean(x, dim=2).permute(0, 2, 1).contiguous(), 8 * self.patch_stride[1])
        latent = torch.flatten(self.avgpool(torch.flatten(x, 2)), 1)
        x = torch.flatten(self.tscam_conv(x), 2)
        framewise = _frame_repeat(torch.sigmoid(x).permute(0, 2, 1).contiguous(), 8 * self.patch_stride[1])
        x = torch.flatten(self.avgpool(x), 1)
        return {
            "framewise_output": framewise,
            "clipwise_output": torch.sigmoid(x),
            "fine_grained_embedding": fine_grained,
            "embedding": latent,
        }

    def reshape_wav2img(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 1, frames, mel_bins) -> the (batch, 1, spec_size, spec_size) image, as laion-clap's."""
        B, C, T, Fq = x.shape
        target_T = int(self.spec_size * self.freq_ratio)
        target_F = self.spec_size // self.freq_ratio
        assert T <= target_T and Fq <= target_F, "the wav size should less than or equal to the swin input size"
        if T < target_T:
            x = nn.functional.interpolate(x, (target_T, x.shape[3]), mode="bicubic", align_corners=True)
        if Fq < target_F:
            x = nn.functional.interpolate(x, (x.shape[2], target_F), mode="bicubic", align_corners=True)
        x = x.permute(0, 1, 3, 2).contiguous()
        x = x.reshape(x.shape[0], x.shape[1], x.shape[2], self.freq_ratio, x.shape[3] // self.freq_ratio)
        x = x.permute(0, 1, 3, 2, 4).contiguous()
        return x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3], x.shape[4])

    def forward(self, x: dict[str, torch.Tensor], mixup_lambda=None, infer_mode: bool = False,
                device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        x = x["waveform"].to(device=device, non_blocking=True)
        x = self.spectrogram_extractor(x)  # (batch, 1, frames, freq_bins)
        x = self.logmel_extractor(x)  # (batch, 1, frames, mel_bins)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        return self.forward_features(self.reshape_wav2img(x))
