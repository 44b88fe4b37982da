"""Issue 13: fx to a mixing engineer's standard, each figure against a reference written here (numpy/scipy)."""

import math

import numpy as np
import pytest
import torch

import fx


def _reverb_params(rt, mix=100.0, predelay_ms=0.0):
    p = {f"band{k}_rt60_s": rt[k] for k in range(10)}
    p.update({f"band{k}_gain_db": 0.0 for k in range(10)}, predelay_ms=predelay_ms, mix=mix)
    return p


def _t30(ir, sr, fc, taper=1 / 12):
    """Schroeder T30 in the octave band [fc/sqrt2, fc*sqrt2) (zero-phase, zero-padded x2).

    The band filter is 1 inside the band and falls to 0 at its edges over the band's outer ``taper`` octave
    (cos^2): it admits nothing from the neighbouring bands, and its impulse response dies fast.  A brick-wall
    filter (``taper=0``) rings with sinc tails falling only as 1/t: at 125 Hz (an 88 Hz-wide band) they carry
    the band's first 100 ms into its late decay about 30-45 dB down, inside the -5..-35 dB fit, and a 1 s band
    between 3 s ones measured 3.3 s (an earlier design, 14 s) whatever the reverb did; at 1 kHz they sit 18 dB
    lower, which is why only the low bands were off."""
    n = len(ir)
    f = np.fft.rfftfreq(2 * n, 1 / sr)
    inside = 0.5 - np.abs(np.log2(np.maximum(f, 1e-9) / fc))  # octaves inside the nearer band edge
    if taper > 0:
        w = np.where(inside <= 0, 0.0, np.sin(0.5 * np.pi * np.clip(inside / taper, 0, 1)) ** 2)
    else:
        w = (f >= fc / 2**0.5) & (f < fc * 2**0.5)
    b = np.fft.irfft(np.fft.rfft(ir, 2 * n) * w, 2 * n)[:n]
    e = np.cumsum((b**2)[::-1])[::-1]
    edc = 10 * np.log10(e / e[0] + 1e-300)
    i = np.where((edc <= -5) & (edc >= -35))[0]
    return -60 / np.polyfit(i / sr, edc[i], 1)[0]


def _ir(rt, sr=48000, seconds=4.0, channels=1, rev=None):
    """The reverb's IR per channel; pass `rev` (a ``NoiseReverb`` with ``ir_length_s=seconds``) to reuse its
    noise table across calls. 4 s: a 3 s band has decayed 80 dB by its end (-35 dB, the end of the T30 fit,
    is reached at 1.75 s), 5 s bands leave the 0.3 s band's fit untouched."""
    rev = fx.NoiseReverb(seed=3, ir_length_s=seconds) if rev is None else rev
    x = torch.zeros(1, channels, int(seconds * sr), dtype=torch.float64)
    x[..., 0] = 1.0  # an impulse in every channel: with the cross-feed, channel c's output is its own IR
    return rev.process(x, sr, _reverb_params(rt))[0].numpy()


@pytest.mark.parametrize("sr, channels", [(22050, 2), (48000, 1), (192000, 2)])
def test_short_band_between_long_neighbours_decays_as_set(sr, channels):
    rt = [5.0] * 10
    rt[5] = 0.3
    for ir in _ir(rt, sr, channels=channels):
        assert _t30(ir, sr, 1000.0) <= 1.0  # was 4.9 s


@pytest.mark.parametrize("sr, channels", [(22050, 1), (48000, 2), (192000, 1)])
def test_bands_within_15_percent_when_neighbours_differ_3x(sr, channels):
    rev = fx.NoiseReverb(seed=3, ir_length_s=4.0)  # one noise table for both alternations
    for pattern in [(1.0, 3.0), (3.0, 1.0)]:
        rt = list(pattern) * 5
        for ir in _ir(rt, sr, channels=channels, rev=rev):
            for k in range(1, 10):  # 62.5 Hz - 16 kHz, the bands below Nyquist
                fc = 31.25 * 2**k
                if fc * 2**0.5 <= sr / 2:
                    assert _t30(ir, sr, fc) == pytest.approx(rt[k], rel=0.15), (pattern, fc)


def test_wet_energy_normalised_across_decays():
    rev = fx.NoiseReverb(seed=3, ir_length_s=8.0)  # the whole IR: the energy normalisation's length
    rts = ([0.3] * 10, [5.0] * 10, [0.3, 5.0] * 5, [8.0, 0.1] * 5)
    e = [np.sum(_ir(rt, seconds=8.0, rev=rev)[0] ** 2) for rt in rts]
    assert 10 * np.log10(max(e) / min(e)) < 0.5


@pytest.mark.parametrize("sr", [22050, 48000, 192000])
def test_true_stereo_hard_left_source_reaches_right(sr):
    x = torch.zeros(1, 2, sr, dtype=torch.float64)
    x[0, 0] = 0.1 * torch.randn(sr, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = fx.NoiseReverb(ir_length_s=1.0).process(x, sr, _reverb_params([0.5] * 10))[0].numpy()
    right_db = 10 * np.log10(np.mean(y[1] ** 2) / np.mean(y[0] ** 2))
    assert -6.0 < right_db <= 0.0
    assert abs(np.corrcoef(y[0], y[1])[0, 1]) < 0.1  # decorrelated tails


@pytest.mark.parametrize("channels", [1, 2])
def test_mono_path_is_the_mean_of_the_channels(channels):
    sr = 16000
    chain = fx.Chain.from_spec("eq,reverb")
    x = 0.1 * torch.randn(1, channels, sr, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    u = torch.rand(2, chain.num_params, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    full = chain.process(x, sr, u)
    assert torch.allclose(chain.process(x, sr, u, mono=True), full.mean(1, keepdim=True), atol=1e-10)


def _alias_dbc(y, sr, f0):
    n = sr
    seg = y[n // 2 : n // 2 + n] * np.hanning(n)
    spec = np.abs(np.fft.rfft(seg)) ** 2
    f = np.fft.rfftfreq(n, 1 / sr)
    harmonic = np.zeros_like(f, bool)
    for k in range(1, int(sr / 2 / f0) + 1):
        harmonic |= np.abs(f - k * f0) <= 30
    return 10 * np.log10(spec[~harmonic].sum() / spec[np.abs(f - f0) <= 30].sum())


def _band_limited_tanh_sine(sr, f0, amp, drive_db, n):
    """``tanh(g amp sin(2 pi f0 t))`` with only its harmonics below ``sr / 2``: the alias-free ideal.

    The shaped sine is periodic in its phase, so its Fourier series comes exactly from one period sampled at
    2**14 points (an 82 MHz rate at 5 kHz; tanh's harmonics fall exponentially, so nothing folds at double
    precision), and the harmonics below Nyquist are summed at the audio rate, over one period of the sampled
    signal (``sr / gcd(sr, f0)`` samples, integer ``f0``), repeated."""
    g = 10 ** (drive_db / 20)
    m = 2**14
    c = np.fft.rfft(np.tanh(g * amp * np.sin(2 * np.pi * np.arange(m) / m))) * (2 / m)
    k = np.arange(1, int(np.ceil(sr / 2 / f0)))
    k = k[k * f0 < sr / 2]
    period = sr // math.gcd(sr, int(f0))
    phase = 2 * np.pi * f0 * np.arange(period)[:, None] / sr * k[None]
    return np.resize((np.cos(phase) * c[k].real - np.sin(phase) * c[k].imag).sum(-1), n)


def _harmonics_dbc(y, sr, f0):
    """Level of each harmonic below 0.45 sr relative to the fundamental (dB), same window as `_alias_dbc`."""
    n = sr
    spec = np.abs(np.fft.rfft(y[n // 2 : n // 2 + n] * np.hanning(n))) ** 2
    f = np.fft.rfftfreq(n, 1 / sr)
    power = [spec[np.abs(f - k * f0) <= 30].sum() for k in range(1, int(0.45 * sr / f0) + 1)]
    return 10 * np.log10(np.array(power) / power[0])


# 22.05-192 kHz, 1 and 2 channels, every oversampling factor used in that range (8x, 6x, 4x)
@pytest.mark.parametrize(
    "sr, channels", [(22050, 2), (32000, 1), (44100, 1), (48000, 2), (96000, 1), (192000, 2)]
)
def test_distortion_aliasing_below_minus_50_dbc_at_24_db(sr, channels):
    f0, amp = 5000.0, 0.5
    n = int(1.6 * sr)  # 0.5 s for the loudness match to settle, then the 1 s analysis window
    x = amp * np.sin(2 * np.pi * f0 * np.arange(n) / sr)
    x = np.stack([x, 0.5 * x][:channels])[None]  # the second channel at half the level
    y = fx.Distortion().process(torch.tensor(x), sr, {"drive_db": 24.0, "mix": 100.0})[0].numpy()
    reference = _band_limited_tanh_sine(sr, f0, amp, 24.0, n)
    assert _alias_dbc(reference, sr, f0) < -100.0  # the measure reads no aliasing where there is none
    # (at 22.05 kHz the distortion aliased at -36 dBc with a fixed 4x, at 48 kHz -33 dBc; at 44.1 kHz -13
    # dBc before any oversampling)
    for c in range(channels):
        assert _alias_dbc(y[c], sr, f0) <= -50.0
    # and what is kept is the shaper's own harmonics, as the ideal has them (channel 1: its own level's ideal)
    for c, level in enumerate([amp, 0.5 * amp][:channels]):
        ideal = _harmonics_dbc(_band_limited_tanh_sine(sr, f0, level, 24.0, n), sr, f0)
        got = _harmonics_dbc(y[c], sr, f0)
        audible = ideal > -60.0
        assert np.abs(got - ideal)[audible].max() < 0.1, (got, ideal)


@pytest.mark.parametrize("level_db", [-40.0, -20.0, -6.0])
@pytest.mark.parametrize("drive_db", [0.0, 12.0, 24.0, 40.0])
@pytest.mark.parametrize("signal", ["sine", "noise"])
def test_distortion_output_rms_matches_input(level_db, drive_db, signal):
    sr = 22050
    n = sr // 2  # the level match settles within its 100 ms window; the last 0.25 s are compared
    if signal == "sine":
        s = math.sqrt(2) * np.sin(2 * np.pi * 440 * np.arange(n) / sr)
    else:
        s = np.random.default_rng(0).standard_normal(n)
        s /= np.sqrt(np.mean(s**2))
    x = torch.tensor(s * 10 ** (level_db / 20))[None, None]
    y = fx.Distortion().process(x, sr, {"drive_db": drive_db, "mix": 100.0})[0, 0].numpy()
    steady = slice(sr // 4, None)
    assert abs(10 * np.log10(np.mean(y[steady] ** 2) / np.mean(x[0, 0, steady].numpy() ** 2))) < 1.0


@pytest.mark.parametrize("sr", [22050, 48000, 192000])
def test_predelay_gradient_matches_finite_differences(sr):
    rev = fx.NoiseReverb(seed=1, ir_length_s=0.25)
    x = torch.randn(1, 1, sr // 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def loss(pre):
        p = _reverb_params([0.4] * 10, mix=50.0)
        p["predelay_ms"] = pre
        return rev.process(x, sr, p).square().mean()

    for q in range(4):  # quarter-sample positions
        pre = torch.tensor([20.0 + q * 250.0 / sr], dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(loss(pre), pre)
        h = 1e-3 * 1000.0 / sr
        fd = (loss(pre.detach() + h) - loss(pre.detach() - h)) / (2 * h)
        assert float(g) == pytest.approx(float(fd), rel=1e-3)


def test_shelf_overshoot_at_most_1_db():
    sr = 48000
    eq = fx.ParametricEQ()
    for q in (0.1, 0.3, eq.param_specs[2].max):
        p = {s.name: s.neutral for s in eq.param_specs}
        p.update(low_shelf_gain_db=20.0, low_shelf_cutoff_freq=200.0, low_shelf_q_factor=q)
        x = torch.zeros(1, 1, sr, dtype=torch.float64)
        x[..., 0] = 1.0
        h = eq.process(x, sr, p)[0, 0].numpy()
        assert 20 * np.log10(np.abs(np.fft.rfft(h)).max()) <= 21.0  # was 34.7 dB at Q 6


def _textbook_gain(level, threshold, ratio, knee):
    over = level - threshold
    if 2 * over < -knee:
        return 0.0
    if 2 * abs(over) <= knee and knee > 0:
        return (1 / ratio - 1) * (over + knee / 2) ** 2 / (2 * knee)
    return (1 / ratio - 1) * over


@pytest.mark.parametrize("knee", [0.0, 12.0])
@pytest.mark.parametrize("attack,release", [(1.0, 50.0), (30.0, 1000.0), (100.0, 2000.0)])
def test_compressor_static_curve_on_steady_sines(knee, attack, release):
    sr = 22050
    comp = fx.Compressor()
    for level in (-36.0, -30.0, -24.0, -10.0):
        x = math.sqrt(2) * 10 ** (level / 20) * np.sin(2 * np.pi * 1000 * np.arange(3 * sr) / sr)
        p = dict(threshold_db=-30.0, ratio=4.0, attack_ms=attack, release_ms=release, makeup_gain_db=0.0, knee_db=knee)
        y = comp.process(torch.tensor(x)[None, None], sr, p)[0, 0].numpy()
        got = 10 * np.log10(np.mean(y[2 * sr :] ** 2) / np.mean(x[2 * sr :] ** 2))
        assert got == pytest.approx(_textbook_gain(level, -30.0, 4.0, knee), abs=0.5)


@pytest.mark.parametrize("sr", [48000, 192000])
def test_compressor_static_curve_stereo_at_higher_rates(sr):
    comp = fx.Compressor()
    for level in (-36.0, -24.0, -10.0):
        x = math.sqrt(2) * 10 ** (level / 20) * np.sin(2 * np.pi * 1000 * np.arange(2 * sr) / sr)
        x2 = np.stack([x, x])[None]  # two channels, each compressed to the curve
        p = dict(threshold_db=-30.0, ratio=4.0, attack_ms=30.0, release_ms=500.0, makeup_gain_db=0.0, knee_db=12.0)
        y = comp.process(torch.tensor(x2), sr, p)[0].numpy()
        for c in range(2):
            got = 10 * np.log10(np.mean(y[c, sr + sr // 2 :] ** 2) / np.mean(x[sr + sr // 2 :] ** 2))
            assert got == pytest.approx(_textbook_gain(level, -30.0, 4.0, 12.0), abs=0.5)


@pytest.mark.parametrize("channels", [1, 2])
def test_tail_kept_and_start_aligned(channels):
    sr = 8000
    chain = fx.Chain.from_spec("reverb")
    p = _reverb_params([1.5] * 10, mix=30.0, predelay_ms=10.0)
    chain.set_settings(chain[0].physical_to_unit(p)[0].double())
    x = 0.1 * torch.randn(1, channels, sr, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = chain.process(x, sr, tail=True)
    assert abs(y.shape[-1] - (sr + 1.51 * sr)) <= 2  # RT60 + pre-delay
    assert torch.allclose(y[..., :sr], chain.process(x, sr), atol=1e-9)
    # by the end it has decayed by more than 55 dB below the level at the input's end
    end = y[..., -400:].square().mean()
    at_stop = y[..., sr - 400 : sr].square().mean()
    assert 10 * math.log10(end / at_stop) < -55


def test_old_settings_still_load():
    chain = fx.Chain.from_spec("eq,compressor")
    d = chain.to_dict()
    old = {**d, "effects": [dict(e, params=dict(e["params"])) for e in d["effects"]]}
    del old["effects"][1]["params"]["knee_db"]
    old["effects"][0]["params"]["low_shelf_q_factor"] = 6.0
    loaded = fx.Chain.from_dict(old).to_dict()
    assert loaded["effects"][1]["params"]["knee_db"] == 0.0  # hard knee, as before
    assert loaded["effects"][0]["params"]["low_shelf_q_factor"] == pytest.approx(1 / math.sqrt(2))
    assert fx.Chain.from_dict(d).to_dict() == d


# ---------------------------------------------------------------------------------------------------------
# EQ ranges that fit the sample rate
# ---------------------------------------------------------------------------------------------------------

EQ_RATES = [22050, 32000, 44100, 48000, 96000, 192000]
_EQ_KINDS = {"low_shelf": "low", "band0": "peak", "band1": "peak", "band2": "peak", "band3": "peak", "high_shelf": "high"}


def _rbj(kind, gain_db, f0, q, sr):
    """RBJ cookbook biquad (b, a), float64, written here."""
    a_ = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / sr
    c, alpha = np.cos(w0), np.sin(w0) / (2 * q)
    if kind == "peak":
        return [1 + alpha * a_, -2 * c, 1 - alpha * a_], [1 + alpha / a_, -2 * c, 1 - alpha / a_]
    s = 1 if kind == "low" else -1  # the high shelf is the low shelf with cos -> -cos and b1, a1 negated
    sa = 2 * np.sqrt(a_) * alpha
    b = [a_ * ((a_ + 1) - s * (a_ - 1) * c + sa), 2 * s * a_ * ((a_ - 1) - s * (a_ + 1) * c),
         a_ * ((a_ + 1) - s * (a_ - 1) * c - sa)]
    a = [(a_ + 1) + s * (a_ - 1) * c + sa, -2 * s * ((a_ - 1) + s * (a_ + 1) * c), (a_ + 1) + s * (a_ - 1) * c - sa]
    return b, a


def _eq_reference_db(p, sr, freqs):
    import scipy.signal

    sos = [np.concatenate(_rbj(kind, p[f"{s}_gain_db"], p[f"{s}_cutoff_freq"], p[f"{s}_q_factor"], sr))
           for s, kind in _EQ_KINDS.items() if p[f"{s}_gain_db"] != 0]
    sos = np.array([row / row[3] for row in sos])
    return 20 * np.log10(np.abs(scipy.signal.sosfreqz(sos, worN=freqs, fs=sr)[1]))


@pytest.mark.parametrize("sr", EQ_RATES)
def test_eq_ranges_at_each_rate(sr):
    eq = fx.ParametricEQ()
    ranges = eq.param_ranges(sr)
    top = 0.46 * sr
    for s, kind in _EQ_KINDS.items():
        spec = next(p for p in eq.param_specs if p.name == f"{s}_cutoff_freq")
        lo, hi = ranges[spec.name]
        if spec.min >= top:  # the band does not exist at this rate: flat
            assert ranges[f"{s}_gain_db"] == (0.0, 0.0)
        else:
            assert (lo, hi) == (spec.min, min(spec.max, top))
            assert ranges[f"{s}_gain_db"] == (-20.0, 20.0)
    if sr >= 44100:  # every range whole: the rate-aware mapping is the specs' own
        assert ranges == eq.param_ranges()
    # the unit mapping at this rate covers exactly these ranges, ends included
    u = torch.tensor([[0.0] * 18, [1.0] * 18], dtype=torch.float64)
    phys = eq.unit_to_physical(u, sr)
    for name, (lo, hi) in ranges.items():
        assert phys[name].tolist() == pytest.approx([lo, hi], rel=1e-12)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("sr", EQ_RATES)
def test_eq_at_rate_matches_rbj_reference_with_live_frequency_gradients(sr, channels):
    eq = fx.ParametricEQ()
    g = torch.Generator().manual_seed(sr + channels)
    u = torch.rand(1, 18, generator=g, dtype=torch.float64)
    u[0, 1::3] = torch.tensor([0.1, 0.3, 0.5, 0.97, 1.0, 0.999])  # frequencies at and near the top of each range
    u.requires_grad_(True)
    phys = eq.unit_to_physical(u, sr)
    n = sr // 2
    x = torch.zeros(1, channels, n, dtype=torch.float64)
    x[:, :, 0] = 1.0
    y = eq.process(x, sr, phys)
    p = {k: float(v.detach()) for k, v in phys.items()}
    freqs = np.fft.rfftfreq(n, 1 / sr)
    keep = (freqs >= 30) & (freqs <= 0.46 * sr)
    ref = _eq_reference_db(p, sr, freqs[keep])
    for c in range(channels):
        got = 20 * np.log10(np.abs(np.fft.rfft(y[0, c].detach().numpy()))[keep])
        assert np.max(np.abs(got - ref)) < 0.05
    # every band that exists at this rate has a frequency gradient, also at the top of its range
    y.square().sum().backward()
    ranges = eq.param_ranges(sr)
    for i, s in enumerate(_EQ_KINDS):
        if ranges[f"{s}_gain_db"] != (0.0, 0.0) and abs(p[f"{s}_gain_db"]) > 1.0:
            assert abs(float(u.grad[0, 3 * i + 1])) > 0, s
        elif ranges[f"{s}_gain_db"] == (0.0, 0.0):  # a band the rate lacks: flat, and no gradient at all
            assert u.grad[0, 3 * i : 3 * i + 3].abs().max() == 0, s


def test_eq_band_the_rate_cannot_hold_is_refused_not_moved():
    sr = 22050
    chain = fx.Chain.from_spec("eq")
    d = chain.to_dict()
    d["effects"][0]["params"].update(band2_gain_db=12.0, band2_cutoff_freq=12000.0, band3_gain_db=12.0,
                                     band3_cutoff_freq=15000.0)
    with pytest.raises(ValueError, match=r"band2_cutoff_freq 12000 Hz .*22050 Hz audio can hold \(max 10143 Hz\)"):
        fx.Chain.from_dict(d, sample_rate=sr)
    loaded = fx.Chain.from_dict(d)  # no rate: loads (the file is valid at 44.1 kHz and up) ...
    x = torch.zeros(1, 1, 2048, dtype=torch.float64)
    with pytest.raises(ValueError, match="can hold"):
        loaded(x, sr)  # ... but 22.05 kHz audio is refused, not EQ'd at 10 kHz
    assert loaded(x, 48000).shape == x.shape
    eq = fx.ParametricEQ()
    with pytest.raises(ValueError, match="band3_cutoff_freq 15000 Hz"):
        eq.process(x, sr, {**d["effects"][0]["params"], "band2_cutoff_freq": 9000.0})


@pytest.mark.parametrize("sr", [22050, 32000, 48000])
def test_rate_aware_settings_round_trip(sr):
    chain = fx.Chain.from_spec("eq,reverb")
    u = torch.rand(chain.num_params, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    d = chain.to_dict(u, sample_rate=sr)
    eq_ranges = chain.param_ranges(sr)[0]
    for name, v in d["effects"][0]["params"].items():
        lo, hi = eq_ranges[name]
        assert lo * (1 - 1e-9) - 1e-12 <= v <= hi * (1 + 1e-9) + 1e-12, name
    # the file loads for that rate, round-trips exactly and processes as the optimizer's unit vector did
    loaded = fx.Chain.from_dict(d, sample_rate=sr)
    assert loaded.to_dict() == d and fx.Chain.from_dict(d).to_dict() == d
    assert chain.to_dict(loaded.settings_for(sr), sample_rate=sr) == d  # (a band the rate lacks: any unit, 0 dB)
    x = 0.1 * torch.randn(1, 2, 4000, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    ref = chain.process(x, sr, u)
    assert torch.allclose(loaded(x, sr), ref, atol=1e-8)
    assert torch.allclose(fx.Chain.from_dict(d)(x, sr), ref, atol=1e-8)  # loaded without a rate: same values
    if sr >= 44100:  # nothing limited: callers that pass no rate get the same dict
        assert chain.to_dict(u) == d
