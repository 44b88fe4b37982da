"""`benchmarks/quality.py`: its independent measures agree with what they measure, and the known-answer guard
(`known --quick`) passes: the optimizer with the feature embedder finds settings near known ones."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["quality_bench"] = module
    spec.loader.exec_module(module)
    return module


def test_eq_curves_written_out_agree_with_fx(quality):
    import fx
    from fx.eq import eq_frequency_response

    chain = fx.Chain.from_spec("eq")
    rng = np.random.default_rng(0)
    freqs = np.geomspace(*quality.EQ_RANGE_HZ, quality.EQ_POINTS)
    for sr in (44100, 48000):
        for _ in range(3):
            params = chain.to_dict(torch.tensor(rng.uniform(0, 1, chain.num_params)), sr)["effects"][0]["params"]
            f, mag = eq_frequency_response(params, sr, n_freqs=8000, f_min=20.0)
            reference = np.interp(np.log(freqs), np.log(f.numpy()), mag.numpy())
            assert np.abs(quality.eq_curve_db(params, sr) - reference).max() < 0.05


def test_setting_errors_are_zero_for_the_same_settings_and_measure_differences(quality):
    import fx

    chain = fx.Chain.from_spec("eq,reverb")
    u = torch.full((chain.num_params,), 0.5)
    same = chain.to_dict(u, 48000)["effects"]
    errors = quality.setting_errors(same, same, 48000)
    assert errors["eq_rms_db"] == errors["eq_max_db"] == errors["rt60_err_oct"] == errors["mix_err_db"] == 0
    other = json.loads(json.dumps(same))
    for k in range(10):
        other[1]["params"][f"band{k}_rt60_s"] *= 2  # an octave longer everywhere
    other[0]["params"]["low_shelf_gain_db"] += 6.0
    errors = quality.setting_errors(same, other, 48000)
    assert errors["rt60_err_oct"] == pytest.approx(1.0)
    assert 0 < errors["eq_shape_rms_db"] <= errors["eq_rms_db"] <= errors["eq_max_db"] <= 6.0 + 1e-6


def test_wet_dry_level_follows_the_equal_power_law(quality):
    assert quality.wet_dry_db(50.0) == pytest.approx(0.0, abs=1e-9)
    assert quality.wet_dry_db(0.0) == -quality.WET_DRY_LIMIT_DB
    m = 25.0
    assert quality.wet_dry_db(m) == pytest.approx(20 * math.log10(math.tan(math.pi * m / 200)))


def test_early_stop_replay_matches_the_optimizer(quality):
    """The time-to-quality table replays each preset's early stop from a long run's losses: the replay must
    stop where the optimizer itself stops."""
    import fx
    from doubles import SpectralTestEmbedder

    from text2fx.optimize import optimize
    from text2fx.recipe import Recipe

    embedder = SpectralTestEmbedder()
    chain = fx.Chain.from_spec("eq")
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 1, 1, 4000)).astype(np.float32) * 0.1)
    target = embedder.embed_audio(chain.process(x[0], 16000, torch.full((1, chain.num_params), 0.7)), 16000)
    recipe = Recipe(steps=60, lr=0.05, restarts=2, excerpts=1, patience=6, check_every=3, min_delta=1e-2)
    (stopped,) = optimize(chain, embedder, x, 16000, [0], target, target, recipe, seed=0)
    assert stopped.steps_run < recipe.steps  # the early stop did happen
    long = Recipe(steps=60, lr=0.05, restarts=2, excerpts=1, patience=None, check_every=3, min_delta=1e-2)
    (full,) = optimize(chain, embedder, x, 16000, [0], target, target, long, seed=0)
    histories = np.array(full.histories).T
    assert quality.early_stop_step(histories, 6, 1e-2, 3, 60) == stopped.steps_run


def test_study_measures_move_the_documented_way(quality):
    from scipy.signal import fftconvolve

    sr = quality.SAMPLE_RATE
    rng = np.random.default_rng(0)
    t = np.arange(2 * sr) / sr
    bursts = rng.standard_normal(t.size) * ((t % 0.5) < 0.1)  # dry: 100 ms noise bursts, 400 ms of silence
    decays = []
    for rt60 in (0.3, 0.8):
        ir = rng.standard_normal(sr) * 10 ** (-3 * np.arange(sr) / sr / rt60)
        wet = fftconvolve(bursts, ir)[: t.size]
        decays.append(quality.acoustic_measures(bursts + wet / np.abs(wet).max(), sr)["decay"])
    assert quality.acoustic_measures(bursts, sr)["decay"] < decays[0] < decays[1]
    x = quality.music_clip(2.0)
    base = quality.acoustic_measures(x, sr)
    squashed = np.tanh(8 * x) / 2
    assert quality.acoustic_measures(squashed, sr)["crest"] < base["crest"]
    bright = np.diff(x, prepend=0.0)  # a first difference: +6 dB/octave
    assert quality.acoustic_measures(bright, sr)["centroid"] > base["centroid"]
    assert quality.expected_moves("coming through an old telephone") == [("telephone_share", 1)]
    assert sorted(quality.expected_moves("coming from a small cavern with a muffled echo")) == [
        ("centroid", -1), ("decay", 1)]
    assert quality.expected_moves("warm and full-bodied") == []


def test_random_preset_gives_random_settings_without_optimizing():
    from doubles import SpectralTestEmbedder

    from text2fx.engine import Engine
    from text2fx.errors import InputError, UsageError
    from text2fx.options import JobOptions
    from text2fx.recipe import PRESETS, Recipe

    assert PRESETS["random"].steps == 0
    engine = Engine(SpectralTestEmbedder())
    x = np.random.default_rng(1).standard_normal((1, 16000)).astype(np.float32) * 0.1
    a = engine.apply(x, 16000, ["bright", "dark"], chain="eq", preset="random", seed=3)
    b = engine.apply(x, 16000, "bright", chain="eq", preset="random", seed=3)
    assert a[0].optimization["steps_run"] == 0 and not a[0].bypassed and not a[1].bypassed
    assert a[0].params == b.params  # seeded, per prompt, whatever shares the batch
    assert a[0].params != a[1].params
    assert not np.allclose(a[0].audio, x)  # processed, not the input
    # 0 steps is the random preset's alone: asked for as a change it is refused, as before
    with pytest.raises(InputError, match="steps must be at least 1"):
        Recipe.from_preset("fast", steps=0)
    with pytest.raises(UsageError, match="steps must be at least 1"):
        JobOptions(prompts="x", recipe_changes={"steps": 0})


@pytest.mark.slow
def test_known_answer_guard_passes(quality, tmp_path, capsys):
    code = quality.main(["known", "--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "known-answer guard passed" in out
    rows = [json.loads(line) for line in (tmp_path / "known.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["embedder"] == "features" for r in rows)
    assert (tmp_path / "known-quick.md").exists()
    # resumable: a second run finds every item done and measures nothing again
    assert quality.main(["known", "--quick", "--out", str(tmp_path)]) == 0
    assert len((tmp_path / "known.jsonl").read_text().splitlines()) == 4
