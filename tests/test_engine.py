"""The Python API (Engine.apply, render) with the cheap embedder stand-in."""

import json

import jsonschema
import numpy as np
import pytest

from doubles import SpectralTestEmbedder
from signals import tone
from text2fx import rendering
from text2fx.engine import Engine, render
from text2fx.errors import InputError
from text2fx.report import schema

FAST = dict(steps=3, restarts=2, excerpts=2)


@pytest.fixture
def engine():
    return Engine(SpectralTestEmbedder(sample_rate=16000, window_seconds=1.0))


@pytest.mark.parametrize("sr", [8000, 44100, 192000])
@pytest.mark.parametrize("channels", [1, 2, 8])
def test_apply_keeps_format(engine, sr, channels):
    audio = tone(sr, 1.2, channels)
    r = engine.apply(audio, sr, "bright", chain="eq,reverb", **FAST)
    # the reverb's tail follows the input (0 frames for a bypass or a dry mix)
    assert r.audio.shape == (channels, audio.shape[1] + r.tail_frames) and r.audio.dtype == np.float32
    assert r.output_frames == r.audio.shape[1] and r.keep_length is False
    assert r.sample_rate == sr
    assert np.isfinite(r.audio).all() and np.abs(r.audio).max() <= 10 ** (-1 / 20) + 1e-6
    assert [e["type"] for e in r.params["effects"]] == ["eq", "reverb"]
    assert len(r.history) == r.optimization["steps_run"] <= 3


def test_report_is_valid_and_render_reproduces_output(engine):
    audio = tone(seconds=2.5)
    r = engine.apply(audio, 16000, "warm and bright", chain="eq,reverb", **FAST)
    report = json.loads(json.dumps(r.report()))
    jsonschema.validate(report, schema())
    assert report["prompt"] == "warm and bright" and report["text"] == "this sound is warm and bright"
    assert report["optimization"]["excerpts_s"] == sorted(report["optimization"]["excerpts_s"])
    assert len(report["optimization"]["excerpts_s"]) == 2
    again = render(audio, 16000, report)
    assert np.abs(again - r.audio).max() < 1e-4
    # the bare chain part works too
    assert np.abs(render(audio, 16000, report["chain"]) - r.audio).max() < 1e-4


def test_level_policy_never_clips(engine):
    loud = np.clip(tone(channels=1) * 4, -1, 1)
    r = engine.apply(loud, 16000, "loud", chain="eq", **FAST)
    assert np.abs(r.audio).max() <= 10 ** (-1 / 20) + 1e-6
    assert r.output_gain_db <= 0


def test_several_inputs_and_prompts_in_one_call(engine):
    a, b = tone(seed=1), tone(seed=2, sr=16000, seconds=1.1)
    results = engine.apply([a, b], 16000, ["bright", "dark", "airy"], chain="eq", **FAST)
    assert [(r.input["frames"], r.prompt) for r in results] == [
        (a.shape[1], "bright"), (a.shape[1], "dark"), (a.shape[1], "airy"),
        (b.shape[1], "bright"), (b.shape[1], "dark"), (b.shape[1], "airy"),
    ]
    # every text (prompt and anchor) encoded once, in one call
    assert len(engine.embedder.text_calls) == 1 and len(engine.embedder.text_calls[0]) == 6


def test_mixed_formats_are_grouped(engine):
    results = engine.apply([tone(16000, channels=1), tone(22050, channels=2)], [16000, 22050], "bright",
                           chain="eq", **FAST)
    assert [r.audio.shape[0] for r in results] == [1, 2]
    assert [r.sample_rate for r in results] == [16000, 22050]


def test_seed_reproducible(engine):
    audio = tone()
    r1 = engine.apply(audio, 16000, "bright", chain="eq,reverb", seed=3, **FAST)
    r2 = engine.apply(audio, 16000, "bright", chain="eq,reverb", seed=3, **FAST)
    assert r1.params == r2.params and np.array_equal(r1.audio, r2.audio)


def test_paper_preset_settings_reach_the_report(engine):
    r = engine.apply(tone(), 16000, "bright", chain="eq", preset="paper", steps=2)
    opt = r.report()["optimization"]
    assert (opt["preset"], opt["lr"], opt["init"], opt["loss_mode"], opt["restarts"]) == (
        "paper", 0.01, "random", "cosine", 1)


def test_precision_belongs_to_the_embedder_and_reaches_the_report(engine):
    r = engine.apply(tone(), 16000, "bright", chain="eq", steps=2)
    assert r.report()["optimization"]["precision"] == "float32"  # the stand-in declares none: float32
    embedder = SpectralTestEmbedder(sample_rate=16000, window_seconds=1.0)
    with pytest.raises(InputError, match="precision"):
        Engine(embedder, precision="bfloat16")
    embedder.precision = "bfloat16"
    assert Engine(embedder).embedder is embedder  # a given embedder keeps its precision
    r = Engine(embedder, precision="bfloat16").apply(tone(), 16000, "bright", chain="eq", steps=2)
    assert r.report()["optimization"]["precision"] == "bfloat16"
    jsonschema.validate(json.loads(json.dumps(r.report())), schema())


@pytest.mark.parametrize("spec", ["eq,reverb", "compressor,distortion,gain"])
def test_chunked_render_equals_whole_render(spec):
    import fx
    import torch

    chain = fx.Chain.from_spec(spec, seed=1)
    # long decays and slow release, so chunk borders would show if the context were too short
    u = torch.full((chain.num_params,), 0.9)
    audio = tone(sr=8000, seconds=30.0)
    whole, _ = rendering.render_array(chain, u, audio, 8000, chunk_seconds=100, keep_length=False)
    chunked, _ = rendering.render_array(chain, u, audio, 8000, chunk_seconds=7.0, keep_length=False)
    assert whole.shape == chunked.shape
    assert np.abs(whole - chunked).max() < 1e-4  # float32 FFTs of different sizes round differently


@pytest.mark.parametrize("audio, sr, message", [
    (np.zeros((1, 16000), np.float32), 16000, "silent"),
    (np.full((1, 16000), np.nan, np.float32), 16000, "NaN"),
    (np.full((1, 16000), np.inf, np.float32), 16000, "NaN or Inf"),
    (np.zeros((1, 0), np.float32), 16000, "zero-length"),
    (tone(seconds=0.05), 16000, "too short"),
    (tone(seconds=1.0).T, 16000, "(channels, samples)"),
    (np.zeros((2, 2, 16000), np.float32), 16000, "expected shape"),
    (tone(), 4000, "sample rate"),
    (tone(), 384000, "sample rate"),
])
def test_bad_audio_is_a_clear_error(engine, audio, sr, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        engine.apply(audio, sr, "bright", chain="eq", **FAST)


@pytest.mark.parametrize("prompt, message", [("", "empty prompt"), ("   ", "empty prompt"), ([], "no prompt")])
def test_empty_prompt(engine, prompt, message):
    with pytest.raises(InputError, match=message):
        engine.apply(tone(), 16000, prompt, chain="eq", **FAST)


def test_unknown_effect(engine):
    with pytest.raises(InputError, match="flanger"):
        engine.apply(tone(), 16000, "bright", chain="eq,flanger", **FAST)


def test_render_rejects_bad_params():
    with pytest.raises(InputError, match="no effect settings found"):
        render(tone(), 16000, {"effects": "nope"})
    with pytest.raises(InputError, match="no_such_param"):
        render(tone(), 16000, {"chain": "eq", "effects": [{"type": "eq", "params": {"no_such_param": 1.0}}]})


def test_package_level_render_stays_a_function_after_engine_import():
    import text2fx

    text2fx.Engine  # importing the engine must not shadow text2fx.render with a module
    assert callable(text2fx.render) and text2fx.render.__module__ == "text2fx.engine"
    audio = tone(seconds=0.5)
    import fx

    chain = fx.Chain.from_spec("gain")
    out = text2fx.render(audio, 16000, chain.to_dict(chain.neutral_unit()))
    assert np.allclose(out, audio)


def test_a_prompt_gets_the_same_result_alone_or_in_a_batch(engine):
    a, b = tone(seed=1), tone(seed=2)
    alone = engine.apply(a, 16000, "warm", chain="eq", steps=3, restarts=2)
    batched = engine.apply([b, a], 16000, ["dark", "warm"], chain="eq", steps=3, restarts=2)[3]
    assert batched.prompt == "warm"
    for (name, x), y in zip(alone.params["effects"][0]["params"].items(), batched.params["effects"][0]["params"].values()):
        assert x == pytest.approx(y, rel=1e-3, abs=1e-3), name


def test_max_batch_splits_pairs_without_changing_results():
    a, b = tone(seed=1, seconds=2.5), tone(seed=2, seconds=2.5)  # two 1 s excerpts each
    prompts = ["dark", "warm", "airy"]
    kwargs = dict(chain="eq", steps=4, restarts=2, excerpts=2, patience=None)  # 4 clips per pair
    whole = Engine(SpectralTestEmbedder(sample_rate=16000, window_seconds=1.0), max_batch=64)
    split = Engine(SpectralTestEmbedder(sample_rate=16000, window_seconds=1.0), max_batch=9)
    batches, seen = [], []
    real = split.embedder.embed_audio

    def counting(audio, *args, **kw):
        batches.append(audio.shape[0])
        return real(audio, *args, **kw)

    split.embedder.embed_audio = counting
    reports = []
    expected = whole.apply([a, b], 16000, prompts, **kwargs)
    got = split.apply([a, b], 16000, prompts, **kwargs, progress=lambda *p: reports.append(p))
    # 6 pairs of 4 clips, at most 2 pairs (8 clips) a batch: 3 batches of 4 steps and a final evaluation each
    assert max(batches) == 8 and batches.count(8) == 3 * (4 + 1)
    assert [(r.input["frames"], r.prompt) for r in got] == [(r.input["frames"], r.prompt) for r in expected]
    for x, y in zip(expected, got):
        assert x.optimization["loss_value"] == pytest.approx(y.optimization["loss_value"], abs=1e-5)
        for (name, u), v in zip(x.params["effects"][0]["params"].items(), y.params["effects"][0]["params"].values()):
            assert u == pytest.approx(v, rel=1e-4, abs=1e-4), name
    steps = [r[0] for r in reports]
    assert steps == sorted(steps) and steps[-1] == 12 and {r[1] for r in reports} == {12}


def test_max_batch_runs_a_larger_pair_alone_and_keeps_formats_apart():
    engine = Engine(SpectralTestEmbedder(sample_rate=16000, window_seconds=1.0), max_batch=3)
    seen = []
    real = engine.embedder.embed_audio
    engine.embedder.embed_audio = lambda audio, *a, **k: seen.append(audio.shape[0]) or real(audio, *a, **k)
    inputs = [tone(16000, seed=1), tone(22050, seed=2), tone(16000, seed=3)]
    results = engine.apply(inputs, [16000, 22050, 16000], ["dark", "warm"], chain="eq", steps=2, restarts=2,
                           excerpts=1, loss="best")
    # "best" runs 2 x 2 = 4 clips per pair, more than max_batch: every pair alone
    assert max(seen) == 4 and [r.sample_rate for r in results] == [16000, 16000, 22050, 22050, 16000, 16000]
    assert [r.prompt for r in results] == ["dark", "warm"] * 3
    assert {r.optimization["max_batch"] for r in results} == {3}


@pytest.mark.parametrize("bad", [0, -3, 2.5, None, True])
def test_max_batch_must_be_a_positive_integer(bad):
    with pytest.raises(InputError, match="max_batch"):
        Engine(SpectralTestEmbedder(), max_batch=bad)


def test_patience_none_disables_early_stop(engine):
    assert Engine.recipe("default", patience=None).patience is None
    r = engine.apply(tone(), 16000, "warm", chain="gain", steps=12, lr=1e-9, restarts=1, patience=None,
                     check_every=1)
    assert r.optimization["steps_run"] == 12


def test_empty_input_list_and_unsigned_audio(engine):
    with pytest.raises(InputError, match="no input"):
        engine.apply([], 16000, "warm")
    u8 = (128 + 100 * np.sin(np.arange(16000) / 5)).astype(np.uint8)
    r = engine.apply(u8, 16000, "warm", chain="gain", steps=2)
    assert abs(float(r.audio.mean())) < 0.01  # offset binary decoded around zero


# --- tails: a reverb rings on after the input, unless keep_length ---------------------------------------------


def reverb_at(value=0.9):
    import fx
    import torch

    chain = fx.Chain.from_spec("reverb", seed=1)
    return chain, torch.full((chain.num_params,), value)


def test_reverb_output_is_longer_by_its_tail():
    chain, u = reverb_at()
    audio = 0.2 * tone(sr=8000, seconds=1.0)
    tail = chain.tail_samples(8000, u)
    out, _ = rendering.render_array(chain, u, audio, 8000, keep_length=False)
    assert tail > 8000 and out.shape == (2, audio.shape[1] + tail)


def test_keep_length_keeps_the_input_length():
    chain, u = reverb_at()
    audio = 0.2 * tone(sr=8000, seconds=1.0)
    out, _ = rendering.render_array(chain, u, audio, 8000, keep_length=True)
    assert out.shape == audio.shape


def test_the_output_with_its_tail_starts_sample_aligned_with_the_input():
    chain, u = reverb_at()
    audio = 0.2 * tone(sr=8000, seconds=1.0)
    long, gain_long = rendering.render_array(chain, u, audio, 8000, keep_length=False)
    short, gain_short = rendering.render_array(chain, u, audio, 8000, keep_length=True)
    assert gain_long == gain_short == 0.0
    assert np.abs(long[:, : audio.shape[1]] - short).max() < 1e-5


def test_the_tail_has_decayed_by_its_end():
    chain, u = reverb_at()
    audio = 0.2 * tone(sr=8000, seconds=1.0)
    out, _ = rendering.render_array(chain, u, audio, 8000, keep_length=False)
    last = np.abs(out[:, -400:]).max()  # the last 50 ms
    assert 20 * np.log10(last / np.abs(out).max()) < -50


def test_chunked_file_rendering_with_a_tail_equals_the_in_memory_one(tmp_path):
    import soundfile as sf

    from text2fx import audio_io

    chain, u = reverb_at()
    audio = 0.2 * tone(sr=8000, seconds=3.0)
    sf.write(tmp_path / "in.wav", audio.T, 8000, subtype="FLOAT")
    gain = rendering.render_file(chain, u, audio_io.probe(tmp_path / "in.wav"), tmp_path / "out.wav", "WAV",
                                 "FLOAT", chunk_seconds=0.7, keep_length=False)
    whole, whole_gain = rendering.render_array(chain, u, audio, 8000, keep_length=False)
    written, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    assert gain == whole_gain and written.T.shape == whole.shape
    assert np.abs(written.T - whole).max() < 1e-4


def test_a_bypassed_render_has_no_tail():
    chain, u = reverb_at()
    assert rendering.tail_frames(None, u, 8000) == 0
    audio = 0.2 * tone(sr=8000, seconds=1.0)
    out, _ = rendering.render_array(None, u, audio, 8000, keep_length=False)
    assert np.array_equal(out, audio)


def test_render_keeps_the_tail_unless_keep_length():
    chain, u = reverb_at()
    audio = 0.2 * tone(sr=8000, seconds=1.0)
    settings = chain.to_dict(u)
    assert render(audio, 8000, settings).shape == (2, audio.shape[1] + chain.tail_samples(8000, u))
    assert render(audio, 8000, settings, keep_length=True).shape == audio.shape
    with pytest.raises(InputError, match="keep_length must be True or False, got 1"):
        render(audio, 8000, settings, keep_length=1)


def test_apply_reports_the_tail_and_keep_length(engine):
    audio = tone(seconds=1.5)
    r = engine.apply(audio, 16000, "bright", chain="reverb", **FAST)
    out = json.loads(json.dumps(r.report()))["output"]
    assert not r.bypassed and r.tail_frames > 0
    assert out["keep_length"] is False and out["tail_frames"] == r.tail_frames
    assert out["frames"] == r.audio.shape[1] == audio.shape[1] + r.tail_frames


def test_apply_with_keep_length_keeps_the_input_length(engine):
    audio = tone(seconds=1.5)
    r = engine.apply(audio, 16000, "bright", chain="reverb", keep_length=True, **FAST)
    out = r.report()["output"]
    assert r.audio.shape == audio.shape
    assert (out["keep_length"], out["frames"], out["tail_frames"]) == (True, audio.shape[1], 0)


def test_apply_refuses_a_keep_length_that_is_not_a_bool(engine):
    with pytest.raises(InputError, match="keep_length must be True or False, got 'yes'"):
        engine.apply(tone(), 16000, "bright", chain="reverb", keep_length="yes", **FAST)


def test_reports_from_before_tails_stay_valid(engine):
    report = json.loads(json.dumps(engine.apply(tone(), 16000, "bright", chain="eq", **FAST).report()))
    for key in ("keep_length", "frames", "tail_frames"):
        del report["output"][key]
    jsonschema.validate(report, schema())
