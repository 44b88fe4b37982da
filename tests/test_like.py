"""A reference recording as the target (`--like`, `like=`): the target is the embedder's audio embedding of the
reference (windows averaged, computed here independently), for any rate and channel count and for references
shorter than a window; text and reference combine with their weight; without a prompt the reference is the
whole target (the directional loss then points from the input to the reference); names, checks, reports."""

import json

import jsonschema
import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from scipy.signal import resample_poly

from doubles import SpectralTestEmbedder
from signals import tone
from text2fx.cli import main
from text2fx.engine import Engine
from text2fx.errors import InputError, UsageError
from text2fx.optimize.layout import Layout, Objective
from text2fx.options import JobOptions, OutputOptions
from text2fx.pipeline import file_job
from text2fx.report import schema
from text2fx.targets import Like, Targets, reference_embedding

SR = 16000


def _unit(rng, *shape):
    v = rng.standard_normal(shape)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _cos(a, b):
    return np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _stepped_reference(sr: int, window_s: float, channels: int = 2) -> np.ndarray:
    """Three windows' worth of noise at levels 1, 0.5, 0.8: the loudest non-overlapping windows are exactly
    the three thirds (0.5 windows of each neighbour overlap the loud ones), so the test knows which."""
    rng = np.random.default_rng(5)
    n = int(round(window_s * sr))
    parts = [level * rng.standard_normal((channels, n)) * 0.2 for level in (1.0, 0.5, 0.8)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def test_objective_combines_text_and_reference_with_the_documented_weight():
    """cosine: 1 - [(1-w) cos(a,t) + w cos(a,r)]; directional: 1 - [(1-w) cos(a-x, t-n) + w cos(a-x, r-x)];
    without a prompt, the reference alone (w = 1): the direction is r - x."""
    rng = np.random.default_rng(2)
    d, n_exc, w = 8, 2, 0.3
    t, n, r = (_unit(rng, 1, d) for _ in range(3))
    x = _unit(rng, 1, n_exc, d)
    layout = Layout.build([0], "best", 1, n_exc, torch.device("cpu"))
    a = _unit(rng, layout.n_candidates * n_exc, d)
    T = lambda v: torch.from_numpy(v)  # noqa: E731
    both = Objective(layout, T(x), None, None, Targets(text=T(t), anchor=T(n), reference=T(r), like_weight=w))
    cos, direction = (v.numpy() for v in both.losses(T(a)))
    a3 = a.reshape(layout.n_candidates, n_exc, d)
    np.testing.assert_allclose(cos, (1 - ((1 - w) * _cos(a3, t) + w * _cos(a3, r))).mean(1), atol=1e-12)
    expected_dir = 1 - ((1 - w) * _cos(a3 - x, t - n) + w * _cos(a3 - x, r[:, None] - x)).mean(1)
    np.testing.assert_allclose(direction, expected_dir, atol=1e-12)
    np.testing.assert_allclose(both.similarity(T(a)).numpy(), 1 - cos, atol=1e-12)

    alone = Objective(layout, T(x), None, None, Targets(reference=T(r)))
    assert alone.like_weight == 1.0
    cos, direction = (v.numpy() for v in alone.losses(T(a)))
    np.testing.assert_allclose(cos, (1 - _cos(a3, r)).mean(1), atol=1e-12)
    np.testing.assert_allclose(direction, (1 - _cos(a3 - x, r[:, None] - x)).mean(1), atol=1e-12)
    # no change has no direction: the bypass's directional loss stays 1
    assert alone.unchanged()[1].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("sr, channels", [(44100, 2), (22050, 1), (48000, 3)])
def test_the_target_is_the_embedders_embedding_of_the_reference_windows_averaged(tmp_path, sr, channels):
    embedder = SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0)
    ref = _stepped_reference(sr, 1.0, channels)
    path = tmp_path / "ref.wav"
    sf.write(path, ref.T, sr, subtype="FLOAT")
    got = reference_embedding(embedder, Like(str(path)))
    # independently: the three one-second thirds, each downmixed and embedded, then the normalized mean
    thirds = [ref[:, k * sr : (k + 1) * sr].mean(0, keepdims=True) for k in range(3)]
    emb = torch.cat([embedder.embed_audio(torch.from_numpy(t)[None], sr) for t in thirds])
    expected = F.normalize(emb.mean(0), dim=0)
    assert torch.allclose(got, expected, atol=1e-5)
    assert Like(str(path)).describe(1.0)["windows_s"] == [0.0, 1.0, 2.0]
    # an array gives the same target as its file
    assert torch.allclose(reference_embedding(embedder, Like((ref, sr))), got, atol=1e-6)


def test_a_reference_shorter_than_a_window_is_one_window():
    embedder = SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0)
    ref = tone(22050, 0.4, 2)
    got = reference_embedding(embedder, Like((ref, 22050)))
    # the double repeats short audio up to its window: done here by hand on the downmix
    mono = ref.mean(0)
    window = 22050
    padded = np.tile(mono, int(np.ceil(window / mono.size)))[:window]
    expected = embedder.embed_audio(torch.from_numpy(padded)[None, None], 22050)[0]
    assert torch.allclose(got, expected, atol=1e-5)


def test_like_moves_the_result_toward_the_reference_with_and_without_a_prompt():
    embedder = SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0)
    engine = Engine(embedder)
    x = tone(SR, 1.0, 2)
    rng = np.random.default_rng(3)
    # a reference with a very different spectrum: noise with a strong low end, at another rate, mono
    noise = rng.standard_normal(3 * 22050)
    ref = resample_poly(np.cumsum(noise) * 0.01, 1, 1).astype(np.float32)
    ref = (ref - ref.mean()) / np.abs(ref).max() * 0.5
    kw = dict(chain="eq", seed=0, steps=40, restarts=2, excerpts=1, lr=0.05)
    alone = engine.apply(x, SR, None, like=(ref, 22050), **kw)
    assert not alone.bypassed
    assert alone.prompt is None and alone.text is None and alone.anchor is None
    assert alone.like["weight"] == 1.0 and alone.like["path"] is None and alone.like["sample_rate"] == 22050
    sim = alone.like["similarity"]
    assert sim["after"] > sim["before"] + 0.01
    # the main similarity is to the target, here the reference alone
    assert alone.similarity_after == pytest.approx(sim["after"], abs=1e-5)
    report = json.loads(json.dumps(alone.report()))
    jsonschema.validate(report, schema())
    assert report["prompt"] is None and report["like"]["similarity"] == sim

    directional = engine.apply(x, SR, None, like=(ref, 22050), loss="directional", **kw)
    assert directional.like["similarity"]["after"] > directional.like["similarity"]["before"]

    both = engine.apply(x, SR, "warm", like=(ref, 22050), like_weight=0.8, **kw)
    assert both.like["weight"] == 0.8 and both.prompt == "warm"
    text_only = engine.apply(x, SR, "warm", **kw)
    # measured independently: the weight pulls the result toward the reference
    target = reference_embedding(embedder, Like((ref, 22050)))

    def to_ref(audio):
        return float(F.cosine_similarity(embedder.embed_audio(torch.from_numpy(audio[:, :SR])[None], SR)[0], target,
                                         dim=0))

    assert to_ref(both.audio) > to_ref(text_only.audio)
    assert both.like["similarity"]["after"] == pytest.approx(to_ref(both.audio), abs=1e-3)


def test_like_from_a_file_names_the_output_after_the_reference(tmp_path):
    x = tone(SR, 1.0, 2)
    sf.write(tmp_path / "take.wav", x.T, SR)
    sf.write(tmp_path / "ref.flac", _stepped_reference(44100, 1.0).T, 44100)
    job = file_job([tmp_path / "take.wav"], JobOptions(prompts=(), chain="eq", like=str(tmp_path / "ref.flac")),
                   OutputOptions())
    assert [p.audio.name for p in job.plans] == ["take.like-ref.wav"]
    engine = Engine(SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0))
    [result] = engine.apply_files(tmp_path / "take.wav", like=tmp_path / "ref.flac", chain="eq", steps=5,
                                  restarts=1, excerpts=1)
    assert result.output_path == str(tmp_path / "take.like-ref.wav")
    report = json.loads((tmp_path / "take.like-ref.json").read_text())
    jsonschema.validate(report, schema())
    assert report["like"]["path"] == str(tmp_path / "ref.flac") and report["like"]["channels"] == 2


def test_the_command_takes_no_prompt_with_like(tmp_path, capsys):
    """`text2fx in.wav --like ref.wav`: one positional is the input. Shown without loading a model: with
    --html (which needs a prompt) the command answers that there is none."""
    sf.write(tmp_path / "in.wav", tone(SR).T, SR)
    sf.write(tmp_path / "ref.wav", tone(SR).T, SR)
    assert main([str(tmp_path / "in.wav"), "--like", str(tmp_path / "ref.wav"), "--html"]) == 2
    assert "with --like alone there is none" in capsys.readouterr().err
    # two positionals, the last not a file: it is the prompt (then --html is fine, the failure is elsewhere)
    code = main([str(tmp_path / "in.wav"), "warm", "--like", str(tmp_path / "ref.wav"), "--like-weight", "1.5"])
    assert code == 2 and "like_weight must be above 0 and below 1, got 1.5" in capsys.readouterr().err
    # without a prompt a weight has nothing to weigh against
    code = main([str(tmp_path / "in.wav"), "--like", str(tmp_path / "ref.wav"), "--like-weight", "0.3"])
    assert code == 2 and "without a prompt the reference is the whole target" in capsys.readouterr().err


def test_an_unreadable_reference_is_one_line_before_the_model_loads(tmp_path, capsys):
    sf.write(tmp_path / "in.wav", tone(SR).T, SR)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav file")
    missing_ckpt = str(tmp_path / "no-such-checkpoint.pt")  # the model would fail to load: it is never reached
    for ref, message in [(tmp_path / "missing.wav", "reference (like): file not found"),
                         (tmp_path / "broken.wav", "reference (like): cannot read"),
                         (tmp_path, "reference (like): it is a directory")]:
        assert main([str(tmp_path / "in.wav"), "warm", "--like", str(ref), "--clap-ckpt", missing_ckpt]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "checkpoint" not in err
    sf.write(tmp_path / "silent.wav", np.zeros((SR, 2), np.float32), SR)
    assert main([str(tmp_path / "in.wav"), "warm", "--like", str(tmp_path / "silent.wav"),
                 "--clap-ckpt", missing_ckpt]) == 1
    assert "silent.wav: audio is silent" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(like_weight=0.5), UsageError, "like_weight is set but there is no reference"),
    (dict(like=3), UsageError, "like must be an audio file's path or (audio, sample_rate), got int"),
    (dict(like=""), UsageError, "like is empty"),
    (dict(like=(tone(SR), 44100.5)), UsageError, "like: sample_rate must be a whole number of Hz"),
    (dict(like=(tone(SR, 0.05), SR)), InputError, "reference (like): like: too short"),
    (dict(like=(np.full((1, SR), np.nan, np.float32), SR)), InputError, "reference (like): audio contains NaN"),
    (dict(prompt=None), UsageError, "or, for no prompt, a reference recording: like"),
])
def test_bad_like_options_are_refused_before_any_work(kwargs, error, message):
    engine = Engine(SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0))
    args = dict(prompt="warm", chain="eq", steps=1, restarts=1)
    args.update(kwargs)
    prompt = args.pop("prompt")
    with pytest.raises(error) as caught:
        engine.apply(tone(SR), SR, prompt, **args)
    assert message in str(caught.value)
    assert embedder_untouched(engine)


def embedder_untouched(engine) -> bool:
    """No text was embedded: the job was refused before the optimization began."""
    return engine.embedder.text_calls == []


@pytest.mark.clap
def test_the_like_target_equals_claps_embedding_of_the_reference(clap_embedder, tmp_path):
    """With a (random-weight) CLAP: a 30 s stereo 44.1 kHz reference's target equals CLAP's embedding of its three
    10 s windows, resampled here with scipy to 48 kHz, downmixed, embedded and averaged; a 3 s one is CLAP's
    repeat-padded window (padded here by hand)."""
    ref = _stepped_reference(44100, 10.0)
    path = tmp_path / "ref.wav"
    sf.write(path, ref.T, 44100, subtype="FLOAT")
    got = reference_embedding(clap_embedder, Like(str(path)))

    def clap_at_48k(mono_44k: np.ndarray) -> torch.Tensor:
        x = resample_poly(mono_44k.astype(np.float64), 160, 147).astype(np.float32)
        window = clap_embedder.window_samples
        if x.size < window:  # laion-clap's "repeatpad": whole repeats, then zeros
            x = np.concatenate([np.tile(x, window // x.size), np.zeros(window - (window // x.size) * x.size,
                                                                         np.float32)])
        with torch.no_grad():
            return clap_embedder.embed_audio(torch.from_numpy(x[:window])[None, None], 48000)[0]

    thirds = [ref[:, k * 441000 : (k + 1) * 441000].mean(0) for k in range(3)]
    expected = F.normalize(torch.stack([clap_at_48k(t) for t in thirds]).mean(0), dim=0)
    cosine = float(F.cosine_similarity(got, expected, dim=0))
    print(f"random weights - plumbing, not quality: cosine(target, independent) = {cosine:.6f}")
    assert cosine > 0.999
    short = ref[:, : 3 * 44100]
    got_short = reference_embedding(clap_embedder, Like((short, 44100)))
    assert float(F.cosine_similarity(got_short, clap_at_48k(short.mean(0)), dim=0)) > 0.999
