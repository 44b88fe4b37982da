"""The feature embedder (`text2fx.features`): its contract as an `Embedder`, and that its features measure what
they are named for, checked against numpy/scipy computations written here."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import fftconvolve, lfilter

from text2fx.embedder import Embedder
from text2fx.errors import UsageError
from text2fx.features import ANCHOR, FEATURE_NAMES, FeatureEmbedder

SR = 16000


def noise(seconds=2.0, sr=SR, seed=0, color="white"):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(seconds * sr))
    if color == "pink":  # -3 dB/octave: 1/sqrt(f) amplitude, shaped in the frequency domain
        spectrum = np.fft.rfft(x)
        f = np.fft.rfftfreq(len(x), 1 / sr)
        spectrum[1:] /= np.sqrt(f[1:])
        spectrum[0] = 0
        x = np.fft.irfft(spectrum, len(x))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def as_batch(*signals):
    return torch.from_numpy(np.stack(signals)[:, None, :].astype(np.float32))


def feature(f, name):
    return f[..., FEATURE_NAMES.index(name)]


def np_centroid_octaves(x, sr):
    """Spectral centroid over 40 Hz-16 kHz of the whole signal's power spectrum, log2(Hz / 1 kHz)."""
    p = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / sr)
    band = (f >= 40) & (f <= min(16000, sr / 2))
    return math.log2((p[band] * f[band]).sum() / p[band].sum() / 1000)


def high_shelf(x, sr, gain_db, f0=2000.0):
    """RBJ cookbook high shelf (S = 1), written out here."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / sr
    alpha = math.sin(w0) / 2 * math.sqrt(2)
    c = math.cos(w0)
    b = [a * ((a + 1) + (a - 1) * c + 2 * math.sqrt(a) * alpha), -2 * a * ((a - 1) + (a + 1) * c),
         a * ((a + 1) + (a - 1) * c - 2 * math.sqrt(a) * alpha)]
    den = [(a + 1) - (a - 1) * c + 2 * math.sqrt(a) * alpha, 2 * ((a - 1) - (a + 1) * c),
           (a + 1) - (a - 1) * c - 2 * math.sqrt(a) * alpha]
    return lfilter(b, den, x).astype(np.float32)


def reverberated(rt60_s, sr=SR, seconds=2.0, seed=1):
    """Noise bursts (50 ms, one per second) through an exponentially decaying noise impulse response."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    bursts = rng.standard_normal(n) * ((t % 1.0) < 0.05)
    ir_t = np.arange(int(2 * sr)) / sr
    ir = rng.standard_normal(ir_t.size) * 10 ** (-3 * ir_t / rt60_s)  # -60 dB at rt60_s
    y = fftconvolve(bursts, ir)[:n]
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


@pytest.fixture(scope="module")
def embedder():
    return FeatureEmbedder(window_seconds=2.0)


def test_is_an_embedder_with_unit_norm_embeddings_of_the_documented_shape(embedder):
    assert isinstance(embedder, Embedder)
    x = as_batch(noise(seed=0), noise(seed=1, color="pink"), reverberated(1.0))
    emb = embedder.embed_audio(x, SR)
    assert emb.shape == (3, len(FEATURE_NAMES)) == (3, embedder.dim)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-6)
    # the last component is the constant anchor, before normalization
    f = embedder.features(x, SR)
    assert torch.allclose(emb[:, -1] * torch.cat([f, torch.full_like(f[:, :1], ANCHOR)], 1).norm(dim=-1),
                          torch.full((3,), ANCHOR), atol=1e-5)


def test_deterministic_level_invariant_and_mono(embedder):
    x = as_batch(reverberated(0.7))
    a, b = embedder.embed_audio(x, SR), embedder.embed_audio(x.clone(), SR)
    assert torch.equal(a, b)
    assert torch.allclose(embedder.embed_audio(0.05 * x, SR), a, atol=1e-5)  # a gain changes nothing
    stereo = torch.cat([x, x], dim=1)
    assert torch.allclose(embedder.embed_audio(stereo, SR), a, atol=1e-6)


def test_crops_at_offsets_and_takes_short_audio_as_it_is(embedder):
    long = torch.from_numpy(noise(seconds=5.0, seed=3))[None, None]
    window = 2 * SR
    emb = embedder.embed_audio(long.expand(2, -1, -1), SR, offsets=[0, SR])
    assert torch.allclose(emb[1], embedder.embed_audio(long[..., SR : SR + window], SR)[0], atol=1e-6)
    # shorter than the window: described as it is, and (stationary noise) much as its repetition would be
    short = long[..., : SR]
    assert float(embedder.embed_audio(short, SR)[0] @ embedder.embed_audio(short.repeat(1, 1, 2), SR)[0]) > 0.999


def test_gradient_reaches_the_audio_and_is_finite(embedder):
    x = as_batch(reverberated(0.5), noise(seed=4)).requires_grad_(True)
    target = embedder.embed_audio(as_batch(noise(seed=5, color="pink"), reverberated(2.0)), SR)
    loss = (1 - (embedder.embed_audio(x, SR) * target).sum(-1)).sum()
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # with a silent stretch (the level floors and the log keep it finite)
    y = as_batch(np.concatenate([noise(seconds=1.0), np.zeros(SR, np.float32)])).requires_grad_(True)
    embedder.embed_audio(y, SR).sum().backward()
    assert torch.isfinite(y.grad).all()


def test_centroid_matches_numpy_and_rises_with_a_brighter_eq(embedder):
    x = noise(seed=6, color="pink")
    brighter = high_shelf(x, SR, +12.0)
    darker = high_shelf(x, SR, -12.0)
    f = embedder.features(as_batch(darker, x, brighter), SR)
    centroid = feature(f, "centroid")
    reference = [np_centroid_octaves(s, SR) for s in (darker, x, brighter)]
    # the same quantity: 31 Hz STFT bins with a Hann window vs one long FFT (pink noise's strong lowest
    # octave is where the two resolutions differ most)
    assert np.allclose(centroid.numpy(), reference, atol=0.1)
    assert centroid[0] < centroid[1] < centroid[2]
    tilt = feature(f, "tilt")
    assert tilt[0] < tilt[1] < tilt[2]


def test_tilt_is_the_spectral_slope_in_db_per_octave(embedder):
    # white noise rises 3 dB/octave faster than pink in any band energy (the bands' widths cancel out in the
    # difference): the tilt feature is dB/octave / 6
    f = embedder.features(as_batch(noise(seed=7), noise(seed=7, color="pink")), SR)
    assert 6 * float(feature(f, "tilt")[0] - feature(f, "tilt")[1]) == pytest.approx(3.0, abs=0.4)


def test_decay_rises_with_the_reverb_time_and_tracks_the_decay_rate(embedder):
    times = (0.15, 0.3, 0.6, 1.2)
    f = embedder.features(as_batch(*[reverberated(rt) for rt in times]), SR)
    late = torch.stack([f[:, FEATURE_NAMES.index(f"decay_12_{g}")] for g in range(8)], 1).mean(1)
    early = torch.stack([f[:, FEATURE_NAMES.index(f"decay_3_{g}")] for g in range(8)], 1).mean(1)
    assert all(late[i] < late[i + 1] for i in range(len(times) - 1))
    assert all(early[i] < early[i + 1] for i in range(len(times) - 1))
    # the decay feature is 2.5 - log10(fall rate in dB/s) and an exponential decay falls 60 dB per RT60: each
    # doubling of RT60 halves the rate, +0.3; level jitter and the frames' smoothing flatten that a little, and
    # the 50 dB floor caps the fall of the shortest decay within a 128 ms lag
    steps = (late[2:] - late[1:-1]).numpy()  # 0.3 -> 0.6 s, 0.6 -> 1.2 s
    assert np.all((steps > 0.15) & (steps < 0.4)), steps
    # and the modulation (level spread over time) is lower once long tails fill the gaps
    modulation = torch.stack([f[:, FEATURE_NAMES.index(f"modulation_{g}")] for g in range(8)], 1).mean(1)
    assert modulation[-1] < modulation[0]


def test_crest_factor_falls_with_compression_as_numpy_measures_it(embedder):
    x = noise(seed=8) * np.linspace(0.2, 1.0, 2 * SR).astype(np.float32)
    squashed = np.tanh(6 * x).astype(np.float32)

    def crest_db(s):
        return 20 * math.log10(np.abs(s).max() / np.sqrt(np.mean(s**2)))

    f = embedder.features(as_batch(x, squashed), SR)
    assert crest_db(squashed) < crest_db(x)
    assert feature(f, "crest")[1] < feature(f, "crest")[0]
    assert feature(f, "level_range")[1] < feature(f, "level_range")[0]


def test_cosine_distance_grows_with_the_change(embedder):
    x = noise(seed=9, color="pink")
    emb = embedder.embed_audio(as_batch(x, high_shelf(x, SR, 3.0), high_shelf(x, SR, 9.0)), SR)
    near, far = float(1 - emb[0] @ emb[1]), float(1 - emb[0] @ emb[2])
    assert 0 < near < far


def test_has_no_text_side(embedder):
    with pytest.raises(UsageError, match="no text side") as caught:
        embedder.embed_text(["bright"])
    assert "\n" not in str(caught.value) and "--like" in str(caught.value)
    with pytest.raises(UsageError, match="no text side"):
        embedder.check_texts(["bright"])


def test_too_short_audio_and_bad_window_are_refused():
    with pytest.raises(UsageError, match="window_seconds"):
        FeatureEmbedder(window_seconds=0)
    with pytest.raises(ValueError, match="at least"):
        FeatureEmbedder(window_seconds=0.05).embed_audio(torch.zeros(1, 1, 400) + 0.1, SR)


# --- selecting it: the engine and the command ---------------------------------------------------------------


def test_engine_matches_a_reference_with_the_feature_embedder():
    from text2fx.engine import Engine

    engine = Engine("features", device="cpu")
    assert isinstance(engine.embedder, FeatureEmbedder) and engine.options.embedder == "features"
    x = noise(seconds=1.5, seed=10, color="pink")
    reference = high_shelf(noise(seconds=1.5, seed=11, color="pink"), SR, +10.0)
    result = engine.apply(x, SR, None, chain="eq", like=(reference, SR), steps=15, seed=0)
    assert result.params["chain"] == "eq"
    assert result.like["similarity"]["after"] > result.like["similarity"]["before"]
    with pytest.raises(UsageError, match="no text side"):
        engine.apply(x, SR, "bright", chain="eq", steps=2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(embedder="nope"), "unknown embedder 'nope'; choose one of clap, features"),
    (dict(embedder="features", checkpoint="x.pt"), "checkpoint applies to the CLAP model"),
    (dict(embedder="features", precision="bfloat16"), "precision applies to the CLAP model"),
])
def test_engine_options_check_the_embedder(kwargs, message):
    from text2fx.options import EngineOptions

    with pytest.raises(UsageError, match=message):
        EngineOptions(**kwargs)


def test_command_refuses_a_prompt_with_the_feature_embedder(tmp_path, capsys):
    from text2fx.cli import main

    path = tmp_path / "in.wav"
    sf.write(path, noise(seconds=1.0), SR)
    assert main([str(path), "bright", "--embedder", "features", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no text side" in err and "\n" not in err
    assert not (tmp_path / "in.bright.wav").exists()


def test_command_matches_a_reference_with_the_feature_embedder(tmp_path, capsys):
    from text2fx.cli import main

    path, ref = tmp_path / "in.wav", tmp_path / "ref.wav"
    sf.write(path, noise(seconds=1.5, seed=12, color="pink"), SR)
    sf.write(ref, high_shelf(noise(seconds=1.5, seed=13, color="pink"), SR, -10.0), SR)
    out = tmp_path / "out.wav"
    code = main([str(path), "--like", str(ref), "--embedder", "features", "--chain", "eq", "--steps", "5",
                 "-o", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert out.exists() and out.with_suffix(".json").exists()
