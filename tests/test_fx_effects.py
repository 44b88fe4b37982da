"""Per-effect checks: neutrality, EQ accuracy, gradients, dynamics, validation."""

import math

import numpy as np
import pytest
import scipy.signal
import torch

import fx
from fx import functional as F

SAMPLE_RATES = [8000, 22050, 44100, 48000, 96000, 192000]
CHANNELS = [1, 2, 6]
EFFECTS = ["eq", "reverb", "compressor", "gain", "distortion"]


def _noise(batch, channels, seconds, sr, seed=0, level=0.3):
    g = torch.Generator().manual_seed(seed)
    return level * torch.randn(batch, channels, int(seconds * sr), generator=g)


def _random_physical(effect, batch, seed):
    """Random interior settings (unit values in [0.15, 0.85])."""
    g = torch.Generator().manual_seed(seed)
    u = 0.15 + 0.7 * torch.rand(batch, effect.num_params, generator=g)
    return effect.unit_to_physical(u)


@pytest.mark.parametrize("name", EFFECTS)
@pytest.mark.parametrize("sr", SAMPLE_RATES)
@pytest.mark.parametrize("channels", CHANNELS)
def test_neutral_returns_input(name, sr, channels):
    # the reverb's neutrality does not depend on its IR length; a short IR keeps the
    # 18 noise tables of this matrix cheap (the default length is covered in test_fx_chain)
    effect = fx.NoiseReverb(ir_length_s=0.5) if name == "reverb" else fx.create_effect(name)
    x = _noise(2, channels, 0.1, sr)
    y = effect.process(x, sr, effect.neutral_params(2))
    assert y.shape == x.shape
    assert (y - x).abs().max().item() < 1e-4


# ---------------------------------------------------------------------------------------
# EQ accuracy vs a float64 RBJ biquad cascade (scipy)
# ---------------------------------------------------------------------------------------


def _rbj_sos(kind, gain_db, f0, q, sr):
    """RBJ Audio-EQ-Cookbook biquad in float64 (independent of dasp)."""
    a_ = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / sr
    alpha = math.sin(w0) / (2 * q)
    c = math.cos(w0)
    sa = math.sqrt(a_)
    if kind == "peaking":
        b = [1 + alpha * a_, -2 * c, 1 - alpha * a_]
        a = [1 + alpha / a_, -2 * c, 1 - alpha / a_]
    elif kind == "low_shelf":
        b = [a_ * ((a_ + 1) - (a_ - 1) * c + 2 * sa * alpha), 2 * a_ * ((a_ - 1) - (a_ + 1) * c),
             a_ * ((a_ + 1) - (a_ - 1) * c - 2 * sa * alpha)]
        a = [(a_ + 1) + (a_ - 1) * c + 2 * sa * alpha, -2 * ((a_ - 1) + (a_ + 1) * c),
             (a_ + 1) + (a_ - 1) * c - 2 * sa * alpha]
    else:
        b = [a_ * ((a_ + 1) + (a_ - 1) * c + 2 * sa * alpha), -2 * a_ * ((a_ - 1) + (a_ + 1) * c),
             a_ * ((a_ + 1) + (a_ - 1) * c - 2 * sa * alpha)]
        a = [(a_ + 1) - (a_ - 1) * c + 2 * sa * alpha, 2 * ((a_ - 1) - (a_ + 1) * c),
             (a_ + 1) - (a_ - 1) * c - 2 * sa * alpha]
    return np.array(b + a) / a[0]


EQ_SETTINGS = [
    # (gain dB, freq Hz, Q) per section: low shelf, band0..3, high shelf
    [(6.0, 120.0, 0.707), (-8.0, 400.0, 2.0), (4.0, 3000.0, 1.0), (-5.0, 9000.0, 3.0), (3.0, 14000.0, 0.8), (-6.0, 8000.0, 0.707)],
    [(-12.0, 60.0, 0.5), (15.0, 1000.0, 6.0), (-20.0, 2500.0, 0.3), (10.0, 10000.0, 1.5), (-3.0, 16000.0, 4.0), (8.0, 5000.0, 0.6)],
    [(0.0, 200.0, 0.707), (3.0, 150.0, 0.1), (0.0, 4000.0, 1.0), (-2.0, 11000.0, 0.7), (0.0, 13000.0, 1.0), (2.0, 12000.0, 0.3)],
]
KINDS = ["low_shelf", "peaking", "peaking", "peaking", "peaking", "high_shelf"]


def _eq_params(setting):
    p = {}
    for sec, (g, f, q) in zip(F.EQ_SECTIONS, setting):
        p[f"{sec}_gain_db"], p[f"{sec}_cutoff_freq"], p[f"{sec}_q_factor"] = g, f, q
    return p


@pytest.mark.parametrize("sr", [22050, 32000, 44100, 48000, 96000, 192000])
@pytest.mark.parametrize("setting", range(len(EQ_SETTINGS)))
def test_eq_matches_rbj_cascade(sr, setting):
    s = EQ_SETTINGS[setting]
    n = sr  # 1 s impulse: every response here has decayed far below 0.1 dB by then
    x = torch.zeros(1, 1, n)
    x[..., 0] = 1.0
    eq = fx.ParametricEQ()
    if any(g != 0 and f > 0.46 * sr for g, f, _ in s):
        # a band the rate cannot hold is refused, never moved down the spectrum
        with pytest.raises(ValueError, match="can hold"):
            eq.process(x, sr, _eq_params(s))
        return
    # 0 dB bands are flat at any frequency (above Nyquist too): left out of the reference
    sos = np.stack([_rbj_sos(k, g, f, q, sr) for k, (g, f, q) in zip(KINDS, s) if g != 0])
    h = eq.process(x, sr, _eq_params(s))[0, 0].double().numpy()
    freqs = np.fft.rfftfreq(n, 1 / sr)
    band = (freqs >= 20) & (freqs <= 0.46 * sr)
    got = 20 * np.log10(np.abs(np.fft.rfft(h))[band])
    _, ref = scipy.signal.sosfreqz(sos, worN=freqs[band], fs=sr)
    ref = 20 * np.log10(np.abs(ref))
    assert np.max(np.abs(got - ref)) < 0.1
    # the analytic response used for plots agrees too
    f2, mag = fx.eq_frequency_response(_eq_params(s), sr, n_freqs=256, f_min=20.0)
    _, ref2 = scipy.signal.sosfreqz(sos, worN=f2.numpy(), fs=sr)
    assert np.max(np.abs(mag.numpy() - 20 * np.log10(np.abs(ref2)))) < 0.01


@pytest.mark.parametrize("kind", ["low_shelf", "peaking", "high_shelf"])
def test_biquad_design_is_dasps_bit_for_bit(kind):
    """fx restates dasp-pytorch's RBJ design so that the EQ does not import scipy.signal at start-up; the
    coefficients (and so the paper's EQ) must stay exactly dasp's."""
    import dasp_pytorch.signal

    g = torch.Generator().manual_seed(0)
    gain_db = torch.rand(64, generator=g, dtype=torch.float64) * 40 - 20
    freq = 20 * 1000 ** torch.rand(64, generator=g, dtype=torch.float64)
    q = 0.1 + 9.9 * torch.rand(64, generator=g, dtype=torch.float64)
    ours = F.rbj_biquad(gain_db, freq, q, 44100, kind)
    theirs = dasp_pytorch.signal.biquad(gain_db, freq, q, 44100, kind)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_eq_frequency_response_accepts_unit_vectors():
    eq = fx.ParametricEQ()
    p = _eq_params(EQ_SETTINGS[0])
    u = eq.physical_to_unit(p)[0]
    f1, m1 = fx.eq_frequency_response(p, 48000, n_freqs=128)
    f2, m2 = fx.eq_frequency_response(u, 48000, n_freqs=128)
    _, m3 = fx.eq_frequency_response(torch.stack([u, u]), 48000, n_freqs=128)
    assert torch.allclose(f1, f2) and m1.shape == (128,) and m3.shape == (2, 128)
    assert torch.allclose(m1, m2, atol=1e-6) and torch.allclose(m3[1], m1, atol=1e-6)
    neutral = fx.eq_frequency_response(eq.param_specs and {s.name: s.neutral for s in eq.param_specs}, 48000)[1]
    assert neutral.abs().max() < 1e-9


def test_eq_band_above_what_the_rate_holds_is_refused_unless_flat():
    eq = fx.ParametricEQ()
    p = eq.neutral_params(1)
    p["band3_gain_db"] = torch.tensor([12.0])
    p["band3_cutoff_freq"] = torch.tensor([15000.0])  # above Nyquist at 8 kHz
    x = _noise(1, 1, 0.5, 8000)
    with pytest.raises(ValueError, match=r"band3_cutoff_freq 15000 Hz .* above what 8000 Hz audio can hold \(max 3680 Hz\)"):
        eq.process(x, 8000, p)
    with pytest.raises(ValueError, match="can hold"):
        fx.eq_frequency_response({k: v.item() for k, v in p.items()}, 8000, n_freqs=64)
    # at 0 dB the band is flat whatever its frequency: accepted, and the output is the input
    p["band3_gain_db"] = torch.tensor([0.0])
    y = eq.process(x, 8000, p)
    assert torch.isfinite(y).all() and (y - x).abs().max() < 1e-5


# ---------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EFFECTS)
def test_gradients_finite_and_nonzero(name):
    sr = 48000
    effect = fx.create_effect(name)
    x = _noise(2, 2, 0.25, sr)
    u = (0.15 + 0.7 * torch.rand(2, effect.num_params, generator=torch.Generator().manual_seed(3))).requires_grad_()
    y = effect.process(x, sr, effect.unit_to_physical(u))
    # a loss that depends on level and spectrum, like an embedding would
    spec = torch.fft.rfft(y, dim=-1).abs()
    loss = spec.pow(0.5).mean() + y.square().mean()
    loss.backward()
    g = u.grad
    assert torch.isfinite(g).all()
    # a soft knee only acts while the level is inside it (like a band's frequency at 0 dB gain)
    zero = [s.name for i, s in enumerate(effect.param_specs) if (g[:, i] == 0).any() and s.name != "knee_db"]
    assert not zero, f"zero gradient for {zero}"


def test_compressor_gradients_finite_at_range_edges():
    comp = fx.Compressor()
    x = _noise(3, 2, 0.1, 44100, level=0.5)
    n = comp.num_params
    u = torch.tensor([[0.0] * n, [1.0] * n, [0.5] * n], requires_grad=True)
    comp.process(x, 44100, comp.unit_to_physical(u)).sum().backward()
    assert torch.isfinite(u.grad).all()


def test_compressor_kernel_failure_names_the_cause(monkeypatch):
    """A numba that cannot compile torchcomp's kernel (seen: numba-cuda calling `np.row_stack`, gone in numpy
    2.5) is reported as what it is, with a way around it, not as a bare AttributeError from deep inside."""
    import torchcomp

    def broken(*args, **kwargs):
        raise AttributeError("module 'numpy' has no attribute 'row_stack'")

    monkeypatch.setattr(torchcomp, "compressor_core", broken)
    comp = fx.Compressor()
    with pytest.raises(RuntimeError, match=r"compressor's kernel \(torchcomp on numba\) failed on cpu: "
                                           r"AttributeError: .*row_stack.*leave the compressor out"):
        comp.process(_noise(1, 2, 0.1, 44100), 44100, comp.unit_to_physical(torch.full((1, comp.num_params), 0.5)))


# ---------------------------------------------------------------------------------------
# Compressor, distortion, gain behaviour
# ---------------------------------------------------------------------------------------


def _burst(sr):
    t = torch.arange(int(0.6 * sr)) / sr
    env = torch.where((t > 0.1) & (t < 0.3), 1.0, 0.05)
    return (env * torch.sin(2 * math.pi * 440 * t)).view(1, 1, -1)


@pytest.mark.parametrize("sr", [16000, 48000])
def test_compressor_attack_and_release_act(sr):
    comp = fx.Compressor()
    x = _burst(sr)

    def run(attack, release):
        p = dict(threshold_db=-30.0, ratio=8.0, attack_ms=attack, release_ms=release, makeup_gain_db=0.0, knee_db=0.0)
        return comp.process(x, sr, p)

    fast = run(1.0, 20.0)
    # steady state inside the burst: 0 dBFS-peak sine (~-3 dB) above -30 dB at 8:1
    seg = slice(int(0.2 * sr), int(0.29 * sr))
    level_db = 20 * math.log10(fast[..., seg].abs().max().item())
    assert -30 < level_db < -20
    # attack: a slow attack lets the onset through louder
    onset = slice(int(0.1 * sr), int(0.11 * sr))
    # (the 10 ms RMS detector itself lags the onset, so the fast setting lets some of it through too)
    assert run(50.0, 20.0)[..., onset].abs().max() > 1.3 * fast[..., onset].abs().max()
    # release: after the burst, a long release keeps the gain reduced (quieter)
    after = slice(int(0.32 * sr), int(0.4 * sr))
    assert run(1.0, 1000.0)[..., after].abs().max() < 0.5 * fast[..., after].abs().max()


@pytest.mark.parametrize("drive_db", [0.0, 12.0, 30.0])
def test_distortion_level_compensated_at_reference_level(drive_db):
    x = 0.1 * torch.randn(1, 2, 200_000, generator=torch.Generator().manual_seed(0))  # -20 dBFS RMS noise
    y = fx.Distortion().process(x, 48000, {"drive_db": drive_db, "mix": 100.0})
    assert y.square().mean().sqrt().item() == pytest.approx(0.1, rel=0.02)


def test_distortion_adds_harmonics_and_is_memoryless():
    sr = 48000
    t = torch.arange(sr // 4) / sr
    x = (0.5 * torch.sin(2 * math.pi * 1000 * t)).view(1, 1, -1)
    y = fx.Distortion().process(x, sr, {"drive_db": 30.0, "mix": 100.0})
    spec = torch.fft.rfft(y[0, 0]).abs()
    assert spec[3 * 250] > 0.1 * spec[250]  # strong 3rd harmonic (bin = 4 Hz)
    # no statistics over the clip, only the past 100 ms (loudness match) and 48 samples ahead (resampling
    # filters): a piece processed with its look-ahead equals the same piece of the whole
    part = fx.Distortion().process(x[..., :1100], sr, {"drive_db": 30.0, "mix": 100.0})
    assert torch.allclose(part[..., :1000], y[..., :1000], atol=1e-5)


def test_gain_is_exact():
    x = _noise(2, 2, 0.05, 8000)
    y = fx.Gain().process(x, 8000, {"gain_db": torch.tensor([20.0, -20.0])})
    assert torch.allclose(y[0], 10 * x[0]) and torch.allclose(y[1], 0.1 * x[1])


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EFFECTS)
def test_effect_rejects_bad_input(name):
    effect = fx.create_effect(name)
    p = effect.neutral_params(1)
    with pytest.raises(ValueError, match="shape"):
        effect.process(torch.zeros(2, 100), 16000, p)
    with pytest.raises(ValueError, match="sample_rate"):
        effect.process(torch.zeros(1, 1, 100), 4000, p)
    with pytest.raises(ValueError, match="sample_rate"):
        effect.process(torch.zeros(1, 1, 100), 384000, p)
    with pytest.raises(ValueError, match="missing"):
        effect.process(torch.zeros(1, 1, 100), 16000, {})
    with pytest.raises(ValueError, match="batch"):
        effect.process(torch.zeros(2, 1, 100), 16000, effect.neutral_params(3))


def test_unknown_effect_name_lists_known_ones():
    with pytest.raises(ValueError, match="reverb"):
        fx.create_effect("flanger9000")


# ---------------------------------------------------------------------------------------
# The base class validates and batches once, before the effect's DSP hook
# ---------------------------------------------------------------------------------------


class _HookSpy:
    """Stands in for an effect's `_process`: records what it receives, returns the audio."""

    def __init__(self):
        self.calls = []

    def __call__(self, audio, sample_rate, params):
        self.calls.append(params)
        return audio


@pytest.mark.parametrize("name", EFFECTS)
@pytest.mark.parametrize("sample_rate", [4000, 384000, True])
def test_bad_sample_rate_never_reaches_the_dsp(name, sample_rate, monkeypatch):
    effect = fx.create_effect(name)
    spy = _HookSpy()
    monkeypatch.setattr(effect, "_process", spy)
    with pytest.raises(ValueError, match="sample_rate"):
        effect(torch.zeros(1, 1, 100), sample_rate, effect.neutral_params(1))
    assert spy.calls == []


@pytest.mark.parametrize("name", EFFECTS)
def test_wrong_parameter_batch_never_reaches_the_dsp(name, monkeypatch):
    effect = fx.create_effect(name)
    spy = _HookSpy()
    monkeypatch.setattr(effect, "_process", spy)
    with pytest.raises(ValueError, match=rf"{name}: parameter '\w+' has batch 3, audio has batch 2"):
        effect(torch.zeros(2, 1, 100), 16000, effect.neutral_params(3))
    assert spy.calls == []


@pytest.mark.parametrize("name", EFFECTS)
def test_dsp_hook_receives_clamped_batch_tensors_on_the_audio_dtype(name, monkeypatch):
    effect = fx.create_effect(name)
    spy = _HookSpy()
    monkeypatch.setattr(effect, "_process", spy)
    # plain floats far above every range: broadcast to the audio batch and clamped to each maximum (at 48 kHz,
    # which holds every range whole)
    effect(torch.zeros(3, 2, 100, dtype=torch.float64), 48000, {n: 1e6 for n in effect.param_names})
    (params,) = spy.calls
    assert list(params) == effect.param_names
    assert all(v.shape == (3,) and v.dtype == torch.float64 for v in params.values())
    np.testing.assert_allclose(
        np.stack([params[s.name].numpy() for s in effect.param_specs]),
        np.repeat([[s.max] for s in effect.param_specs], 3, axis=1),
    )


@pytest.mark.parametrize("name", [n for n in EFFECTS if fx.effect_class(n).linear])
def test_frequency_response_is_validated_like_process(name):
    effect = fx.create_effect(name)
    with pytest.raises(ValueError, match="sample_rate"):
        effect.frequency_response(torch.zeros(1, 1, 100), 4000, effect.neutral_params(1), 256)
    with pytest.raises(ValueError, match="batch"):
        effect.frequency_response(torch.zeros(2, 1, 100), 16000, effect.neutral_params(3), 256)


def test_an_effect_without_a_dsp_hook_says_so():
    class Silent(fx.Effect):
        type_name = "test_silent"
        param_specs = ()

    with pytest.raises(NotImplementedError, match=r"Silent must implement _process\(\)"):
        Silent()(torch.zeros(1, 1, 10), 16000, {})
