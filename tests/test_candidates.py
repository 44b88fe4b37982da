"""Several distinct candidates (`--candidates K`, `candidates=`): the unit-space distance, the greedy choice by
loss, the bypass rule per candidate, numbered outputs each with its report (planned and checked like every
output), the API's `Result.candidates`, restarts raised automatically, and the checks."""

import json

import jsonschema
import numpy as np
import pytest
import soundfile as sf
import torch

from doubles import SpectralTestEmbedder
from signals import tone
from text2fx import candidates
from text2fx.cli import main
from text2fx.engine import Engine, render
from text2fx.errors import UsageError
from text2fx.optimize import Outcome
from text2fx.options import JobOptions, OutputOptions
from text2fx.pipeline import file_job
from text2fx.report import schema

SR = 16000


def test_distance_is_the_rms_difference_in_unit_space():
    rng = np.random.default_rng(0)
    u, v = rng.random(18), rng.random(18)
    assert candidates.distance(torch.tensor(u), torch.tensor(v)) == pytest.approx(np.sqrt(np.mean((u - v) ** 2)))
    assert candidates.distance(torch.zeros(4), torch.full((4,), 0.5)) == pytest.approx(0.5)


def _outcome(losses, params, beats=None, kinds=None, bypassed=False):
    """An Outcome as the optimizer makes it, for candidates with these own losses and unit settings."""
    k = len(losses)
    beats = beats or [True] * k
    kinds = kinds or ["cosine"] * k
    order = np.argsort(losses, kind="stable")
    chosen = int(order[0])
    cands = [{"loss": kinds[j], "cosine_loss": losses[j], "directional_loss": 1.0, "own_loss": losses[j],
              "similarity_after": 1 - losses[j], "best_step": 10 + j, "beats_bypass": beats[j]} for j in range(k)]
    params = torch.tensor(params, dtype=torch.float32)
    return Outcome(params=params[chosen].clone(), loss=kinds[chosen], loss_value=losses[chosen],
                   history=[float(j) for j in range(3)], best_step=10 + chosen, steps_run=3,
                   similarity_before=0.1, similarity_after=1 - losses[chosen], candidate=chosen,
                   candidates=cands, bypassed=bypassed, candidate_params=params[chosen].clone(),
                   histories=[[float(j)] * 3 for j in range(k)], candidates_params=params)


def test_select_takes_the_best_then_each_next_best_far_enough_from_all_taken():
    params = [[0.5, 0.5], [0.52, 0.5], [0.9, 0.1], [0.1, 0.9], [0.88, 0.12]]
    losses = [0.30, 0.31, 0.35, 0.40, 0.36]
    chosen = candidates.select(_outcome(losses, params), 4, 0.1)
    restarts = [info["restart"] for _, info in chosen]
    # 1 is a near-duplicate of 0 (distance 0.014), 4 of 2 (0.02): skipped; 3 is far from both
    assert restarts == [0, 2, 3]
    assert [info["rank"] for _, info in chosen] == [1, 2, 3]
    assert all(info["of"] == 3 and info["asked"] == 4 for _, info in chosen)
    second, info = chosen[1]
    assert second.candidate == 2 and second.loss_value == 0.35 and second.best_step == 12
    assert second.params.tolist() == pytest.approx([0.9, 0.1]) and second.history == [2.0, 2.0, 2.0]
    assert second.similarity_after == pytest.approx(0.65)
    assert info["distances"] == [pytest.approx(np.sqrt(0.16 + 0.16) / np.sqrt(2), abs=1e-4),
                                 pytest.approx(np.sqrt(0.64 + 0.64) / np.sqrt(2), abs=1e-4)]


def test_select_offers_only_candidates_that_beat_the_input_and_a_bypass_alone():
    params = [[0.5, 0.5], [0.9, 0.1], [0.1, 0.9]]
    chosen = candidates.select(_outcome([0.3, 0.35, 0.4], params, beats=[True, False, True]), 3, 0.1)
    assert [info["restart"] for _, info in chosen] == [0, 2]
    bypassed = candidates.select(_outcome([0.3, 0.35, 0.4], params, bypassed=True), 3, 0.1)
    assert len(bypassed) == 1 and bypassed[0][1]["of"] == 1 and bypassed[0][1]["distances"] == []


def test_select_ranks_loss_best_candidates_by_the_sum_of_both_losses():
    params = [[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]]
    outcome = _outcome([0.3, 0.2, 0.25], params, kinds=["cosine", "cosine", "directional"])
    dir_losses = [0.1, 0.6, 0.2]  # sums 0.4, 0.8, 0.45
    for c, d in zip(outcome.candidates, dir_losses):
        c["directional_loss"] = d
    outcome.candidate, outcome.params = 0, outcome.candidates_params[0].clone()
    assert [info["restart"] for _, info in candidates.select(outcome, 3, 0.1)] == [0, 2, 1]


@pytest.fixture
def engine():
    return Engine(SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0))


def test_apply_returns_the_best_with_its_distinct_candidates(engine):
    # at 44.1 kHz every EQ range is whole, so the report's settings map back to the optimizer's unit space
    sr = 44100
    x = tone(sr, 1.0, 2)
    result = engine.apply(x, sr, "warm", chain="eq", candidates=3, steps=20, excerpts=1, seed=0)
    assert result.optimization["restarts"] == 6  # raised to twice the candidates asked
    cands = result.candidates
    assert cands[0] is result and 1 <= len(cands) <= 3
    assert [c.choice["rank"] for c in cands] == list(range(1, len(cands) + 1))
    losses = [c.optimization["loss_value"] for c in cands]
    assert losses == sorted(losses)
    assert len({c.choice["restart"] for c in cands}) == len(cands)
    for c in cands:
        assert not c.bypassed and c.similarity_after >= c.similarity_before
        # each candidate's audio is its own settings rendered (the report re-renders it exactly)
        np.testing.assert_allclose(render(x, sr, c.report()), c.audio, atol=1e-6)
        jsonschema.validate(json.loads(json.dumps(c.report())), schema())
    assert len(cands) >= 2, "six restarts from random starts should give two distinct settings"
    from fx import Chain

    chain = Chain.from_spec("eq")
    unit = [chain.params_from_dict(c.params, sr) for c in cands]
    for a in range(len(cands)):
        for b in range(a + 1, len(cands)):
            assert candidates.distance(unit[a], unit[b]) >= 0.1 - 1e-6
            assert cands[a].choice["distances"][b - 1] == pytest.approx(candidates.distance(unit[a], unit[b]),
                                                                           abs=1e-3)


def test_fewer_distinct_candidates_than_asked_gives_what_exists(engine):
    x = tone(SR, 1.0, 2)
    result = engine.apply(x, SR, "warm", chain="eq", candidates=3, candidate_distance=1.0, steps=10, excerpts=1)
    assert len(result.candidates) == 1 and result.choice == {**result.choice, "rank": 1, "of": 1, "asked": 3}


def test_numbered_files_each_with_its_report(engine, tmp_path):
    x = tone(SR, 1.0, 2)
    sf.write(tmp_path / "take.wav", x.T, SR)
    job = file_job([tmp_path / "take.wav"], JobOptions(prompts="warm", chain="eq", candidates=3), OutputOptions())
    assert [p.audio.name for p in job.plans] == ["take.warm.1.wav", "take.warm.2.wav", "take.warm.3.wav"]
    assert [p.params.name for p in job.plans] == ["take.warm.1.json", "take.warm.2.json", "take.warm.3.json"]
    job = file_job([tmp_path / "take.wav"], JobOptions(prompts="warm", chain="eq", candidates=2),
                   OutputOptions(output=str(tmp_path / "out.flac"), params=str(tmp_path / "s.json")))
    assert [(p.audio.name, p.params.name) for p in job.plans] == [("out.1.flac", "s.1.json"), ("out.2.flac", "s.2.json")]

    [result] = engine.apply_files(tmp_path / "take.wav", "warm", chain="eq", candidates=3, steps=20, excerpts=1)
    written = sorted(p.name for p in tmp_path.iterdir())
    n = len(result.candidates)
    assert written == sorted(["take.wav"] + [f"take.warm.{k}.{ext}" for k in range(1, n + 1) for ext in ("wav", "json")])
    for k, c in enumerate(result.candidates, 1):
        report = json.loads((tmp_path / f"take.warm.{k}.json").read_text())
        jsonschema.validate(report, schema())
        assert report["candidate"]["rank"] == k and report["output"]["path"] == str(tmp_path / f"take.warm.{k}.wav")
        audio, sr = sf.read(tmp_path / f"take.warm.{k}.wav", dtype="float32", always_2d=True)
        # written as the input's PCM_16 (steps of 3e-5; the input itself was quantized the same way)
        np.testing.assert_allclose(audio.T, render(x, SR, report), atol=4e-4)


def test_an_existing_numbered_output_is_refused_before_any_work(engine, tmp_path):
    sf.write(tmp_path / "take.wav", tone(SR).T, SR)
    (tmp_path / "take.warm.2.wav").write_bytes(b"keep me")
    with pytest.raises(UsageError, match="take.warm.2.wav already exists"):
        engine.apply_files(tmp_path / "take.wav", "warm", chain="eq", candidates=2)
    assert engine.embedder.text_calls == []
    assert (tmp_path / "take.warm.2.wav").read_bytes() == b"keep me"


@pytest.mark.parametrize("kwargs, argv, message", [
    (dict(candidates=3, restarts=2), ["--candidates", "3", "--restarts", "2"],
     "candidates 3 needs at least as many restarts, got restarts 2"),
    (dict(candidates=9), ["--candidates", "9"], "candidates must be at most 8, got 9"),
    (dict(candidates=0), ["--candidates", "0"], "candidates must be at least 1, got 0"),
    (dict(candidate_distance=0.2), ["--candidate-distance", "0.2"], "candidate_distance is set but only one result"),
    (dict(candidates=2, candidate_distance=0), ["--candidates", "2", "--candidate-distance", "0"],
     "candidate_distance must be above 0 and at most 1, got 0"),
])
def test_bad_candidate_options_are_refused_the_same_by_the_api_and_the_command(engine, kwargs, argv, message,
                                                                               tmp_path, capsys):
    with pytest.raises(UsageError) as caught:
        engine.apply(tone(SR), SR, "warm", chain="eq", **kwargs)
    assert message in str(caught.value)
    assert main([str(tmp_path / "missing.wav"), "warm", "--chain", "eq", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.clap
def test_the_command_writes_and_prints_candidates_with_avoid_and_like(clap_checkpoint, clap_tokenizer_dir,
                                                                       tmp_path, capsys):
    """The whole command on a random-weight CLAP (plumbing, not quality): numbered files with their reports,
    and one summary per candidate with its rank and the similarities to the reference and the avoided text."""
    sf.write(tmp_path / "take.wav", tone(SR, 1.0, 2).T, SR)
    sf.write(tmp_path / "ref.wav", tone(44100, 2.0, 1, seed=3).T, 44100)
    argv = [str(tmp_path / "take.wav"), "warm", "--chain", "eq", "--candidates", "2", "--steps", "3",
            "--avoid", "muddy", "--like", str(tmp_path / "ref.wav"), "--clap-ckpt", str(clap_checkpoint),
            "--tokenizer", str(clap_tokenizer_dir), "--device", "cpu", "--candidate-distance", "0.05"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    reports = sorted(tmp_path.glob("take.warm.*.json"))
    assert 1 <= len(reports) <= 2 and not (tmp_path / "take.warm.wav").exists()
    for k, path in enumerate(reports, 1):
        report = json.loads(path.read_text())
        jsonschema.validate(report, schema())
        assert report["candidate"]["rank"] == k and report["optimization"]["restarts"] == 4
        assert report["like"]["path"] == str(tmp_path / "ref.wav") and report["avoid"]["texts"][0]["avoid"] == "muddy"
        assert f"candidate {k} of {len(reports)}" in out
    assert "similarity to the reference" in out and 'avoid "muddy": similarity' in out
    if len(reports) < 2:
        assert "only 1 of the 2 candidates asked" in out
