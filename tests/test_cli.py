"""End-to-end: the `text2fx` command through the real CLAP embedder (random-weight checkpoint and test
tokenizer from tests/conftest.py; outputs say nothing about meaning, only that the plumbing is right)."""

import json
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
import soundfile as sf

import text2fx.clap
from text2fx.cli import main
from text2fx.report import schema

QUICK = ["--steps", "2", "--restarts", "1", "--excerpts", "1", "--quiet"]


@pytest.fixture
def shared_clap(monkeypatch, clap_embedder, clap_checkpoint, clap_tokenizer_dir):
    """Reuse the session's loaded CLAP instead of loading the 600 MB checkpoint in every test (the model
    files are still found, and the prompts tokenized, as in a real run)."""
    monkeypatch.setenv("TEXT2FX_CLAP_CKPT", str(clap_checkpoint))
    monkeypatch.setenv("TEXT2FX_CLAP_TOKENIZER", str(clap_tokenizer_dir))
    monkeypatch.setattr(text2fx.clap, "ClapEmbedder", lambda *a, **k: clap_embedder)


def write_tone(path, sr=44100, seconds=1.2, channels=1, subtype="FLOAT", amp=0.3):
    t = np.arange(int(sr * seconds)) / sr
    x = np.stack([amp * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)], axis=1)
    sf.write(path, x.astype(np.float32), sr, subtype=subtype)
    return path


def run(*args):
    return main([str(a) for a in args])


def one_line_error(capsys, code, expected_code, *words):
    err = capsys.readouterr().err.strip()
    assert code == expected_code, err
    assert err.startswith("text2fx: error:") and "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def test_full_run_through_real_checkpoint_and_render(tmp_path, clap_checkpoint, clap_tokenizer_dir, capsys):
    src = write_tone(tmp_path / "in.wav", sr=44100, channels=1)
    out = tmp_path / "out.wav"
    code = run(src, "warm and bright", "--chain", "eq,reverb", "-o", out, "--clap-ckpt", clap_checkpoint,
               "--tokenizer", clap_tokenizer_dir, "--steps", "2", "--restarts", "1", "--device", "cpu")
    printed = capsys.readouterr().out
    assert code == 0
    assert "CLAP similarity" in printed and str(out) in printed and "length:" in printed
    data, sr = sf.read(out, dtype="float32", always_2d=True)
    info = sf.info(out)
    report = json.loads(out.with_suffix(".json").read_text())
    tail = report["output"]["tail_frames"]  # the reverb rings on after the input (0 if bypassed)
    assert (sr, data.shape, info.subtype) == (44100, (int(44100 * 1.2) + tail, 1), "FLOAT")
    assert report["output"]["frames"] == data.shape[0] and report["output"]["keep_length"] is False
    assert np.abs(data).max() <= 10 ** (-1 / 20) + 1e-6
    jsonschema.validate(report, schema())
    assert report["clap"]["checkpoint"] == clap_checkpoint.name
    assert report["optimization"]["steps"] == 2 and len(report["optimization"]["history"]) == 2
    assert report["optimization"]["precision"] == "float32"
    assert report["output"]["path"] == str(out)

    again = tmp_path / "again.wav"
    assert run("render", src, out.with_suffix(".json"), "-o", again, "--quiet") == 0
    rendered, _ = sf.read(again, dtype="float32", always_2d=True)
    assert np.abs(rendered - data).max() < 1e-4


@pytest.mark.parametrize("sr, channels, ext, subtype", [
    (8000, 1, ".wav", "PCM_16"),
    (22050, 2, ".flac", "PCM_24"),
    (192000, 8, ".wav", "PCM_24"),
])
def test_formats_are_preserved(tmp_path, shared_clap, sr, channels, ext, subtype):
    src = write_tone(tmp_path / f"in{ext}", sr=sr, seconds=0.6, channels=channels, subtype=subtype)
    assert run(src, "airy", "--chain", "eq", *QUICK) == 0
    out = tmp_path / f"in.airy{ext}"
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (sr, channels, int(sr * 0.6), subtype)
    assert (tmp_path / "in.airy.json").exists()


def test_several_inputs_and_prompts_get_predictable_names(tmp_path, shared_clap):
    a = write_tone(tmp_path / "a.wav")
    b = write_tone(tmp_path / "b.wav", channels=2)
    outdir = tmp_path / "outs"
    assert run(a, b, "-p", "dark", "-p", "Bright & Airy!", "--chain", "eq", "-o", outdir, *QUICK) == 0
    names = sorted(p.name for p in outdir.iterdir())
    assert names == sorted(f"{s}.{p}.{e}" for s in "ab" for p in ("dark", "bright-airy") for e in ("wav", "json"))


def test_existing_output_is_refused_and_kept(tmp_path, shared_clap, capsys):
    src = write_tone(tmp_path / "in.wav")
    out = tmp_path / "out.wav"
    out.write_bytes(b"precious")
    one_line_error(capsys, run(src, "dark", "-o", out, *QUICK), 2, "already exists", "--overwrite")
    assert out.read_bytes() == b"precious"
    assert run(src, "dark", "-o", out, "--overwrite", *QUICK) == 0
    assert sf.info(out).frames == json.loads(out.with_suffix(".json").read_text())["output"]["frames"]


def test_output_equal_to_input_is_refused(tmp_path, capsys):
    src = write_tone(tmp_path / "in.wav")
    before = src.read_bytes()
    one_line_error(capsys, run(src, "dark", "-o", src, "--overwrite"), 2, "is the input")
    assert src.read_bytes() == before


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "missing.wav", ["not found"]),
    (lambda d: (d / "corrupt.wav").write_bytes(b"RIFF\x00\x01garbage" * 50) and d / "corrupt.wav", ["cannot read"]),
    (lambda d: (d / "notes.txt").write_text("hello") and d / "notes.txt", ["cannot read"]),
    (lambda d: write_tone(d / "empty.wav", seconds=0), ["zero length"]),
    (lambda d: write_tone(d / "short.wav", seconds=0.05), ["too short"]),
    (lambda d: write_tone(d / "silent.wav", amp=0.0), ["silent"]),
    (lambda d: write_tone(d / "nan.wav", amp=np.nan), ["NaN"]),
    (lambda d: write_tone(d / "low.wav", sr=4000), ["sample rate"]),
])
def test_bad_input_files(tmp_path, capsys, make, words):
    src = make(tmp_path)
    before = sorted(tmp_path.iterdir())
    # no model is loaded for these: the checks come first (a bogus checkpoint path proves it)
    code = run(src, "dark", "--clap-ckpt", tmp_path / "no-such.pt", "--quiet")
    one_line_error(capsys, code, 1, *words)
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("args, words", [
    (["dark", "--chain", "eq,flanger"], ["flanger"]),
    (["   "], ["empty prompt"]),
    (["dark", "--steps", "0"], ["steps must be at least 1"]),
    (["dark", "--max-batch", "0"], ["max_batch must be at least 1"]),
    (["dark", "--loss", "l2"], ["invalid choice"]),
    (["dark", "--precision", "float16"], ["--precision", "invalid choice"]),
    (["dark", "-o", "x.mp4"], ["unsupported output"]),
])
def test_usage_errors(tmp_path, capsys, args, words):
    src = write_tone(tmp_path / "in.wav")
    if "-o" in args:
        args = [a if a != "x.mp4" else str(tmp_path / "x.mp4") for a in args]
    one_line_error(capsys, run(src, *args), 2, *words)


def test_missing_checkpoint_is_one_clear_line(tmp_path, capsys):
    src = write_tone(tmp_path / "in.wav")
    one_line_error(capsys, run(src, "dark", "--clap-ckpt", tmp_path / "nope.pt", "--quiet"), 1, "nope.pt")


def test_render_rejects_malformed_and_mismatched_params(tmp_path, capsys):
    src = write_tone(tmp_path / "in.wav")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    one_line_error(capsys, run("render", src, bad, "-o", tmp_path / "o.wav"), 1, "not valid JSON")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"chain": "eq", "effects": [{"type": "reverb", "params": {}}]}))
    one_line_error(capsys, run("render", src, wrong, "-o", tmp_path / "o.wav"), 1)
    import fx

    good = fx.Chain.from_spec("eq").to_dict(fx.Chain.from_spec("eq").neutral_unit())
    ok = tmp_path / "eq.json"
    ok.write_text(json.dumps(good))
    one_line_error(capsys, run("render", src, ok, "-o", tmp_path / "o.wav", "--chain", "eq,reverb"), 1,
                   "not 'eq,reverb'")
    assert not (tmp_path / "o.wav").exists()
    assert run("render", src, ok, "-o", tmp_path / "o.wav", "--quiet") == 0


def test_ctrl_c_leaves_no_partial_file(tmp_path, shared_clap, monkeypatch, capsys):
    import text2fx.rendering as rendering

    src = write_tone(tmp_path / "in.wav", seconds=3.0)
    real = rendering.process_chunks

    def interrupted(chain, params, source, write, *a, **k):
        def write_then_stop(block):
            write(block)
            raise KeyboardInterrupt

        return real(chain, params, source, write_then_stop, *a, **k)

    monkeypatch.setattr(rendering, "process_chunks", interrupted)
    code = run(src, "dark", "--chain", "eq", *QUICK)
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_out_of_device_memory_is_one_line_with_what_to_lower(tmp_path, shared_clap, monkeypatch, capsys):
    import torch

    from text2fx import pipeline

    def out_of_memory(*_a, **_k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(pipeline, "optimize", out_of_memory)
    src = write_tone(tmp_path / "in.wav")
    one_line_error(capsys, run(src, "dark", "--chain", "eq", *QUICK), 1, "out of device memory", "--max-batch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_help_and_usage_errors_do_not_import_torch():
    code = (
        "import sys\n"
        "from text2fx.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert main(['only-one-arg']) == 2\n"
        "assert main(['in.wav', 'dark', '--chain', 'eq,flanger']) == 2\n"
        "assert main(['in.wav', 'dark', '--template', 'sound {x}']) == 2\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False"), out.stdout + out.stderr
    assert "usage: text2fx" in out.stdout


def test_seeded_runs_through_clap_are_bit_identical(clap_embedder):
    from text2fx.engine import Engine

    audio = (0.2 * np.random.default_rng(0).standard_normal((2, 48000))).astype(np.float32)
    engine = Engine(clap_embedder)
    a = engine.apply(audio, 48000, "warm", chain="eq,reverb", steps=2, restarts=2, seed=5)
    b = engine.apply(audio, 48000, "warm", chain="eq,reverb", steps=2, restarts=2, seed=5)
    assert a.params == b.params and a.history == b.history and np.array_equal(a.audio, b.audio)


def test_cli_effect_names_are_fx_builtins():
    import fx
    from text2fx.options import BUILTIN_EFFECTS

    assert sorted(BUILTIN_EFFECTS) == fx.available_effects()


@pytest.mark.parametrize("args, words", [
    (["--template", "sound {x}"], ["only placeholder"]),
    (["--template", "no placeholder"], ["must contain {prompt}"]),
    (["--anchor", "{oops}"], ["only placeholder"]),
    (["--device", "cuda"] if not __import__("torch").cuda.is_available() else ["--device", "cuda:99"],
     ["device 'cuda", "is not available on this machine (available: cpu"]),
    (["--device", "tpu"], ["unknown device 'tpu'; choose cpu, cuda, cuda:N or mps"]),
    (["--seed", str(2**70)], ["seed must fit in 64 bits"]),
    (["--lr", "inf"], ["lr"]),
])
def test_more_usage_errors_before_any_model_work(tmp_path, capsys, args, words):
    src = write_tone(tmp_path / "in.wav")
    one_line_error(capsys, run(src, "dark", "--clap-ckpt", tmp_path / "no-such.pt", *args), 2, *words)


def test_output_the_container_cannot_hold_is_refused_before_optimizing(tmp_path, capsys):
    src = write_tone(tmp_path / "in.wav", sr=192000, seconds=0.3)
    # MP3 has no 192 kHz; the bogus checkpoint proves no model was loaded before the error
    code = run(src, "dark", "-o", tmp_path / "o.mp3", "--clap-ckpt", tmp_path / "no-such.pt")
    one_line_error(capsys, code, 2, "cannot write", "o.mp3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_output_names_for_awkward_prompts_and_inputs(tmp_path, shared_clap):
    src = write_tone(tmp_path / "take1.wav")
    bare = tmp_path / "take2"
    bare.write_bytes(src.read_bytes())  # a WAV without an extension
    out = tmp_path / "new" / "folder"
    assert run(src, bare, "-p", "温かい", "-p", "Warm!", "-p", "warm", "--chain", "gain", "-o", f"{out}/", *QUICK) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{stem}.{s}.{e}" for stem in ("take1", "take2")
                           for s in ("温かい", "warm", "warm-2") for e in ("wav", "json"))


def test_single_output_into_new_folder_with_trailing_slash(tmp_path, shared_clap):
    src = write_tone(tmp_path / "in.wav")
    assert run(src, "dark", "--chain", "gain", "-o", f"{tmp_path / 'outs'}/", *QUICK) == 0
    assert sorted(p.name for p in (tmp_path / "outs").iterdir()) == ["in.dark.json", "in.dark.wav"]


def test_outputs_get_ordinary_file_permissions(tmp_path, shared_clap):
    import os

    src = write_tone(tmp_path / "in.wav")
    old = os.umask(0o022)
    try:
        assert run(src, "dark", "--chain", "gain", *QUICK) == 0
    finally:
        os.umask(old)
    for name in ("in.dark.wav", "in.dark.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("output, words", [
    ("x.json", ["looks like a settings file"]),
    ("newdir", ["has no file extension", "newdir.wav", "ending in '/'"]),
])
def test_outputs_that_name_no_audio_file(tmp_path, capsys, output, words):
    src = write_tone(tmp_path / "in.wav")
    code = run(src, "dark", "-o", tmp_path / output, "--clap-ckpt", tmp_path / "no-such.pt")
    one_line_error(capsys, code, 2, *words)


def test_params_path_under_a_file_is_refused_before_optimizing(tmp_path, capsys):
    src = write_tone(tmp_path / "in.wav")
    (tmp_path / "notes").write_text("a file")
    code = run(src, "dark", "-o", tmp_path / "o.wav", "--params", tmp_path / "notes" / "o.json",
               "--clap-ckpt", tmp_path / "no-such.pt")
    one_line_error(capsys, code, 2, "is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "notes"]


def test_eight_channels_to_mp3_names_the_channels(tmp_path, capsys):
    src = write_tone(tmp_path / "in.wav", channels=8)
    code = run(src, "dark", "-o", tmp_path / "o.mp3", "--clap-ckpt", tmp_path / "no-such.pt")
    one_line_error(capsys, code, 2, "cannot hold 8 channel", "o.mp3")


def test_a_prompt_longer_than_clap_reads_is_refused(tmp_path, shared_clap, capsys):
    src = write_tone(tmp_path / "in.wav")
    code = run(src, "warm " * 1000, "--chain", "eq", *QUICK)
    one_line_error(capsys, code, 1, "tokens", "77")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


@pytest.mark.parametrize("settings, words", [
    ({"chain": "", "effects": []}, ["the chain is empty"]),
    ({"chain": "gain", "seed": 2**70, "effects": [{"type": "gain", "params": {"gain_db": 0.0}}]}, ["64 bits"]),
])
def test_render_refuses_empty_chains_and_huge_seeds(tmp_path, capsys, settings, words):
    src = write_tone(tmp_path / "in.wav")
    params = tmp_path / "p.json"
    params.write_text(json.dumps(settings))
    one_line_error(capsys, run("render", src, params, "-o", tmp_path / "o.wav"), 1, *words)
    assert not (tmp_path / "o.wav").exists()


def test_render_accepts_a_byte_order_mark(tmp_path):
    import fx

    src = write_tone(tmp_path / "in.wav")
    chain = fx.Chain.from_spec("gain")
    params = tmp_path / "p.json"
    params.write_bytes(b"\xef\xbb\xbf" + json.dumps(chain.to_dict(chain.neutral_unit())).encode())
    assert run("render", src, params, "-o", tmp_path / "o.wav", "--quiet") == 0


def test_render_reports_malformed_json_without_importing_torch(tmp_path):
    src = write_tone(tmp_path / "in.wav")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code = (
        "import sys\nfrom text2fx.cli import main\n"
        f"assert main(['render', {str(src)!r}, {str(bad)!r}, '-o', {str(tmp_path / 'o.wav')!r}]) == 1\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False" and "not valid JSON" in out.stderr


def write_reverb_settings(path, value=0.9):
    import fx
    import torch

    chain = fx.Chain.from_spec("reverb", seed=1)
    u = torch.full((chain.num_params,), value)
    path.write_text(json.dumps(chain.to_dict(u)))
    return path, chain.tail_samples(8000, u)


def test_render_keeps_the_tail_and_prints_it(tmp_path, capsys):
    src = write_tone(tmp_path / "in.wav", sr=8000, seconds=1.0)
    params, tail = write_reverb_settings(tmp_path / "verb.json")
    assert run("render", src, params, "-o", tmp_path / "out.wav") == 0
    assert sf.info(tmp_path / "out.wav").frames == 8000 + tail
    assert "tail" in capsys.readouterr().out


def test_render_keep_length_keeps_the_input_length(tmp_path, capsys):
    src = write_tone(tmp_path / "in.wav", sr=8000, seconds=1.0)
    params, _ = write_reverb_settings(tmp_path / "verb.json")
    assert run("render", src, params, "-o", tmp_path / "out.wav", "--keep-length") == 0
    assert sf.info(tmp_path / "out.wav").frames == 8000
    assert "--keep-length" in capsys.readouterr().out


def test_keep_length_keeps_the_input_length_and_the_report_says_so(tmp_path, shared_clap):
    src = write_tone(tmp_path / "in.wav", sr=16000, seconds=1.2)
    assert run(src, "airy", "--chain", "reverb", "-o", tmp_path / "out.wav", "--keep-length", *QUICK) == 0
    output = json.loads((tmp_path / "out.json").read_text())["output"]
    assert sf.info(tmp_path / "out.wav").frames == int(16000 * 1.2)
    assert (output["keep_length"], output["frames"], output["tail_frames"]) == (True, int(16000 * 1.2), 0)
