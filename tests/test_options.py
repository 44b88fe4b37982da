"""The options layer and output planning: every check once, with one-line messages, and without torch."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from text2fx import outputs
from text2fx.errors import InputError, UsageError
from text2fx.options import EngineOptions, JobOptions, OutputOptions


def write_tone(path, sr=16000, seconds=0.5, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * channels, axis=1).astype(np.float32), sr)
    return Path(path)


def test_options_layer_imports_without_torch():
    code = ("import sys\nimport text2fx.options, text2fx.outputs, text2fx.report, text2fx.recipe, text2fx.pipeline\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("changes, message", [
    (dict(prompts=None), "prompt must be a string or a list of strings"),
    (dict(prompts=[]), "no prompt given"),
    (dict(prompts=["ok", "  "]), "empty prompt"),
    (dict(prompts=[3]), "prompt must be a string"),
    (dict(chain=""), "name effects separated by commas"),
    (dict(chain="eq,,reverb"), "name effects separated by commas"),
    (dict(chain="eq,flanger"), "unknown effect 'flanger'"),
    (dict(chain=None), "chain must be a string"),
    (dict(preset="turbo"), "unknown preset 'turbo'"),
    (dict(seed=2**64), "seed must fit in 64 bits"),
    (dict(seed=1.5), "seed must be an integer, got 1.5"),
    (dict(seed=True), "seed must be an integer, got True"),
    (dict(template="sound {x}"), "only placeholder allowed is {prompt}"),
    (dict(template="no placeholder"), "must contain {prompt}"),
    (dict(anchor="{0}"), "only placeholder allowed"),
    (dict(anchor="  "), "is empty"),
    (dict(recipe_changes={"steps": 2.5}), "steps must be an integer, got 2.5"),
    (dict(recipe_changes={"steps": 0}), "steps must be"),
    (dict(recipe_changes={"lr": float("inf")}), "lr"),
    (dict(recipe_changes={"loss": "l2"}), "loss"),
    (dict(recipe_changes={"colour": 1}), "colour"),
    (dict(keep_length=1), "keep_length must be True or False, got 1"),
    (dict(keep_length=None), "keep_length must be True or False, got None"),
])
def test_job_options_refuse_bad_values_as_usage_errors(changes, message):
    kwargs = {"prompts": ["warm"], **changes}
    with pytest.raises(UsageError, match=message.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        JobOptions(**kwargs)


def test_job_options_keep_the_tail_by_default():
    assert JobOptions(prompts="warm").keep_length is False
    assert JobOptions(prompts="warm", keep_length=True).keep_length is True


def test_job_options_normalise():
    o = JobOptions(prompts="  warm ", chain="eq, reverb", seed=np.int64(3))
    assert (o.prompts, o.chain, o.seed) == (("warm",), "eq,reverb", 3) and type(o.seed) is int
    assert o.texts() == ["this sound is warm"] and o.anchors() == ["this sound is not warm"]


@pytest.mark.parametrize("changes, message", [
    (dict(device="tpu"), "unknown device 'tpu'; choose cpu, cuda, cuda:N or mps"),
    (dict(device="cuda:x"), "unknown device 'cuda:x'"),
    (dict(max_batch=0), "max_batch must be at least 1"),
    (dict(max_batch=2.0), "max_batch must be an integer"),
    (dict(precision="float16"), "unknown precision 'float16'"),
    (dict(checkpoint=3), "checkpoint must be a path"),
])
def test_engine_options_refuse_bad_values(changes, message):
    with pytest.raises(UsageError, match=message):
        EngineOptions(**changes)


def test_usage_errors_are_input_errors():
    # API callers catch InputError / Text2FXError; the command maps UsageError to exit code 2
    assert issubclass(UsageError, InputError)


def plan(tmp_path, inputs, prompts, **options):
    return outputs.plan([__import__("text2fx.audio_io").audio_io.probe(p) for p in inputs], prompts,
                        OutputOptions(**options))


def test_plan_names_outputs_beside_inputs(tmp_path):
    src = write_tone(tmp_path / "take.flac")
    [p] = plan(tmp_path, [src], ["Warm & Bright"])
    assert (p.audio, p.params, p.format) == (tmp_path / "take.warm-bright.flac", tmp_path / "take.warm-bright.json",
                                             "FLAC")


@pytest.mark.parametrize("output, message", [
    ("x.json", "looks like a settings file"),
    ("newdir", "has no file extension"),
])
def test_single_output_names_that_mislead(tmp_path, output, message):
    src = write_tone(tmp_path / "in.wav")
    with pytest.raises(UsageError, match=message):
        plan(tmp_path, [src], ["dark"], output=str(tmp_path / output))


def test_several_results_need_a_folder(tmp_path):
    src = write_tone(tmp_path / "in.wav")
    with pytest.raises(UsageError, match="must be a folder"):
        plan(tmp_path, [src], ["dark", "warm"], output=str(tmp_path / "out.wav"))


def test_params_path_is_checked_before_any_work(tmp_path):
    src = write_tone(tmp_path / "in.wav")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        plan(tmp_path, [src], ["dark"], output=str(tmp_path / "o.wav"), params=str(blocker / "o.json"))
    existing = tmp_path / "settings.json"
    existing.write_text("{}")
    with pytest.raises(UsageError, match="already exists"):
        plan(tmp_path, [src], ["dark"], output=str(tmp_path / "o.wav"), params=str(existing))
    with pytest.raises(UsageError, match="also be written"):
        plan(tmp_path, [src], ["dark"], output=str(tmp_path / "o.wav"), params=str(tmp_path / "o.wav"))
    with pytest.raises(UsageError, match="is the input"):
        plan(tmp_path, [src], ["dark"], output=str(tmp_path / "o.wav"), params=str(src))
    assert existing.read_text() == "{}"


def test_params_in_a_folder_that_cannot_be_written(tmp_path, monkeypatch):
    src = write_tone(tmp_path / "in.wav")
    locked = tmp_path / "locked"
    locked.mkdir()
    real = outputs.tempfile.TemporaryDirectory

    def refuse(*a, dir=None, **k):
        if Path(dir) == locked:
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*a, dir=dir, **k)

    # root may write anywhere, so the refusal a user would get is simulated where the probe file is made
    monkeypatch.setattr(outputs.tempfile, "TemporaryDirectory", refuse)
    with pytest.raises(UsageError, match="cannot write .*o.json: permission denied"):
        plan(tmp_path, [src], ["dark"], output=str(tmp_path / "o.wav"), params=str(locked / "o.json"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_params_in_a_read_only_folder(tmp_path):
    src = write_tone(tmp_path / "in.wav")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    with pytest.raises(UsageError, match="cannot write"):
        plan(tmp_path, [src], ["dark"], output=str(tmp_path / "o.wav"), params=str(locked / "o.json"))


def test_a_container_that_cannot_hold_the_channels_says_so(tmp_path):
    src = write_tone(tmp_path / "in.wav", channels=8)
    with pytest.raises(UsageError, match="cannot hold 8 channel"):
        plan(tmp_path, [src], ["dark"], output=str(tmp_path / "o.mp3"))


def test_full_disk_is_named(tmp_path):
    from text2fx import audio_io

    assert audio_io.os_error_text(OSError(28, "No space left on device")) == "no space left on the device"
