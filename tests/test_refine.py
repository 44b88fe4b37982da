"""Refine in turns: `--from PREVIOUS.json` / `previous=` starts from saved settings, hears them as the
"before", keeps the history of turns, and a sequence replays exactly (CPU, spectral test double)."""

import json

import jsonschema
import numpy as np
import pytest
import soundfile as sf
import torch

import fx
import text2fx.clap
import text2fx.clap.files
import text2fx.optimize as optimize_
from doubles import RecordingChain, SpectralTestEmbedder
from signals import tone
from text2fx.cli import main
from text2fx.engine import Engine, render
from text2fx.errors import InputError, UsageError
from text2fx.recipe import Recipe
from text2fx.report import schema
from text2fx.turns import START_SPREAD, replay

SR = 16000


@pytest.fixture
def engine():
    return Engine(SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0))


@pytest.fixture
def double_cli(monkeypatch):
    """The command with the spectral test double in place of CLAP; `loads` counts model loads."""
    loads = []

    def load(*a, **k):
        loads.append(1)
        return SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0)

    monkeypatch.setattr(text2fx.clap.files, "resolve_model_files",
                        lambda *a, **k: text2fx.clap.files.ModelFiles("double.pt", "double-tokenizer"))
    monkeypatch.setattr(text2fx.clap, "check_text_length", lambda *a, **k: None)
    monkeypatch.setattr(text2fx.clap, "ClapEmbedder", load)
    return loads


def clip():
    return tone(seconds=1.0, channels=1)


def first_turn(engine, chain="eq", steps=4):
    r = engine.apply(clip(), SR, "bright", chain=chain, steps=steps, restarts=2, seed=1)
    assert not r.bypassed
    return r


def test_the_optimizer_starts_at_the_previous_settings_and_hears_them_as_before(monkeypatch):
    embedder = SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0)
    chain = RecordingChain(fx.Chain.from_spec("eq,gain"))
    start = torch.rand(chain.num_params, generator=torch.Generator().manual_seed(0)).double() * 0.8 + 0.1
    seen = {}

    class Spy(optimize_.Objective):
        def __init__(self, layout, input_emb, *rest):
            seen["input_emb"] = input_emb.clone()
            super().__init__(layout, input_emb, *rest)

    monkeypatch.setattr(optimize_, "Objective", Spy)
    x = torch.from_numpy(clip())[None, None]  # (inputs, excerpts, channels, samples)
    text = embedder.embed_text(["this sound is dark", "this sound is not dark"])
    recipe = Recipe(steps=3, restarts=4, excerpts=1, loss="directional", patience=None)
    [outcome] = optimize_.optimize(chain, embedder, x, SR, [0], text[:1], text[1:], recipe, seed=3, start=start)

    # the "before" is the input processed with the previous settings (the directional reference)
    before = chain.chain.process(x[0], SR, start[None].float())
    assert torch.allclose(seen["input_emb"][0], embedder.embed_audio(before, SR), atol=1e-6)
    sim = torch.nn.functional.cosine_similarity(embedder.embed_audio(before, SR), text[:1]).item()
    assert outcome.similarity_before == pytest.approx(sim, abs=1e-6)
    # step 0: the first restart at the previous settings, the others at perturbations around them
    step0 = chain.calls[1]
    assert torch.allclose(step0[0].double(), start, atol=1e-6)
    logit = lambda u: torch.logit(u.double())  # noqa: E731
    spread = (logit(step0[1:]) - logit(start)).std().item()
    assert 0.3 < spread < 0.7 and START_SPREAD == 0.5


def test_steps_one_continues_from_the_saved_settings_exactly(engine):
    r1 = first_turn(engine, chain="eq,reverb", steps=3)
    r2 = engine.apply(clip(), SR, "darker", steps=1, restarts=1, seed=9, previous=r1.report())
    assert r2.params == r1.params  # the saved settings, to the last digit
    assert r2.params["chain"] == "eq,reverb"  # no --chain: the previous one
    # what a turn that keeps the previous settings renders is those settings, not the raw input
    assert np.array_equal(r2.audio, render(clip(), SR, r1.report()))
    assert r2.similarity_after == r2.similarity_before


def test_a_second_turn_moves_from_where_the_first_left(engine):
    r1 = first_turn(engine, chain="eq")
    r2 = engine.apply(clip(), SR, "darker", steps=8, restarts=2, seed=2, previous=r1)
    assert r2.params != r1.params and r2.similarity_after >= r2.similarity_before
    # the "before" of turn 2 is turn 1's sound: its similarity to the new words, not the raw input's
    raw = engine.apply(clip(), SR, "darker", chain="eq", steps=1, restarts=1, seed=2)
    assert r2.similarity_before != pytest.approx(raw.similarity_before, abs=1e-4)
    assert [t["prompt"] for t in r2.turns] == ["bright", "darker"]
    assert r2.turns[0]["settings"] == r1.params and r2.turns[1]["settings"] == r2.params
    assert r2.turns[1]["from_previous"] and not r2.turns[0]["from_previous"]
    jsonschema.validate(json.loads(json.dumps(r2.report())), schema())


def test_a_longer_chain_starts_its_extra_effects_neutral(engine):
    r1 = first_turn(engine, chain="eq")
    r2 = engine.apply(clip(), SR, "in a hall", chain="gain,eq,reverb", steps=1, restarts=1, previous=r1)
    neutral = fx.Chain.from_spec("gain,eq,reverb")
    neutral_effects = neutral.to_dict(neutral.neutral_unit(torch.float64), sample_rate=SR)["effects"]
    assert r2.params["effects"] == [neutral_effects[0], r1.params["effects"][0], neutral_effects[2]]


def some_settings(spec, seed=1):
    chain = fx.Chain.from_spec(spec, seed=seed)
    u = torch.linspace(0.2, 0.8, chain.num_params, dtype=torch.float64)
    return chain.to_dict(u)


def test_the_chain_noise_seed_stays_the_previous_ones(engine):
    previous = some_settings("reverb", seed=1)  # seed 1: the reverb's noise
    r2 = engine.apply(clip(), SR, "darker", steps=1, restarts=1, seed=7, previous=previous)
    assert r2.params == previous  # and so the same reverb, not one with seed 7's noise
    assert r2.optimization["seed"] == 7 and r2.turns[-1]["seed"] == 7


@pytest.mark.parametrize("chain", ["reverb,eq", "eq", "reverb", "gain,reverb"])
def test_another_chain_order_or_a_shorter_chain_is_refused(engine, chain):
    with pytest.raises(UsageError, match="settings are for chain 'eq,reverb'") as e:
        engine.apply(clip(), SR, "darker", chain=chain, steps=1, previous=some_settings("eq,reverb"))
    assert "\n" not in str(e.value)


def test_two_turns_replay_exactly_and_render_reproduces_the_last(engine):
    r1 = engine.apply(clip(), SR, "bright", chain="eq", steps=5, restarts=2, seed=4, amount=0.8)
    r2 = engine.apply(clip(), SR, "less boomy", chain="eq,gain", steps=5, restarts=2, seed=5, loss="best",
                      previous=r1)
    report = json.loads(json.dumps(r2.report()))
    again = replay(Engine(SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0)), clip(), SR, report)
    assert again.params == r2.params and again.turns == report["turns"]
    assert np.array_equal(again.audio, r2.audio)
    assert np.array_equal(render(clip(), SR, report), r2.audio)
    assert report["turns"][0]["amount"] == 0.8 and report["turns"][0]["settings"] == r1.params


def test_a_bare_settings_file_starts_a_history_that_replays(engine, tmp_path):
    r1 = first_turn(engine, chain="eq")
    bare = tmp_path / "eq.json"
    bare.write_text(json.dumps(r1.params))
    r2 = engine.apply(clip(), SR, "darker", steps=4, restarts=1, seed=2, previous=str(bare))
    assert r2.turns[0] == {"settings": r1.params} and r2.turns[1]["prompt"] == "darker"
    assert replay(engine, clip(), SR, r2.report()).params == r2.params
    jsonschema.validate(json.loads(json.dumps(r2.report())), schema())


def test_replay_refuses_a_report_without_turns_and_another_max_batch(engine):
    r1 = first_turn(engine)
    with pytest.raises(InputError, match="no turns to replay"):
        replay(engine, clip(), SR, r1.params)
    other = Engine(SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0), max_batch=4)
    with pytest.raises(InputError, match="max_batch"):
        replay(other, clip(), SR, r1.report())


def test_from_the_command_two_turns_then_render_and_replay(tmp_path, double_cli, capsys):
    src = tmp_path / "in.wav"
    sf.write(src, clip().T, SR, subtype="FLOAT")
    quick = ["--steps", "4", "--restarts", "2", "--excerpts", "1", "-q"]
    assert main([str(src), "bright", "--chain", "eq", "-o", str(tmp_path / "one.wav"), "--seed", "3",
                 *quick]) == 0
    assert main([str(src), "a bit less boomy", "--from", str(tmp_path / "one.json"), "-o",
                 str(tmp_path / "two.wav"), "--amount", "0.7", *quick[:-1]]) == 0
    printed = capsys.readouterr().out
    assert "turn 2: refined from the previous settings" in printed and "amount 0.7" in printed
    report = json.loads((tmp_path / "two.json").read_text())
    jsonschema.validate(report, schema())
    assert [t["prompt"] for t in report["turns"]] == ["bright", "a bit less boomy"]
    assert report["chain"]["chain"] == "eq" and report["amount"]["value"] == 0.7

    assert main(["render", str(src), str(tmp_path / "two.json"), "-o", str(tmp_path / "again.wav"), "-q"]) == 0
    assert np.array_equal(sf.read(tmp_path / "again.wav")[0], sf.read(tmp_path / "two.wav")[0])
    engine = Engine(SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0))
    audio = sf.read(src, dtype="float32", always_2d=True)[0].T
    assert replay(engine, audio, SR, tmp_path / "two.json").params == report["chain"]


@pytest.mark.parametrize("content, words", [
    (None, ["not found"]),
    ("{not json", ["not valid JSON"]),
    ('{"hello": 1}', ["no effect settings"]),
    (json.dumps({"chain": "reverb", "seed": 0, "effects": [{"type": "reverb", "params": {"mix": 500}}]}),
     ["reverb"]),
    (json.dumps({"chain": "gain", "seed": 0, "effects": [{"type": "gain", "params": {"gain_db": 3.0}}]}),
     ["settings are for chain 'gain'", "'eq,reverb'"]),
])
def test_bad_from_files_are_refused_in_one_line_before_any_model_load(tmp_path, double_cli, capsys, content, words):
    src = tmp_path / "in.wav"
    sf.write(src, clip().T, SR)
    previous = tmp_path / "previous.json"
    if content is not None:
        previous.write_text(content)
    code = main([str(src), "darker", "--from", str(previous), "--chain", "eq,reverb", "-q"])
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and err.startswith("text2fx: error:") and "\n" not in err, err
    for w in words:
        assert w in err, err
    assert double_cli == []  # refused before the model loaded
    assert not list(tmp_path.glob("in.*.wav"))
