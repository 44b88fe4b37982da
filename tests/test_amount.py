"""`--amount` / `amount=`: how much of the found effect is applied.

The EQ claims are checked on what the renderer actually outputs (an impulse through `text2fx.render`)
against RBJ biquads written out here from the Audio EQ Cookbook and evaluated with scipy, not against fx's
own filter code.
"""

import json
import math

import jsonschema
import numpy as np
import pytest
import soundfile as sf
from scipy import signal

import text2fx.clap
import text2fx.clap.files
from doubles import SpectralTestEmbedder
from signals import tone
from text2fx import amount as amount_
from text2fx.cli import main
from text2fx.engine import Engine, render
from text2fx.errors import UsageError
from text2fx.report import schema

SR = 48000


@pytest.fixture
def engine():
    return Engine(SpectralTestEmbedder(sample_rate=16000, window_seconds=1.0))


@pytest.fixture
def double_cli(monkeypatch):
    """The command with the spectral test double in place of CLAP (no model files, no tokenizer)."""
    monkeypatch.setattr(text2fx.clap.files, "resolve_model_files",
                        lambda *a, **k: text2fx.clap.files.ModelFiles("double.pt", "double-tokenizer"))
    monkeypatch.setattr(text2fx.clap, "check_text_length", lambda *a, **k: None)
    monkeypatch.setattr(text2fx.clap, "ClapEmbedder",
                        lambda *a, **k: SpectralTestEmbedder(sample_rate=16000, window_seconds=1.0))


def eq_settings(gains, freqs=(100.0, 300.0, 2500.0, 9000.0, 14000.0, 8000.0), qs=(0.7, 1.0, 1.5, 2.0, 1.0, 0.7)):
    sections = ("low_shelf", "band0", "band1", "band2", "band3", "high_shelf")
    params = {}
    for s, g, f, q in zip(sections, gains, freqs, qs):
        params.update({f"{s}_gain_db": g, f"{s}_cutoff_freq": f, f"{s}_q_factor": q})
    return {"chain": "eq", "seed": 0, "effects": [{"type": "eq", "params": params}]}


def rbj_sos(settings, fs=SR):
    """Second-order sections of the six bands, from the Audio EQ Cookbook (R. Bristow-Johnson)."""
    p = settings["effects"][0]["params"]
    rows = []
    for s, kind in (("low_shelf", "low"), ("band0", "peak"), ("band1", "peak"), ("band2", "peak"),
                    ("band3", "peak"), ("high_shelf", "high")):
        a_ = 10 ** (p[f"{s}_gain_db"] / 40)
        w0 = 2 * math.pi * p[f"{s}_cutoff_freq"] / fs
        alpha, c = math.sin(w0) / (2 * p[f"{s}_q_factor"]), math.cos(w0)
        if kind == "peak":
            b = [1 + alpha * a_, -2 * c, 1 - alpha * a_]
            a = [1 + alpha / a_, -2 * c, 1 - alpha / a_]
        else:
            k = 2 * math.sqrt(a_) * alpha
            sign = 1 if kind == "low" else -1
            b = [a_ * ((a_ + 1) - sign * (a_ - 1) * c + k), sign * 2 * a_ * ((a_ - 1) - sign * (a_ + 1) * c),
                 a_ * ((a_ + 1) - sign * (a_ - 1) * c - k)]
            a = [(a_ + 1) + sign * (a_ - 1) * c + k, -sign * 2 * ((a_ - 1) + sign * (a_ + 1) * c),
                 (a_ + 1) + sign * (a_ - 1) * c - k]
        rows.append([*(np.array(b) / a[0]), 1.0, *(np.array(a[1:]) / a[0])])
    return np.array(rows)


def rendered_db(settings, amount=None, n=SR // 2):
    """The magnitude response (dB) of what `text2fx.render` does to a small impulse, on the rfft grid."""
    x = np.zeros((1, n), dtype=np.float32)
    x[0, 0] = 1e-3  # small: the level policy must not scale the output
    y = render(x, SR, settings, keep_length=True, amount=amount)
    return 20 * np.log10(np.abs(np.fft.rfft(y[0].astype(np.float64) / 1e-3)))


def reference_db(settings, n=SR // 2):
    freqs = np.fft.rfftfreq(n, 1 / SR)
    _, h = signal.sosfreqz(rbj_sos(settings), worN=freqs, fs=SR)
    return 20 * np.log10(np.abs(h))


GAINS = (6.0, -9.0, 12.0, -6.0, 4.0, -5.0)


def test_the_renderer_is_the_cookbook_eq_at_amount_one():
    settings = eq_settings(GAINS)
    assert np.abs(rendered_db(settings) - reference_db(settings)).max() < 0.01


def test_amount_one_half_is_the_eq_with_every_band_gain_halved_in_db():
    found = eq_settings(GAINS)
    half = rendered_db(found, amount=0.5)
    assert np.abs(half - reference_db(eq_settings([g / 2 for g in GAINS]))).max() < 0.01
    # frequencies and Q stay where they were found
    scaled, clamped = amount_.scale(found, 0.5, amount_.chain_specs("eq"))
    params, before = scaled["effects"][0]["params"], found["effects"][0]["params"]
    assert clamped == []
    for name, value in before.items():
        assert params[name] == (value / 2 if name.endswith("gain_db") else value)


@pytest.mark.parametrize("section, freq, q", [("band1", 2500.0, 1.0), ("low_shelf", 100.0, 0.7),
                                                 ("high_shelf", 8000.0, 0.7)])
def test_half_the_amount_is_half_the_db_at_a_band_centre_and_on_a_shelf_plateau(section, freq, q):
    sections = ("low_shelf", "band0", "band1", "band2", "band3", "high_shelf")
    gains = [12.0 if s == section else 0.0 for s in sections]
    freqs = [freq if s == section else f for s, f in zip(sections, (100.0, 300.0, 2500.0, 9000.0, 14000.0, 8000.0))]
    settings = eq_settings(gains, freqs=freqs, qs=[q] * 6)
    full, half = rendered_db(settings), rendered_db(settings, amount=0.5)
    bins = np.fft.rfftfreq(SR // 2, 1 / SR)
    where = {"band1": np.argmin(np.abs(bins - freq)), "low_shelf": 1, "high_shelf": len(bins) - 2}[section]
    assert full[where] == pytest.approx(12.0, abs=0.1)
    assert half[where] == pytest.approx(full[where] / 2, abs=0.02)
    # elsewhere the curve is the cookbook curve of the halved gain, not half the dB: one biquad's flanks are
    # not proportional to its gain. A +12 dB band departs from half by 0.12 dB at most (any Q; 0.48 dB for a
    # +20 dB one), measured on this cookbook-exact renderer:
    assert np.abs(half - full / 2).max() < 0.13


def test_a_negative_amount_inverts_the_eq_curve_at_every_frequency():
    settings = eq_settings(GAINS)
    # an RBJ peak or shelf of -G dB is the reciprocal of the one of +G dB
    assert np.abs(rendered_db(settings, amount=-1) + rendered_db(settings)).max() < 0.01


def test_above_one_extrapolates_and_clamps_to_the_range_and_says_which():
    found = eq_settings(GAINS)
    scaled, clamped = amount_.scale(found, 2.0, amount_.chain_specs("eq"))
    params = scaled["effects"][0]["params"]
    assert params["band0_gain_db"] == -18.0 and params["low_shelf_gain_db"] == 12.0
    assert params["band1_gain_db"] == 20.0  # 24 dB asked, the range ends at 20
    assert clamped == [{"effect": 0, "type": "eq", "param": "band1_gain_db", "value": 20.0, "unclamped": 24.0}]


def test_each_kind_of_parameter_moves_in_its_own_space():
    specs = amount_.chain_specs("compressor,reverb,distortion,gain")
    settings = {"chain": "compressor,reverb,distortion,gain", "seed": 0, "effects": [
        {"type": "compressor", "params": {"threshold_db": -30.0, "ratio": 4.0, "attack_ms": 5.0,
                                          "release_ms": 200.0, "makeup_gain_db": 6.0, "knee_db": 3.0}},
        {"type": "reverb", "params": {**{f"band{k}_rt60_s": 2.0 + k / 10 for k in range(10)},
                                      **{f"band{k}_gain_db": -3.0 for k in range(10)}, "predelay_ms": 20.0,
                                      "mix": 40.0}},
        {"type": "distortion", "params": {"drive_db": 20.0, "mix": 50.0}},
        {"type": "gain", "params": {"gain_db": -6.0}},
    ]}
    import fx

    fx.Chain.from_dict(settings)  # a complete, valid settings dict
    half, _ = amount_.scale(settings, 0.5, specs)
    comp, verb, dist, gain = [e["params"] for e in half["effects"]]
    assert (comp["threshold_db"], comp["makeup_gain_db"]) == (-15.0, 3.0)  # dB: linearly from 0 dB
    assert comp["ratio"] == pytest.approx(2.0, rel=1e-12)  # a ratio: geometrically from 1:1
    assert (comp["attack_ms"], comp["release_ms"], comp["knee_db"]) == (5.0, 200.0, 3.0)  # shape: kept
    assert verb["mix"] == 20.0 and verb["predelay_ms"] == 20.0 and verb["band3_rt60_s"] == 2.3
    assert verb["band0_gain_db"] == -3.0  # the wet's tone: kept (the same room, turned down)
    assert (dist["drive_db"], dist["mix"]) == (10.0, 25.0) and gain["gain_db"] == -3.0
    zero, _ = amount_.scale(settings, 0.0, specs)
    for before, after, (_, effect_specs) in zip(settings["effects"], zero["effects"], specs):
        for spec in effect_specs:
            expected = spec.neutral if spec.amount == "move" else before["params"][spec.name]
            assert after["params"][spec.name] == expected, spec.name


@pytest.mark.parametrize("value", [2.5, -2.01, float("nan"), float("inf"), "half", True, None])
def test_amounts_out_of_range_or_not_numbers_are_refused_in_one_line(engine, value):
    with pytest.raises(UsageError) as e:
        engine.apply(tone(), 16000, "bright", chain="eq", steps=1, amount=value)
    assert "amount" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("chain, effect", [("reverb", "reverb"), ("eq,compressor", "compressor"),
                                           ("distortion", "distortion")])
def test_a_negative_amount_is_refused_for_effects_that_cannot_be_inverted(engine, chain, effect):
    calls = []
    engine.embedder.embed_audio = lambda *a, **k: calls.append(1)  # nothing may run before the refusal
    with pytest.raises(UsageError, match=f"{effect} cannot be inverted"):
        engine.apply(tone(), 16000, "bright", chain=chain, steps=1, amount=-0.5)
    assert calls == []


def test_a_negative_amount_is_refused_by_render_too():
    settings = {"chain": "reverb", "seed": 0, "effects": [{"type": "reverb", "params": {
        **{f"band{k}_rt60_s": 1.0 for k in range(10)}, **{f"band{k}_gain_db": 0.0 for k in range(10)},
        "predelay_ms": 0.0, "mix": 30.0}}]}
    with pytest.raises(UsageError, match="reverb cannot be inverted"):
        render(tone(), 16000, settings, amount=-1)


def test_amount_zero_gives_the_input_back_bit_exact_and_records_the_found_settings(engine):
    hot = tone(seed=3)
    hot *= np.float32(0.999 / np.abs(hot).max())  # above -1 dBFS: a processed output would be scaled down
    found = engine.apply(hot, 16000, "bright", chain="eq,reverb", steps=4, restarts=1, seed=1)
    dry = engine.apply(hot, 16000, "bright", chain="eq,reverb", steps=4, restarts=1, seed=1, amount=0)
    assert not found.bypassed
    assert dry.audio.dtype == np.float32 and np.array_equal(dry.audio, hot)  # no tail, no level policy
    report = json.loads(json.dumps(dry.report()))
    jsonschema.validate(report, schema())
    assert report["amount"]["value"] == 0 and report["amount"]["found"] == found.params
    assert report["output"]["tail_frames"] == 0 and report["output"]["gain_db"] == 0
    assert report["chain"]["effects"][1]["params"]["mix"] == 0.0  # the settings at amount 0
    assert report["turns"][-1]["amount"] == 0 and report["turns"][-1]["settings"] == report["chain"]
    # render: the saved amount by default, any other amount of the found settings on request
    assert np.array_equal(render(hot, 16000, report), hot)
    assert np.array_equal(render(hot, 16000, found.report(), amount=0), hot)
    assert np.array_equal(render(hot, 16000, report, amount=1), found.audio)
    assert np.array_equal(render(hot, 16000, found.report()), found.audio)


def test_a_half_amount_run_reports_both_settings_and_renders_again(engine):
    half = engine.apply(tone(), 16000, "bright", chain="eq", steps=4, restarts=1, seed=2, amount=0.5)
    found = half.amount["found"]["effects"][0]["params"]
    for name, value in half.params["effects"][0]["params"].items():
        assert value == (pytest.approx(found[name] / 2, abs=1e-11) if name.endswith("gain_db") else found[name])
    assert np.array_equal(render(tone(), 16000, half.report()), half.audio)
    jsonschema.validate(json.loads(json.dumps(half.report())), schema())


def test_a_legacy_report_or_bare_chain_renders_at_an_amount_of_its_own_settings():
    settings = eq_settings(GAINS)
    x = tone(sr=SR, seconds=0.3)
    assert np.array_equal(render(x, SR, settings, amount=0.5),
                          render(x, SR, amount_.scale(settings, 0.5, amount_.chain_specs("eq"))[0]))


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_the_command_at_amount_zero_writes_the_input_samples(tmp_path, double_cli, subtype, capsys):
    src = tmp_path / "in.wav"
    x = tone(sr=16000, seconds=1.2, channels=2).T
    x *= 0.999 / np.abs(x).max()
    sf.write(src, x, 16000, subtype=subtype)
    out = tmp_path / "dry.wav"
    code = main([str(src), "bright", "--chain", "eq,reverb", "--steps", "2", "--restarts", "1", "--excerpts", "1",
                 "--amount", "0", "-o", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "amount 0 of the found settings" in printed.out
    dtype = "float32" if subtype == "FLOAT" else "int32"
    assert np.array_equal(sf.read(out, dtype=dtype)[0], sf.read(src, dtype=dtype)[0])
    assert sf.info(out).subtype == subtype
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["amount"]["value"] == 0

    again = tmp_path / "again.wav"
    assert main(["render", str(src), str(out.with_suffix(".json")), "-o", str(again), "--quiet"]) == 0
    assert np.array_equal(sf.read(again, dtype=dtype)[0], sf.read(src, dtype=dtype)[0])
    full = tmp_path / "full.wav"
    assert main(["render", str(src), str(out.with_suffix(".json")), "-o", str(full), "--amount", "1", "-q"]) == 0
    found = json.loads(full.with_suffix(".json").read_text()) if full.with_suffix(".json").exists() else None
    assert found is None  # render writes audio only
    assert sf.info(full).frames >= sf.info(src).frames  # the found settings, with the reverb's tail
    assert not np.array_equal(sf.read(full, dtype=dtype)[0][: len(x)], sf.read(src, dtype=dtype)[0])


@pytest.mark.parametrize("args, words", [
    (["--amount", "3"], ["amount must be between -2 and 2"]),
    (["--amount", "-1", "--chain", "eq,reverb"], ["reverb cannot be inverted"]),
    (["--amount", "x"], ["--amount"]),
])
def test_the_command_refuses_bad_amounts_in_one_line_before_any_model_load(tmp_path, monkeypatch, capsys, args,
                                                                           words):
    monkeypatch.setattr(text2fx.clap, "ClapEmbedder", lambda *a, **k: pytest.fail("the model was loaded"))
    src = tmp_path / "in.wav"
    sf.write(src, tone().T, 16000)
    code = main([str(src), "bright", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("text2fx: error:") and "\n" not in err, err
    for w in words:
        assert w in err, err


def test_render_amount_zero_and_out_of_range_from_the_command(tmp_path, capsys):
    src = tmp_path / "in.wav"
    sf.write(src, tone(sr=SR, seconds=0.4).T, SR, subtype="PCM_16")
    params = tmp_path / "eq.json"
    params.write_text(json.dumps(eq_settings(GAINS)))
    assert main(["render", str(src), str(params), "-o", str(tmp_path / "z.wav"), "--amount", "0", "-q"]) == 0
    assert np.array_equal(sf.read(tmp_path / "z.wav", dtype="int16")[0], sf.read(src, dtype="int16")[0])
    assert main(["render", str(src), str(params), "-o", str(tmp_path / "b.wav"), "--amount", "2.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "amount must be between -2 and 2" in err and "\n" not in err
    assert main(["render", str(src), str(params), "-o", str(tmp_path / "n.wav"), "--amount", "-1"]) == 0
    y = sf.read(tmp_path / "n.wav", dtype="float32")[0]
    assert y.shape == sf.read(src, dtype="float32")[0].shape and not np.array_equal(y, sf.read(src, dtype="float32")[0])


def test_render_at_an_amount_above_one_names_the_clamped_parameters(tmp_path, capsys):
    src = tmp_path / "in.wav"
    sf.write(src, 0.05 * tone(sr=SR, seconds=0.3).T, SR, subtype="FLOAT")
    params = tmp_path / "eq.json"
    params.write_text(json.dumps(eq_settings(GAINS)))
    assert main(["render", str(src), str(params), "-o", str(tmp_path / "more.wav"), "--amount", "2"]) == 0
    printed = capsys.readouterr().out
    assert "amount 2, clamped: band1_gain_db" in printed
    doubled = eq_settings([max(-20.0, min(20.0, 2 * g)) for g in GAINS])
    x = sf.read(src, dtype="float32", always_2d=True)[0].T
    assert np.array_equal(sf.read(tmp_path / "more.wav", dtype="float32", always_2d=True)[0].T, render(x, SR, doubled))
