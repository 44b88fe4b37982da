"""An audio-feature embedder: hand-made acoustic descriptors with a meaningful geometry and no training.

`FeatureEmbedder` implements `text2fx.embedder.Embedder` for audio only. Where CLAP answers "does this sound
like the words", it answers "does this sound like that recording" in terms an engineer would measure: tonal
balance, brightness, how fast energy dies away (room), how peaky the waveform is (dynamics). It serves
reference matching (`--embedder features --like REF.wav`: the target is the reference's embedding) and the
known-answer benchmark (`benchmarks/quality.py known`), where a model whose distances mean something is
needed and the real CLAP weights are not at hand. Statistics of log-mel band energies, spectral tilt and
decay features like these are the usual non-learned baselines of the audio style-transfer / effect-matching
literature.

It has no text side: `embed_text` raises a one-line `UsageError` (give a reference recording instead).

The embedding of a mono mix `x` (the mean of the channels), cropped to at most `window_seconds`,
is built from a power spectrogram (Hann window of ~43 ms, hop ~10.7 ms at every rate) and 32 mel bands
(HTK mel scale, 40 Hz-16 kHz; bands above Nyquist are empty). Feature groups, each a dimensionless number
of order 1 (the scales below are fixed constants, not fitted):

| features | count | unit before scaling | scale |
|---|---|---|---|
| spectral envelope: time-mean energy per mel band, minus its mean over bands | 32 | dB | / 10 dB |
| spectral centroid of the time-mean spectrum (40 Hz-16 kHz), log2(centroid / 1 kHz) | 1 | octaves | 1 |
| spectral tilt: least-squares slope of the envelope against log2(band centre), below Nyquist | 1 | dB/oct | / 6 |
| spectral flatness of the time-mean spectrum (geometric / arithmetic mean), + 30 dB | 1 | dB | / 10 |
| decay: 2.5 - log10(fall rate of the band level, lags ~32 ms and ~128 ms), per octave group | 16 | log10(dB/s) | 1 |
| modulation: standard deviation over time of the band level, per octave group | 8 | dB | / 10 |
| crest factor: 20 log10(8-norm / 2-norm) of the waveform (a smooth peak-to-RMS), - 12 dB | 1 | dB | / 6 |
| level range: standard deviation over frames of the broadband frame level | 1 | dB | / 10 |
| anchor: the constant `ANCHOR` | 1 | - | - |

Octave groups are 8 groups of 4 adjacent mel bands. Band levels for the decay and modulation features are
floored 50 dB below the band's own time-mean energy, so digital silence does not dominate them. With the
falls `d(t) = max(0, L(t) - L(t + lag))` of the band level `L` (dB), the fall rate is `sum d^2 / sum d` (the
fall-weighted mean fall) divided by the lag, in dB/s: dry audio's steep falls dominate it, and a reverb caps
how fast energy can fall (60 dB per RT60), so the decay features grow with the decay time (by about 0.2-0.3
per doubling of RT60 from 0.3 s up; a proxy, not an RT60 meter: level jitter makes it read slower falls than
the decay's own rate, and the floor caps falls faster than 50 dB per lag).

Everything is level-invariant (a gain changes no feature): a reference is matched in tonal balance, room and
dynamics, not in loudness, which `text2fx`'s level policy handles. The vector is L2-normalized; the constant
anchor component keeps the origin away from typical audio, so the cosine distance between two embeddings
grows with the (scaled) Euclidean distance between their features, `1 - cos ~ |f_a - f_b|^2 / (2 (|f|^2 +
ANCHOR^2))` for nearby vectors, instead of ignoring changes along a feature vector.

Deterministic, differentiable in the audio (the optimizer runs through it), on the audio's device. Compare
audio at the same sample rate family: below 32 kHz the top mel bands are empty.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from text2fx.errors import UsageError
from text2fx.options import NO_TEXT_MESSAGE

N_MELS = 32
F_MIN_HZ = 40.0
F_MAX_HZ = 16000.0
# Octave-ish groups of mel bands for the temporal features.
GROUP_SIZE = 4
# Frame length and hop in seconds (2048 / 512 samples at 48 kHz); the FFT size is the power of two nearest.
FRAME_S = 2048 / 48000
# Lags (in hops) at which the level's fall rate is measured: ~32 ms (early decay) and ~128 ms (late decay).
DECAY_LAGS = (3, 12)
# Band levels for the temporal features are floored this far (dB) below the band's time-mean energy.
FLOOR_DB = 50.0
# The constant last component (see the module docstring).
ANCHOR = 2.0
FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"envelope_{k}" for k in range(N_MELS))
    + ("centroid", "tilt", "flatness")
    + tuple(f"decay_{lag}_{g}" for lag in DECAY_LAGS for g in range(N_MELS // GROUP_SIZE))
    + tuple(f"modulation_{g}" for g in range(N_MELS // GROUP_SIZE))
    + ("crest", "level_range", "anchor")
)


def _hz_to_mel(f: float) -> float:
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_filterbank(n_fft: int, sample_rate: float, n_mels: int = N_MELS, f_min: float = F_MIN_HZ,
                   f_max: float = F_MAX_HZ) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangular mel filters (HTK mel scale, peak 1) on the `rfft` grid of `n_fft`.

    Returns:
        `(n_mels, n_fft // 2 + 1)` float64 weights and `(n_mels,)` band centres in Hz. Bands whose range lies
        above Nyquist have all-zero weights.
    """
    freqs = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate, dtype=torch.float64)
    mel_edges = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    hz_edges = 700.0 * (10.0 ** (mel_edges / 2595.0) - 1.0)
    lo, centre, hi = hz_edges[:-2, None], hz_edges[1:-1, None], hz_edges[2:, None]
    rising = (freqs[None] - lo) / (centre - lo)
    falling = (hi - freqs[None]) / (hi - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0), hz_edges[1:-1]


class FeatureEmbedder:
    """Acoustic-feature embeddings (see the module docstring); satisfies `text2fx.embedder.Embedder` for audio.

    Args:
        window_seconds: how much audio one embedding describes at most (`window_samples` at `sample_rate`);
            longer inputs are cropped at `offsets`, as CLAP does; shorter ones are described as they are (not
            repeat-padded as CLAP pads them: the features are averages over time). Default 10 s, CLAP's
            window, so inputs are cut into the same excerpts whichever embedder runs.
        device: where the features are computed; inputs are moved there.

    Attributes:
        name: "audio-features/1" (recorded in reports in place of a checkpoint name).
        sample_rate: 48000, nominal: features are defined in Hz and seconds and computed at the audio's own
            rate, so no resampling happens.
        window_samples: `window_seconds` at `sample_rate`.
        dim: the embedding size, `len(FEATURE_NAMES)` (62).
    """

    name = "audio-features/1"
    mixes_to_mono = True  # embed_audio hears the mean of the channels
    # The same kernels for the same shapes, nothing read back to the host or copied from it (constants are
    # made on the first call, before a capture). Not yet run under a CUDA graph on a GPU: if a capture fails,
    # the optimizer warns and runs plain steps.
    graph_safe = True
    precision = "float32"
    has_text = False

    def __init__(self, window_seconds: float = 10.0, device: str | torch.device = "cpu"):
        if not (isinstance(window_seconds, (int, float)) and math.isfinite(window_seconds) and window_seconds > 0):
            raise UsageError(f"window_seconds must be a positive number of seconds, got {window_seconds!r}")
        self.sample_rate = 48000
        self.window_samples = int(round(window_seconds * self.sample_rate))
        self.device = torch.device(device)
        self.dim = len(FEATURE_NAMES)
        # (sample_rate, device, dtype) -> constants derived from the rate; a few entries, per instance
        self._constants: dict[tuple, tuple] = {}

    def __repr__(self) -> str:
        seconds = self.window_samples / self.sample_rate
        return f"FeatureEmbedder(window_seconds={seconds:g}, device={str(self.device)!r})"

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Refused: this embedder describes audio only."""
        raise UsageError(NO_TEXT_MESSAGE)

    def check_texts(self, texts: Sequence[str]) -> None:
        """Refused as `embed_text` is, so a prompt is turned down before any work."""
        raise UsageError(NO_TEXT_MESSAGE)

    def _window(self, audio: torch.Tensor, sample_rate: int, offsets) -> torch.Tensor:
        """`(batch, samples)` mono mix, cropped at `offsets` to the window at `sample_rate` when longer."""
        x = audio.mean(1)
        window = int(round(self.window_samples * sample_rate / self.sample_rate))
        if x.shape[-1] > window:
            if offsets is None:  # a slice: no host-to-device copy, so a CUDA graph can record it
                return x[..., :window]
            offsets = torch.as_tensor(offsets, device=x.device).long()
            return x.gather(-1, offsets[:, None] + torch.arange(window, device=x.device))
        # The features are averages over time: shorter audio needs no padding (CLAP's repeat-padding would only
        # add work and the junctions' transients).
        return x

    def _rate_constants(self, sample_rate: int, device: torch.device, dtype: torch.dtype) -> tuple:
        key = (int(sample_rate), device, dtype)
        if key not in self._constants:
            n_fft = 2 ** round(math.log2(FRAME_S * sample_rate))
            weights, centres = mel_filterbank(n_fft, sample_rate)
            freqs = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate, dtype=torch.float64)
            in_range = (freqs >= F_MIN_HZ) & (freqs <= min(F_MAX_HZ, sample_rate / 2))
            # least-squares slope over the bands below Nyquist (at low rates the top ones are empty):
            # sum(w_k * env_k) with w centred and scaled, 0 for the empty bands
            valid = centres <= 0.45 * sample_rate
            log_centres = torch.log2(centres / 1000.0)
            centred = torch.where(valid, log_centres - log_centres[valid].mean(), torch.zeros_like(log_centres))
            slope_weights = centred / centred.square().sum()
            to = dict(device=device, dtype=dtype)
            self._constants[key] = (n_fft, torch.hann_window(n_fft, dtype=dtype, device=device), weights.to(**to),
                                    freqs.to(**to), in_range.to(device), slope_weights.to(**to))
            while len(self._constants) > 4:
                self._constants.pop(next(iter(self._constants)))
        return self._constants[key]

    def features(self, audio: torch.Tensor, sample_rate: int, offsets=None) -> torch.Tensor:
        """The scaled features before the anchor and normalization: `(batch, dim - 1)`, in `FEATURE_NAMES`
        order. `audio`: `(batch, channels, samples)` at `sample_rate` Hz."""
        if audio.ndim != 3:
            raise ValueError(f"audio must be (batch, channels, samples), got shape {tuple(audio.shape)}")
        audio = audio.to(self.device)
        if not audio.is_floating_point():
            audio = audio.float()
        x = self._window(audio, sample_rate, offsets)
        n_fft, window, mel, freqs, in_range, slope_w = self._rate_constants(sample_rate, x.device, x.dtype)
        hop = n_fft // 4
        if x.shape[-1] < n_fft + hop * max(DECAY_LAGS):
            shortest = (n_fft + hop * max(DECAY_LAGS)) / sample_rate
            raise ValueError(f"the features need at least {shortest:.2f} s of audio")
        spec = torch.stft(x, n_fft, hop, window=window, center=False, return_complex=True)
        # (batch, bins, frames); every feature is a ratio of powers, so no normalization is needed
        power = torch.view_as_real(spec).square().sum(-1)
        tiny = torch.finfo(x.dtype).tiny
        bands = torch.matmul(mel, power)  # (batch, mels, frames)
        mean_band = bands.mean(-1)
        total = mean_band.mean(-1, keepdim=True)

        def db(e: torch.Tensor) -> torch.Tensor:
            return 10.0 * torch.log10(e)

        # spectral envelope: floored 80 dB below the average band (an empty band above Nyquist sits there)
        env = db(mean_band + 1e-8 * total)
        envelope = (env - env.mean(-1, keepdim=True)) / 10.0
        spectrum = power.mean(-1)[:, in_range]  # (batch, bins in 40 Hz-16 kHz)
        f = freqs[in_range]
        centroid = torch.log2((spectrum * f).sum(-1) / (spectrum.sum(-1) + tiny) / 1000.0)
        tilt = (env * slope_w).sum(-1) / 6.0
        s = spectrum + 1e-10 * spectrum.mean(-1, keepdim=True)
        flatness = (db(torch.exp(torch.log(s).mean(-1)) / s.mean(-1)) + 30.0) / 10.0

        groups = bands.unflatten(1, (N_MELS // GROUP_SIZE, GROUP_SIZE)).sum(2)  # (batch, groups, frames)
        floor = groups.mean(-1, keepdim=True) * 10.0 ** (-FLOOR_DB / 10.0) + tiny
        level = db(groups + floor)
        hop_s = hop / sample_rate
        decay = []
        for lag in DECAY_LAGS:
            fall = torch.relu(level[..., :-lag] - level[..., lag:])
            # the fall-weighted mean fall (dB per lag): the steep falls of dry audio dominate it, where a plain
            # mean would only count how far the level fell in all, which a short reverb does not change
            rate = (fall.square().sum(-1) / (fall.sum(-1) + 1e-3)) / (lag * hop_s)  # dB/s
            decay.append(2.5 - torch.log10(rate + 1.0))
        modulation = level.std(-1) / 10.0

        crest_db = 20.0 * torch.log10(x.pow(8).mean(-1).pow(1 / 8) / (x.square().mean(-1).sqrt() + tiny) + tiny)
        crest = (crest_db - 12.0) / 6.0
        frame_level = db(bands.sum(1) + bands.sum(1).mean(-1, keepdim=True) * 10.0 ** (-FLOOR_DB / 10.0) + tiny)
        level_range = frame_level.std(-1) / 10.0
        return torch.cat([envelope, centroid[:, None], tilt[:, None], flatness[:, None], *decay, modulation,
                          crest[:, None], level_range[:, None]], dim=1)

    def embed_audio(self, audio: torch.Tensor, sample_rate: int, offsets: Sequence[int] | torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Embed audio `(batch, channels, samples)` at `sample_rate` Hz -> `(batch, dim)`, L2-normalized.

        Differentiable in `audio`. Audio longer than the window is cropped at `offsets` (samples at
        `sample_rate`, one per item; default 0); shorter audio is used as it is (at least about 0.2 s).
        """
        f = self.features(audio, sample_rate, offsets)
        anchored = torch.cat([f, torch.full_like(f[:, :1], ANCHOR)], dim=1)
        return torch.nn.functional.normalize(anchored, dim=-1)
