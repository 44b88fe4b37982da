"""Words to avoid (`--avoid`, `avoid=`): the penalty's formula, its place in every loss and in the bypass, the
report's before/after similarities, the checks, and that it lowers the similarity to the avoided text compared
with the same run (same seed) without it: on the spectral test double (a geometry where the avoided text lies
near the prompt) and on a random-weight CLAP (plumbing, not quality)."""

import json

import jsonschema
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from doubles import SpectralTestEmbedder
from signals import tone
from text2fx.cli import main
from text2fx.engine import Engine
from text2fx.errors import UsageError
from text2fx.losses import avoid_loss
from text2fx.optimize.layout import Layout, Objective
from text2fx.report import schema
from text2fx.targets import Targets

SR = 16000


def _unit(rng, *shape):
    v = rng.standard_normal(shape)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_avoid_loss_is_the_mean_cosine():
    rng = np.random.default_rng(0)
    audio, avoid = _unit(rng, 3, 2, 8), 2.0 * _unit(rng, 4, 8)  # not unit length: a cosine, not a dot product
    expected = np.einsum("ced,ad->cea", audio, avoid / 2.0).mean(-1)
    got = avoid_loss(torch.from_numpy(audio), torch.from_numpy(avoid)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("loss", ["cosine", "directional", "best"])
def test_the_penalty_is_added_to_both_losses_and_to_the_bypass(loss):
    """Objective losses with avoid = without avoid + w * mean_i cos(a, v_i), for the processed audio
    and for the unprocessed input (so a candidate must beat the bypass's own penalty too)."""
    rng = np.random.default_rng(1)
    d, n_exc = 8, 2
    text, anchor = torch.from_numpy(_unit(rng, 1, d)), torch.from_numpy(_unit(rng, 1, d))
    avoid = torch.from_numpy(_unit(rng, 3, d))
    input_emb = torch.from_numpy(_unit(rng, 1, n_exc, d))
    layout = Layout.build([0], loss, 2, n_exc, torch.device("cpu"))
    emb = torch.from_numpy(_unit(rng, layout.n_candidates * n_exc, d))
    plain = Objective(layout, input_emb, text, anchor)
    w = 0.7
    shaped = Objective(layout, input_emb, None, None, Targets(text=text, anchor=anchor, avoid=avoid, avoid_weight=w))

    a = emb.view(layout.n_candidates, n_exc, d).numpy()
    penalty = w * np.einsum("ced,ad->cea", a, avoid.numpy()).mean(-1).mean(-1)
    for got, base in zip(shaped.losses(emb), plain.losses(emb)):
        np.testing.assert_allclose(got.numpy(), base.numpy() + penalty, atol=1e-12)
    x = input_emb[0].numpy()
    input_penalty = w * (x @ avoid.numpy().T).mean()
    for got, base in zip(shaped.unchanged(), plain.unchanged()):
        np.testing.assert_allclose(got.numpy(), base.numpy() + input_penalty, atol=1e-12)
    # the similarity the bypass rule and the report use stays the prompt's, without the penalty
    np.testing.assert_allclose(shaped.similarity(emb).numpy(), 1 - plain.losses(emb)[0].numpy(), atol=1e-12)


def _geometry():
    """A spectral double whose prompt is reachable (a low-shelf cut with a mid boost of the tone) and whose
    avoided text is a nearby sound (the same boost without the cut): going for the prompt alone also goes
    toward the avoided text."""
    import fx

    embedder = SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0)
    x = torch.from_numpy(tone(SR, 1.0, 1))[None]
    chain = fx.Chain.from_spec("eq")

    def sound(gains: dict) -> torch.Tensor:
        u = chain.neutral_unit().clone()
        for i, (_, spec) in enumerate(chain.param_specs):
            if spec.name in gains:
                u[i] = (gains[spec.name] - spec.min) / (spec.max - spec.min)  # dB gains are linear in unit space
        with torch.no_grad():
            return embedder.embed_audio(chain.process(x, SR, u[None]), SR)[0]

    embedder.text_overrides["this sound is bright"] = sound({"low_shelf_gain_db": -12.0, "band0_gain_db": 12.0})
    embedder.text_overrides["this sound is harsh"] = sound({"band0_gain_db": 12.0})
    return embedder, x[0].numpy()


def test_avoid_lowers_the_similarity_to_the_avoided_text_against_the_same_run_without_it():
    embedder, x = _geometry()
    engine = Engine(embedder)
    kw = dict(chain="eq", seed=3, steps=60, restarts=2, excerpts=1, lr=0.05)
    plain = engine.apply(x, SR, "bright", **kw)
    avoided = engine.apply(x, SR, "bright", avoid="harsh", **kw)  # the default weight, 0.5

    def similarity(audio: np.ndarray) -> float:  # measured here, from the rendered audio
        e = embedder.embed_audio(torch.from_numpy(audio[:, : x.shape[1]])[None], SR)[0]
        return float(F.cosine_similarity(e, embedder.text_overrides["this sound is harsh"], dim=0))

    before = similarity(x)
    without, with_avoid = similarity(plain.audio), similarity(avoided.audio)
    print(f"similarity to 'harsh': input {before:.3f}, without avoid {without:.3f}, with avoid {with_avoid:.3f}")
    assert not plain.bypassed and not avoided.bypassed
    assert without > before + 0.05  # the geometry holds: the prompt alone drifts toward the avoided text
    assert with_avoid < without - 0.05
    assert avoided.similarity_after > avoided.similarity_before  # still closer to the prompt than the input
    # the report's numbers are those similarities
    entry = avoided.avoid["texts"][0]
    assert entry["avoid"] == "harsh" and entry["text"] == "this sound is harsh"
    assert entry["similarity"]["before"] == pytest.approx(before, abs=1e-5)
    assert entry["similarity"]["after"] == pytest.approx(with_avoid, abs=2e-3)  # the optimizer heard the window
    assert avoided.avoid["weight"] == 0.5
    assert plain.avoid is None and "avoid" not in plain.report()
    jsonschema.validate(json.loads(json.dumps(avoided.report())), schema())


def test_avoid_works_with_the_directional_loss_and_best():
    embedder, x = _geometry()
    engine = Engine(embedder)
    for loss in ("directional", "best"):
        kw = dict(chain="eq", seed=1, steps=40, restarts=2, excerpts=1, lr=0.05, loss=loss)
        plain = engine.apply(x, SR, "bright", **kw)
        avoided = engine.apply(x, SR, "bright", avoid=["harsh"], **kw)
        sim_plain = _sim(embedder, plain.audio, x)
        sim_avoid = _sim(embedder, avoided.audio, x)
        assert sim_avoid < sim_plain, loss


def _sim(embedder, audio, x):
    e = embedder.embed_audio(torch.from_numpy(audio[:, : x.shape[1]])[None], SR)[0]
    return float(F.cosine_similarity(e, embedder.text_overrides["this sound is harsh"], dim=0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(avoid_weight=1.0), "avoid_weight is set but there is nothing to avoid"),
    (dict(avoid=[""]), "empty avoid"),
    (dict(avoid=[3]), "avoid must be a string, got int"),
    (dict(avoid="x", avoid_weight=0), "avoid_weight must be above 0 and at most 10, got 0"),
    (dict(avoid="x", avoid_weight=11), "avoid_weight must be above 0 and at most 10, got 11"),
    (dict(avoid="x", avoid_weight=float("nan")), "avoid_weight must be a finite number"),
])
def test_bad_avoid_options_are_refused_the_same_by_the_api_and_the_command(kwargs, message, tmp_path, capsys):
    engine = Engine(SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0))
    with pytest.raises(UsageError, match=message):
        engine.apply(tone(SR), SR, "warm", chain="eq", **kwargs)
    argv = [str(tmp_path / "missing.wav"), "warm", "--chain", "eq"]
    for a in ([kwargs["avoid"]] if isinstance(kwargs.get("avoid"), str) else kwargs.get("avoid", [])):
        argv += ["--avoid", str(a)]
    if "avoid_weight" in kwargs:
        argv += ["--avoid-weight", str(kwargs["avoid_weight"])]
    if kwargs.get("avoid") == [3]:
        return  # the command line only has strings
    assert main(argv) == 2  # before the (missing) input is even looked at
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message.split(",")[0] in err


def test_a_long_avoided_text_is_refused_before_the_model_loads(tmp_path, capsys):
    """The command checks avoided texts' length with the prompts' (CLAP reads 77 tokens), before loading."""
    import soundfile as sf

    from text2fx.testing import make_test_tokenizer

    path = tmp_path / "in.wav"
    sf.write(path, tone(SR).T, SR)
    tokenizer = make_test_tokenizer(tmp_path / "tok")
    unloadable = tmp_path / "not-a-checkpoint.pt"
    unloadable.write_bytes(b"")  # found, but loading it would fail: the avoided text must be refused first
    argv = [str(path), "warm", "--chain", "eq", "--avoid", "very " * 100, "--tokenizer", str(tokenizer),
            "--clap-ckpt", str(unloadable)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "77" in err and "checkpoint" not in err.lower()


@pytest.mark.clap
def test_avoid_on_a_random_weight_clap_lowers_the_similarity_against_the_same_seed(clap_embedder):
    """Random CLAP weights: no semantics, but the same plumbing and a real comparison. Of many texts, the one the
    plain run moved its output toward the most is avoided in the same run (same seed): the output must end
    less similar to it than the plain run's."""
    engine = Engine(clap_embedder)
    sr = 16000
    x = tone(sr, 1.0, 1)
    kw = dict(chain="eq", seed=0, steps=12, restarts=1, excerpts=1, lr=0.1)
    plain = engine.apply(x, sr, "warm", **kw)
    assert not plain.bypassed
    texts = ("bright dark muddy crisp airy punchy distant metallic wide thin thick smooth harsh soft loud quiet "
             "underwater telephone radio cathedral hall room echo delay distortion compression guitar piano "
             "violin singer speech music drums bass vocals").split()

    def sims(audio) -> np.ndarray:
        with torch.no_grad():
            a = clap_embedder.embed_audio(torch.from_numpy(audio[:, : x.shape[1]])[None], sr)
            t = clap_embedder.embed_text([f"this sound is {w}" for w in texts])
        return F.cosine_similarity(a, t, dim=-1).numpy()

    before, plain_sims = sims(x), sims(plain.audio)
    k = int(np.argmax(plain_sims - before))
    assert plain_sims[k] > before[k]  # the plain run went toward it
    avoided = engine.apply(x, sr, "warm", avoid=texts[k], avoid_weight=5.0, **kw)
    after = sims(avoided.audio)[k]
    print(f"random weights - plumbing, not quality: similarity to {texts[k]!r}: input {before[k]:.4f}, "
          f"plain {plain_sims[k]:.4f}, with avoid {after:.4f} (bypassed: {avoided.bypassed})")
    assert after < plain_sims[k]
    entry = avoided.avoid["texts"][0]["similarity"]
    assert entry["before"] == pytest.approx(before[k], abs=1e-4)
    assert entry["after"] == pytest.approx(after, abs=1e-3)
