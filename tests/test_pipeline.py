"""The job pipeline through the Python API, with the cheap embedder stand-in: the bypass, file jobs, saving
results, and the defects a new user hit (each refused before any work, with one line)."""

import json
import math

import jsonschema
import numpy as np
import pytest
import soundfile as sf
import torch

from doubles import SpectralTestEmbedder
from signals import tone
from text2fx import audio_io, rendering
from text2fx.engine import Engine, render
from text2fx.errors import InputError, OutputError, Text2FXError, UsageError
from text2fx.report import BYPASS_NOTE, schema


@pytest.fixture
def embedder():
    return SpectralTestEmbedder(sample_rate=16000, window_seconds=1.0)


@pytest.fixture
def engine(embedder):
    return Engine(embedder)


def pin_text_to_input(embedder, audio, prompt):
    """Make the prompt's text embedding the input's own audio embedding: any change sounds farther away."""
    emb = embedder.embed_audio(torch.from_numpy(audio)[None], 16000)[0]
    embedder.text_overrides[f"this sound is {prompt}"] = emb


@pytest.mark.parametrize("loss", ["cosine", "best"])
def test_a_run_that_cannot_beat_the_input_returns_it_as_bypass(engine, embedder, loss):
    audio = tone()
    pin_text_to_input(embedder, audio, "as it is")
    r = engine.apply(audio, 16000, "as it is", chain="eq,reverb", steps=4, restarts=3, loss=loss)
    import fx

    chain = fx.Chain.from_spec("eq,reverb")
    assert r.bypassed and r.report()["bypassed"] is True
    assert r.params["effects"] == chain.to_dict(chain.neutral_unit(), sample_rate=16000)["effects"]
    assert r.similarity_after == r.similarity_before
    assert np.array_equal(r.audio, audio)  # the input itself, not the chain at neutral settings
    jsonschema.validate(json.loads(json.dumps(r.report())), schema())


def test_a_bypassed_result_has_no_tail(engine, embedder):
    audio = tone()
    pin_text_to_input(embedder, audio, "as it is")
    r = engine.apply(audio, 16000, "as it is", chain="reverb", steps=4, restarts=2)
    out = r.report()["output"]
    assert r.bypassed and r.audio.shape == audio.shape
    assert (out["keep_length"], out["frames"], out["tail_frames"]) == (False, audio.shape[1], 0)


def test_an_improving_run_is_not_bypassed_and_never_ends_below_the_input(engine):
    for seed in range(3):
        r = engine.apply(tone(seed=seed), 16000, "bright", chain="eq", steps=6, restarts=2, seed=seed)
        assert r.similarity_after >= r.similarity_before
    assert not r.bypassed and r.report()["bypassed"] is False


def test_the_command_prints_the_bypass_in_one_line():
    assert "\n" not in BYPASS_NOTE and "bypass" in BYPASS_NOTE


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(chain=""), UsageError, "name effects separated by commas"),
    (dict(steps=2.5), UsageError, "steps must be an integer, got 2.5"),
    (dict(prompt=None), UsageError, "prompt must be a string or a list of strings"),
    (dict(sample_rate=None), UsageError, "sample_rate must be a whole number of Hz, got None"),
    (dict(sample_rate=44100.7), UsageError, "sample_rate must be a whole number of Hz, got 44100.7"),
    (dict(audio=tone().astype(np.complex64)), InputError, "expected real numbers, got dtype complex64"),
    (dict(audio=[[0.1] * 4000, [0.2] * 4000]), InputError, "numpy array or torch tensor"),
    (dict(audio=[0.1] * 4000), InputError, "numpy array or torch tensor"),
    (dict(seed=2**64), UsageError, "seed must fit in 64 bits"),
    (dict(template="{prompt} {x}"), UsageError, "only placeholder"),
])
def test_bad_arguments_are_refused_before_any_work(engine, embedder, kwargs, error, message):
    call = dict(audio=tone(), sample_rate=16000, prompt="warm", chain="eq")
    call.update(kwargs)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        engine.apply(**call)
    assert embedder.text_calls == []  # nothing reached the model


def test_a_float_sample_rate_that_is_whole_is_accepted(engine):
    assert engine.apply(tone(), 16000.0, "warm", chain="gain", steps=1).sample_rate == 16000


def test_an_unavailable_device_fails_at_once_without_loading_a_model():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    # the checkpoint does not exist: had the engine looked for the model first, that would be the error
    with pytest.raises(Text2FXError, match="device 'cuda' is not available on this machine"):
        Engine(device="cuda", checkpoint="/no/such/checkpoint.pt")
    with pytest.raises(Text2FXError, match="unknown device 'tpu'; choose cpu, cuda, cuda:N or mps"):
        Engine(device="tpu", checkpoint="/no/such/checkpoint.pt")


def test_progress_starts_at_step_zero_and_reports_the_first_step(engine):
    seen = []
    engine.apply(tone(), 16000, "warm", chain="eq", steps=12, restarts=1, patience=None,
                 progress=lambda *p: seen.append(p))
    assert seen[0][:2] == (0, 12) and math.isnan(seen[0][2])
    assert [s[0] for s in seen[1:]] == [1, 10, 12]


def test_apply_files_writes_what_the_command_writes(engine, tmp_path):
    src = tmp_path / "take.flac"
    sf.write(src, tone(seconds=1.2).T, 16000, subtype="PCM_24")
    results = engine.apply_files(src, ["dark", "Bright!"], chain="eq", steps=2, output=f"{tmp_path / 'out'}/")
    assert [r.output_path for r in results] == [str(tmp_path / "out" / f"take.{s}.flac") for s in ("dark", "bright")]
    for r in results:
        assert r.audio is None
        info = sf.info(r.output_path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 2, "PCM_24")
        report = json.loads(open(r.output_path[:-5] + ".json").read())
        jsonschema.validate(report, schema())
        assert report["output"]["path"] == r.output_path and report["input"]["path"] == str(src)
    with pytest.raises(UsageError, match="already exists"):
        engine.apply_files(src, "dark", chain="eq", steps=2, output=f"{tmp_path / 'out'}/")


def test_result_save_writes_audio_and_report_and_refuses_to_overwrite(engine, tmp_path):
    r = engine.apply(tone(), 16000, "warm", chain="eq", steps=2)
    audio_path, report_path = r.save(tmp_path / "warm.wav")
    assert report_path == tmp_path / "warm.json"
    data, sr = sf.read(audio_path, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(data.T, r.audio)  # 32-bit float WAV: the array itself
    assert json.loads(report_path.read_text())["output"]["path"] == str(audio_path)
    np.testing.assert_allclose(render(tone(), 16000, report_path), r.audio, atol=1e-5)
    with pytest.raises(UsageError, match="already exists"):
        r.save(tmp_path / "warm.wav")
    with pytest.raises(InputError, match="give an audio file name"):
        r.save(tmp_path / "warm2.json")
    assert r.save(tmp_path / "warm.wav", overwrite=True)[0] == audio_path


def test_a_full_disk_is_named_as_such(tmp_path, monkeypatch):
    import fx

    src = tmp_path / "in.wav"
    sf.write(src, tone().T, 16000)

    def system_error(self, block):
        raise RuntimeError("Error writing to file: System error.")  # what libsndfile says on ENOSPC

    monkeypatch.setattr(audio_io.BlockWriter, "write", system_error)
    monkeypatch.setattr(audio_io.shutil, "disk_usage", lambda p: type("U", (), {"free": 0})())
    chain = fx.Chain.from_spec("gain")
    with pytest.raises(OutputError, match="no space left on the device"):
        rendering.render_file(chain, chain.neutral_unit(), audio_io.probe(src), tmp_path / "o.wav", "WAV", "FLOAT",
                              keep_length=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


@pytest.mark.parametrize("settings, message", [
    ({"chain": "", "effects": []}, "the chain is empty"),
    ({"chain": "eq", "effects": [], "seed": 0}, "the chain is empty"),
    ({"chain": "gain", "seed": 2**64, "effects": [{"type": "gain", "params": {"gain_db": 0.0}}]},
     "seed must be an integer that fits in 64 bits"),
])
def test_render_refuses_empty_chains_and_huge_seeds(settings, message):
    with pytest.raises(InputError, match=message):
        render(tone(), 16000, settings)


def test_render_reads_json_saved_with_a_byte_order_mark(tmp_path):
    import fx

    chain = fx.Chain.from_spec("gain")
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(chain.to_dict(chain.neutral_unit())).encode())
    np.testing.assert_allclose(render(tone(), 16000, path), tone(), atol=1e-6)


def test_apply_files_writes_the_tail_unless_keep_length(engine, tmp_path):
    src = tmp_path / "take.wav"
    sf.write(src, tone(seconds=1.2).T, 16000, subtype="FLOAT")
    long, = engine.apply_files(src, "airy", chain="reverb", steps=2, output=tmp_path / "long.wav")
    short, = engine.apply_files(src, "airy", chain="reverb", steps=2, output=tmp_path / "short.wav",
                                keep_length=True)
    report = json.loads((tmp_path / "long.json").read_text())["output"]
    assert not long.bypassed and long.tail_frames > 0
    assert sf.info(long.output_path).frames == report["frames"] == int(16000 * 1.2) + long.tail_frames
    assert sf.info(short.output_path).frames == int(16000 * 1.2) and short.tail_frames == 0
    a, _ = sf.read(long.output_path, dtype="float32")
    b, _ = sf.read(short.output_path, dtype="float32")
    # same settings (same seed), same start, once each level policy's gain is undone
    assert long.params == short.params
    np.testing.assert_allclose(a[: len(b)] / 10 ** (long.output_gain_db / 20),
                               b / 10 ** (short.output_gain_db / 20), atol=1e-5)


def test_result_save_writes_the_longer_output(engine, tmp_path):
    r = engine.apply(tone(), 16000, "airy", chain="reverb", steps=2)
    audio_path, report_path = r.save(tmp_path / "airy.wav")
    assert sf.info(audio_path).frames == r.audio.shape[1] == json.loads(report_path.read_text())["output"]["frames"]
