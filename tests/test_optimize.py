"""The optimizer, with the real fx chains and a cheap stand-in for CLAP (tests/doubles.py)."""

import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import fx
from doubles import RecordingChain, SpectralTestEmbedder
from text2fx.errors import InputError
from text2fx.losses import cosine_loss, directional_loss
from text2fx.optimize import PRESETS, Recipe, initial_logits, optimize, shifted

SR = 16000


def noise(channels=1, seconds=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(1, 1, channels, int(seconds * SR), generator=g)  # (inputs, excerpts, C, T)


def reachable_target(embedder, chain, clips, seed=123):
    """A text embedding equal to the embedding of the clip under some chain setting: loss 0 is reachable."""
    u = torch.rand(1, chain.num_params, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return embedder.embed_audio(chain.process(clips[0], SR, u), SR)


def the_input_itself(embedder, clips):
    """A text embedding pinned to the input's own embedding: any change to the audio moves away from it."""
    embedder.text_overrides["the input itself"] = embedder.embed_audio(clips[0], SR)[0]
    return embedder.embed_text(["the input itself"])


def run(chain, embedder, clips, recipe, seed=0, target=None, anchor=None, **kwargs):
    target = reachable_target(embedder, chain, clips) if target is None else target
    anchor = embedder.embed_text(["anchor"]) if anchor is None else anchor
    return optimize(chain, embedder, clips, SR, [0], target, anchor, recipe, seed, **kwargs)[0]


@pytest.fixture
def embedder():
    return SpectralTestEmbedder(sample_rate=SR)


@pytest.fixture
def chain():
    return fx.Chain.from_spec("eq", seed=0)


def test_loss_decreases(chain, embedder):
    clips = noise()
    out = run(chain, embedder, clips, Recipe(steps=60, lr=0.1, restarts=1, time_shift=False, patience=None))
    first, best = out.history[0], min(out.history)
    assert best < 0.5 * first
    assert out.similarity_after > out.similarity_before
    assert out.steps_run == 60


def test_best_iterate_is_kept_not_the_last(chain, embedder):
    clips = noise()
    recording = RecordingChain(chain)
    recipe = Recipe(steps=20, lr=0.5, restarts=1, time_shift=False, patience=None)
    # The last step's output is spoiled, so the last iterate is certainly not the best one.
    recording.spoiled_calls = frozenset({recipe.steps - 1})
    out = run(recording, embedder, clips, recipe, target=reachable_target(embedder, chain, clips))
    assert not out.bypassed
    assert out.history[-1] > min(out.history) + 0.1
    assert out.best_step == int(np.argmin(out.history)) < len(out.history) - 1
    assert len(recording.calls) == out.steps_run + 1  # one chain call per step, then the final evaluation
    tried = recording.calls[: out.steps_run]
    assert torch.equal(out.params, tried[out.best_step][0])
    assert not torch.allclose(out.params, tried[-1][0], atol=1e-4)
    # The returned parameters reproduce the recorded best loss (no time shift: the same computation).
    assert out.loss_value == pytest.approx(min(out.history), abs=1e-5)


def test_restarts_keep_the_best_candidate(chain, embedder):
    clips = noise()
    out = run(chain, embedder, clips, Recipe(steps=10, lr=0.05, restarts=4, time_shift=False, patience=None))
    losses = [c["cosine_loss"] for c in out.candidates]
    assert len(losses) == 4 and len(set(losses)) == 4  # four distinct starting points
    assert not out.bypassed
    assert out.candidate == int(np.argmin(losses))
    assert out.loss_value == pytest.approx(min(losses), abs=1e-6)


def test_seeded_runs_are_identical_and_seeds_differ(chain, embedder):
    clips = noise(channels=2)
    recipe = Recipe(steps=8, lr=0.05, restarts=2, patience=None)
    a = run(chain, embedder, clips, recipe, seed=7)
    b = run(chain, embedder, clips, recipe, seed=7)
    c = run(chain, embedder, clips, recipe, seed=8)
    assert torch.equal(a.params, b.params) and a.history == b.history
    assert not torch.equal(a.params, c.params)


def test_target_keys_make_a_result_independent_of_batch_companions(chain, embedder):
    clips = torch.cat([noise(seed=5), noise(seed=0)])
    texts = embedder.embed_text(["x", "y"])
    recipe = Recipe(steps=5, lr=0.05, restarts=2, patience=None)  # with time shifts: those are drawn too
    alone = optimize(chain, embedder, clips[1:], SR, [0], texts[1:], texts[1:], recipe, seed=3, target_keys=[42])[0]
    together = optimize(chain, embedder, clips, SR, [0, 1], texts, texts, recipe, seed=3, target_keys=[7, 42])[1]
    assert torch.allclose(alone.params, together.params, atol=1e-6)
    assert together.history == pytest.approx(alone.history, abs=1e-6)
    other_key = optimize(chain, embedder, clips[1:], SR, [0], texts[1:], texts[1:], recipe, seed=3, target_keys=[7])[0]
    assert other_key.history[0] != alone.history[0]


def test_best_mode_optimizes_both_losses_and_picks_by_their_sum(chain, embedder):
    clips = noise()
    out = run(chain, embedder, clips, Recipe(steps=6, lr=0.05, loss="best", restarts=2, patience=None))
    kinds = [c["loss"] for c in out.candidates]
    assert kinds == ["cosine", "cosine", "directional", "directional"]
    sums = [c["cosine_loss"] + c["directional_loss"] for c in out.candidates]
    assert out.candidate == int(np.argmin(sums))
    chosen = out.candidates[out.candidate]
    assert not out.bypassed
    assert out.loss == chosen["loss"]
    assert out.loss_value == pytest.approx(chosen[f"{out.loss}_loss"], abs=1e-6)


def test_directional_loss_run(chain, embedder):
    clips = noise()
    out = run(chain, embedder, clips, Recipe(steps=30, lr=0.1, loss="directional", restarts=1,
                                             time_shift=False, patience=None))
    assert out.loss == "directional"
    assert min(out.history) < out.history[0] - 0.1
    assert not out.bypassed and out.loss_value < 1.0


def test_early_stop(chain, embedder):
    clips = noise()
    # No step improves by min_delta at this rate: progress was last made at step 0, so the first check with
    # `patience` steps behind it (after step 10: checks come every 5 steps) stops the run.
    out = run(chain, embedder, clips, Recipe(steps=400, lr=1e-6, restarts=1, time_shift=False, patience=5,
                                             check_every=5))
    assert out.steps_run == 10
    assert len(out.history) == out.steps_run


def test_progress_is_reported_after_the_first_step_then_every_check(chain, embedder):
    clips = noise()
    seen = []
    run(chain, embedder, clips, Recipe(steps=25, lr=0.05, restarts=2, time_shift=False, patience=None,
                                       check_every=10), progress=lambda *args: seen.append(args))
    assert [s[0] for s in seen] == [1, 10, 20, 25]
    assert all(s[1] == 25 for s in seen)
    bests = [s[3] for s in seen]
    assert bests == sorted(bests, reverse=True)
    assert all(loss >= best for _, _, loss, best in seen)


def test_several_targets_in_one_batch(chain, embedder):
    clips = torch.cat([noise(seed=1), noise(seed=2)])  # two inputs
    t1 = reachable_target(embedder, chain, clips[:1], seed=1)
    t2 = reachable_target(embedder, chain, clips[1:], seed=2)
    texts = torch.cat([t1, t2, t1])
    outs = optimize(chain, embedder, clips, SR, [0, 1, 1], texts, texts, Recipe(steps=40, lr=0.1, restarts=1,
                    time_shift=False, patience=None), seed=0)
    assert len(outs) == 3
    for o in outs:
        assert min(o.history) < o.history[0]
    # Target 0 and 2 share a text but not an input, so their starting similarities differ.
    assert outs[0].similarity_before != outs[2].similarity_before


# --- the bypass -------------------------------------------------------------------------------------------


def test_bypass_when_every_restart_ends_worse_than_the_input(chain, embedder):
    clips = noise()
    neutral = chain.neutral_unit()
    # The neutral settings leave the audio unchanged, which is what makes them the bypass.
    assert torch.allclose(chain.process(clips[0], SR, neutral[None]), clips[0], atol=1e-6)
    text = the_input_itself(embedder, clips)
    recipe = Recipe(steps=10, lr=0.05, restarts=3, time_shift=False, patience=None)
    out = run(chain, embedder, clips, recipe, target=text)
    bypass_loss = 1.0 - out.similarity_before
    assert all(c["cosine_loss"] > bypass_loss for c in out.candidates)
    assert out.bypassed
    assert torch.equal(out.params, neutral)
    assert out.similarity_after == out.similarity_before
    assert out.loss == "cosine" and out.loss_value == pytest.approx(bypass_loss, abs=1e-7)
    # history and best_step still describe the chosen candidate's optimization
    assert len(out.history) == out.steps_run == 10
    assert out.history[out.best_step] == min(out.history)
    assert out.history[out.best_step] == pytest.approx(out.candidates[out.candidate]["cosine_loss"], abs=1e-6)
    assert not torch.allclose(out.candidate_params, neutral, atol=1e-2)  # what the optimization reached


def test_bypass_when_no_directional_candidate_beats_no_change(chain, embedder):
    clips = noise()
    # Text and anchor the same: there is no direction to move in, every candidate's loss is exactly the
    # loss of no change (1.0), which is not lower: the bypass wins.
    same = embedder.embed_text(["anchor"])
    out = run(chain, embedder, clips, Recipe(steps=5, lr=0.05, loss="directional", restarts=2, patience=None),
              target=same, anchor=same)
    assert [c["directional_loss"] for c in out.candidates] == [1.0, 1.0]
    assert out.bypassed and out.loss == "directional" and out.loss_value == 1.0
    assert torch.equal(out.params, chain.neutral_unit())
    assert out.similarity_after == out.similarity_before


def test_bypass_when_the_candidate_beats_its_loss_but_ends_less_similar(chain, embedder):
    clips = noise()
    # The directional loss improves (moving along text - anchor), but the text is the input itself, so any
    # change lowers the similarity to it: the candidate does not beat the input.
    text = the_input_itself(embedder, clips)
    recipe = Recipe(steps=30, lr=0.1, loss="directional", restarts=3, time_shift=False, patience=None)
    out = run(chain, embedder, clips, recipe, target=text)
    chosen = out.candidates[out.candidate]
    assert chosen["directional_loss"] < 1.0  # better than no change on its own loss...
    assert 1.0 - chosen["cosine_loss"] < out.similarity_before  # ...but less similar to the text
    assert out.bypassed and out.loss_value == 1.0
    assert torch.equal(out.params, chain.neutral_unit())
    assert out.similarity_after == out.similarity_before


def test_improving_run_is_not_bypassed(chain, embedder):
    clips = noise()
    recording = RecordingChain(chain)
    out = run(recording, embedder, clips, Recipe(steps=20, lr=0.1, restarts=2, time_shift=False, patience=None))
    assert not out.bypassed
    assert out.similarity_after > out.similarity_before
    assert out.loss_value < 1.0 - out.similarity_before
    assert not torch.allclose(out.params, chain.neutral_unit(), atol=1e-2)
    # the params are the chosen candidate's best, as evaluated at the end (rows candidate-major)
    assert torch.equal(out.params, recording.calls[-1][out.candidate])
    assert torch.equal(out.candidate_params, out.params)


# --- the losses are those of text2fx.losses ---------------------------------------------------------------


def test_optimizer_losses_equal_losses_py_on_the_same_embeddings(monkeypatch, chain, embedder):
    import text2fx.optimize.layout as layout_module

    called = []

    def spy(fn):
        def wrapper(*args):
            called.append(fn.__name__)
            return fn(*args)

        return wrapper

    monkeypatch.setattr(layout_module, "cosine_loss", spy(cosine_loss))
    monkeypatch.setattr(layout_module, "directional_loss", spy(directional_loss))
    clips = torch.cat([noise(seed=3), noise(seed=4)], dim=1)  # one input, two excerpts
    text = reachable_target(embedder, chain, clips[:, :1])
    anchor = embedder.embed_text(["anchor"])
    recording = RecordingChain(chain)
    recipe = Recipe(steps=3, lr=0.05, loss="best", restarts=1, time_shift=False, patience=None)
    out = run(recording, embedder, clips, recipe, target=text, anchor=anchor)
    assert {"cosine_loss", "directional_loss"} <= set(called)

    with torch.no_grad():
        input_emb = embedder.embed_audio(clips[0], SR)  # (E, D)

        def by_hand(u):
            emb = embedder.embed_audio(chain.process(clips[0], SR, u.expand(2, -1)), SR)
            return (float(cosine_loss(emb, text).mean()),
                    float(directional_loss(emb, input_emb, text, anchor).mean()))

        # Each candidate's final losses, at its best parameters (the final evaluation: rows per excerpt).
        final_u = recording.calls[-1][::2]
        for j, candidate in enumerate(out.candidates):
            cos, direction = by_hand(final_u[j])
            assert candidate["cosine_loss"] == pytest.approx(cos, abs=1e-6)
            assert candidate["directional_loss"] == pytest.approx(direction, abs=1e-6)
        # The chosen candidate's loss at step 0, at its starting parameters.
        start = by_hand(recording.calls[0][::2][out.candidate])
        assert out.history[0] == pytest.approx(start[0 if out.loss == "cosine" else 1], abs=1e-6)
        assert out.similarity_before == pytest.approx(1.0 - float(cosine_loss(input_emb, text).mean()), abs=1e-6)


# --- pieces -----------------------------------------------------------------------------------------------


def test_shifted_matches_roll():
    x = torch.arange(2 * 3 * 10, dtype=torch.float32).reshape(2, 3, 10)
    shifts = torch.tensor([3, 9])
    y = shifted(x, shifts)
    assert torch.equal(y[0], torch.roll(x[0], 3, -1))
    assert torch.equal(y[1], torch.roll(x[1], 9, -1))


def test_neutral_init_starts_at_neutral(chain):
    z = initial_logits(chain.neutral_unit(), 3, "neutral", torch.Generator().manual_seed(0))
    expected = chain.neutral_unit().clamp(0.02, 0.98)
    assert torch.allclose(torch.sigmoid(z[0]), expected, atol=1e-6)
    assert not torch.allclose(z[1], z[0])


def test_cuda_graph_needs_cuda(chain, embedder):
    clips = noise()
    target = reachable_target(embedder, chain, clips)
    with pytest.raises(ValueError, match="CUDA"):
        optimize(chain, embedder, clips, SR, [0], target, target, Recipe(steps=2), cuda_graph=True)
    # On the CPU "when possible" (None) and the default (False) both run the plain loop.
    a = optimize(chain, embedder, clips, SR, [0], target, target, Recipe(steps=3, restarts=1), cuda_graph=None)[0]
    b = optimize(chain, embedder, clips, SR, [0], target, target, Recipe(steps=3, restarts=1), cuda_graph=False)[0]
    assert torch.equal(a.params, b.params)


def test_graph_safety_is_opt_in():
    assert fx.Chain.from_spec("eq,reverb,gain,distortion").graph_safe
    assert not fx.Chain.from_spec("eq,compressor").graph_safe  # torchcomp's numba kernel

    class Custom(fx.Effect):
        type_name = "custom-graph-test"
        param_specs = ()

        def process(self, audio, sample_rate, params):
            return audio

    assert not fx.Chain([fx.create_effect("eq"), Custom()]).graph_safe


def test_warm_up_before_a_capture_leaves_no_trace(monkeypatch, chain, embedder):
    """Before recording a CUDA graph the loop runs real warm-up steps, then resets its state; the run must then
    be exactly the run without warm-up. Simulated here on the CPU (the graph replay itself is tested on CUDA)."""
    import text2fx.optimize as optimize_module

    clips = noise(channels=2)
    recipe = Recipe(steps=6, lr=0.05, loss="best", restarts=2, patience=None)
    plain = run(chain, embedder, clips, recipe)
    warm_ups = []

    def warm_up_then_reset(step, reset, steps, required):
        for _ in range(3):
            step()
        warm_ups.append(3)
        reset()
        return step

    monkeypatch.setattr(optimize_module, "_use_cuda_graph", lambda *args: True)
    monkeypatch.setattr(optimize_module, "_capture", warm_up_then_reset)
    warmed = run(chain, embedder, clips, recipe)
    assert warm_ups == [3]
    assert torch.equal(plain.params, warmed.params)
    assert plain.history == warmed.history and plain.best_step == warmed.best_step


# --- the recipe -------------------------------------------------------------------------------------------


def test_paper_preset_is_the_papers_recipe():
    p = PRESETS["paper"]
    assert (p.steps, p.lr, p.init, p.loss, p.restarts, p.patience) == (600, 0.01, "random", "cosine", 1, None)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(steps=-1), "steps must be at least 0, got -1"),
        (dict(steps=2.5), "steps must be an integer, got 2.5"),
        (dict(steps=True), "steps must be an integer, got True"),
        (dict(steps="10"), "steps must be an integer, got '10'"),
        (dict(restarts=0), "restarts must be at least 1, got 0"),
        (dict(restarts=2.0), "restarts must be an integer, got 2.0"),
        (dict(excerpts=0), "excerpts must be at least 1, got 0"),
        (dict(excerpts=False), "excerpts must be an integer, got False"),
        (dict(patience=0), "patience must be at least 1, got 0"),
        (dict(patience=3.5), "patience must be an integer, got 3.5"),
        (dict(check_every=0), "check_every must be at least 1, got 0"),
        (dict(check_every=None), "check_every must be an integer, got None"),
        (dict(lr=0), "lr must be positive, got 0.0"),
        (dict(lr=-0.1), "lr must be positive, got -0.1"),
        (dict(lr=math.nan), "lr must be a finite number, got nan"),
        (dict(lr=math.inf), "lr must be a finite number, got inf"),
        (dict(lr=True), "lr must be a number, got True"),
        (dict(lr="0.1"), "lr must be a number, got '0.1'"),
        (dict(loss="l2"), "unknown loss 'l2'; choose one of cosine, directional, best"),
        (dict(loss=None), "unknown loss None"),
        (dict(init="zeros"), "unknown init 'zeros'; choose one of random, neutral"),
        (dict(time_shift=1), "time_shift must be True or False, got 1"),
        (dict(time_shift="yes"), "time_shift must be True or False, got 'yes'"),
        (dict(min_delta=-1e-3), "min_delta must be at least 0, got -0.001"),
        (dict(min_delta=math.nan), "min_delta must be a finite number, got nan"),
        (dict(min_delta=True), "min_delta must be a number, got True"),
    ],
)
def test_recipe_rejects_bad_settings(bad, message):
    with pytest.raises(InputError, match=re.escape(message)) as caught:
        Recipe(**bad)
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)


def test_recipe_stores_plain_numbers():
    r = Recipe(steps=np.int64(5), restarts=np.int32(2), patience=None, lr=np.float32(0.5), min_delta=0)
    assert (r.steps, r.restarts, r.patience) == (5, 2, None)
    assert type(r.steps) is int and type(r.restarts) is int
    assert type(r.lr) is float and r.lr == 0.5 and type(r.min_delta) is float


def test_recipe_from_preset_changes_single_fields():
    r = Recipe.from_preset("paper", steps=50, loss="best")
    assert (r.steps, r.loss, r.lr, r.restarts) == (50, "best", PRESETS["paper"].lr, 1)
    assert Recipe.from_preset("fast") == PRESETS["fast"]


@pytest.mark.parametrize(
    "preset, changes, message",
    [
        ("turbo", {}, "unknown preset 'turbo'; choose one of paper, default, fast"),
        ("auto", {}, "resolve 'auto' with resolve_preset(preset, device) first"),
        ("default", {"stepz": 3}, "unknown recipe field 'stepz'; fields are steps, lr,"),
        ("default", {"steps": 2.5}, "steps must be an integer, got 2.5"),
    ],
)
def test_recipe_from_preset_refuses_bad_names_and_fields(preset, changes, message):
    with pytest.raises(InputError, match=re.escape(message)) as caught:
        Recipe.from_preset(preset, **changes)
    assert "\n" not in str(caught.value)


def test_auto_preset_depends_on_the_device():
    from text2fx.optimize import resolve_preset

    assert resolve_preset("auto", "cpu") == "fast"
    assert resolve_preset("auto", torch.device("cpu")) == "fast"
    assert resolve_preset("auto", "cuda") == "default"
    assert resolve_preset("auto", "cuda:1") == "default"
    assert resolve_preset("auto", torch.device("cuda", 0)) == "default"
    assert resolve_preset("paper", "cpu") == "paper"


def test_recipe_module_is_torch_free_and_re_exported():
    import text2fx.optimize
    import text2fx.recipe

    for name in ("Recipe", "PRESETS", "resolve_preset", "LOSS_MODES", "INITS"):
        assert getattr(text2fx.optimize, name) is getattr(text2fx.recipe, name)
    code = ("import sys, text2fx.recipe as r; r.Recipe.from_preset('fast', steps=3); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
