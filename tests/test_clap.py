"""ClapEmbedder behaviour: the audio window, resampling, gradients, the text cache, import cost."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from text2fx.clap import ClapEmbedder
from text2fx.embedder import Embedder
from text2fx.errors import InputError
from text2fx.clap.resample import Resampler

SR = 48000
WINDOW = 480000


def _noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_satisfies_embedder_protocol(clap_embedder: ClapEmbedder, clap_checkpoint) -> None:
    assert isinstance(clap_embedder, Embedder)
    assert clap_embedder.name == clap_checkpoint.name
    assert (clap_embedder.sample_rate, clap_embedder.window_samples) == (SR, WINDOW)
    assert clap_embedder.device == torch.device("cpu")
    assert clap_embedder.audio_arch == "HTSAT-tiny"
    assert not clap_embedder.model.training
    assert not any(p.requires_grad for p in clap_embedder.model.parameters())


def test_import_does_not_load_transformers_or_laion_clap() -> None:
    code = (
        "import sys, text2fx.clap; "
        "print(sorted(m for m in ('transformers', 'laion_clap', 'laion_clap.clap_module', 'text2fx.clap._laion')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_code_loads_without_laion_clap_package_inits() -> None:
    # clap_module() must run neither laion_clap/__init__.py (tokenizer downloads) nor clap_module/__init__.py
    # (training loss, BPE tokenizer, image transforms): only the model files, under a private name.
    code = (
        "import sys; from text2fx.clap import clap_module; m = clap_module(); "
        "print(m.__name__, m.model.CLAP.__module__, m.htsat.__name__, (m.config_dir / 'HTSAT-tiny.json').is_file()); "
        "print(' '.join(sorted(k for k in sys.modules if 'laion_clap' in k or k.startswith('text2fx.clap._laion'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, loaded = out.stdout.splitlines()
    private = "text2fx.clap._laion"
    assert names == f"{private} {private}.model {private}.htsat True"
    loaded = set(loaded.split())
    assert {private, f"{private}.model", f"{private}.htsat"} <= loaded  # the listing sees the private package
    assert all(m.startswith(private) for m in loaded)  # and nothing of the real laion_clap package
    assert not {f"{private}.{m}" for m in ("loss", "tokenizer", "factory", "transform", "openai")} & loaded


def test_model_code_objects_unpickle_in_a_fresh_process() -> None:
    import pickle

    from text2fx.clap import clap_module

    config = clap_module().model.CLAPAudioCfp(model_type="HTSAT", model_name="tiny")
    code = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read()).model_name)"
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(config), capture_output=True, check=True)
    assert out.stdout.decode().strip() == "tiny"


def test_short_audio_is_repeat_padded(clap_embedder: ClapEmbedder) -> None:
    audio = _noise(2, 1, 130000)
    x = clap_embedder.model_input(audio, SR)
    # laion-clap 'repeatpad': repeat int(480000 / 130000) = 3 times, then zero-pad to the window.
    expected = torch.cat([audio[:, 0]] * 3 + [torch.zeros(2, WINDOW - 3 * 130000)], dim=1)
    assert torch.equal(x, expected)


def test_long_audio_is_cropped_at_each_items_offset(clap_embedder: ClapEmbedder) -> None:
    audio = _noise(1, 1, 600000).expand(3, 1, 600000)
    x = clap_embedder.model_input(audio, SR, offsets=[0, 1234, 120000])
    for row, start in zip(x, [0, 1234, 120000]):
        assert torch.equal(row, audio[0, 0, start : start + WINDOW])
    assert torch.equal(clap_embedder.model_input(audio[:1, :, :WINDOW], SR)[0], audio[0, 0, :WINDOW])


def test_offsets_are_in_input_samples(clap_embedder: ClapEmbedder) -> None:
    audio = _noise(1, 1, 24000 * 12)
    x = clap_embedder.model_input(audio, 24000, offsets=[24000])  # 1 s in, i.e. 48000 samples at 48 kHz
    full = clap_embedder.model_input(audio, 24000, offsets=[0])
    reference = Resampler(SR)(audio[:, 0], 24000)
    assert torch.equal(x[0], reference[0, 48000 : 48000 + WINDOW])
    assert torch.equal(full[0], reference[0, :WINDOW])


def test_stereo_is_downmixed_to_the_channel_mean(clap_embedder: ClapEmbedder) -> None:
    left, right = _noise(1, 1, 50000, seed=1), _noise(1, 1, 50000, seed=2)
    stereo = clap_embedder.model_input(torch.cat([left, right], dim=1), SR)
    assert torch.allclose(stereo, clap_embedder.model_input((left + right) / 2, SR), atol=1e-7)


@pytest.mark.parametrize(
    "audio, sample_rate, offsets, match",
    [
        (torch.zeros(1, 600000), SR, None, r"\(batch, channels, samples\) tensor, got \(1, 600000\)"),  # no channel axis
        (torch.zeros(1, 1, 0), SR, None, r"non-empty .* got \(1, 1, 0\)"),
        (torch.zeros(1, 1, 1000, dtype=torch.int16), SR, None, "floating-point tensor, got torch.int16"),
        (torch.zeros(1, 1, 1000), 0, None, "sample rate must be a positive integer"),
        (torch.zeros(2, 1, 600000), SR, [0], "offsets must be 2 integer sample positions"),  # one offset, two items
        (torch.zeros(1, 1, 600000), SR, [120001], r"lie in \[0, 120000\] samples .* got \[120001\]"),  # past the end
        (torch.zeros(1, 1, 600000), SR, [-1], r"lie in \[0, 120000\] samples .* got \[-1\]"),
    ],
)
def test_bad_audio_input_is_an_input_error(clap_embedder: ClapEmbedder, audio, sample_rate, offsets, match) -> None:
    with pytest.raises(InputError, match=match):
        clap_embedder.model_input(audio, sample_rate, offsets)


def test_quantize_matches_int16_with_straight_through_gradient(clap_embedder: ClapEmbedder) -> None:
    audio = torch.tensor([[[0.5, -0.25, 1.5, -2.0, 1e-5, 0.123456]]], requires_grad=True)
    x = clap_embedder.model_input(audio, SR, quantize=True)
    expected = torch.tensor([16383, -8191, 32767, -32767, 0, 4045]) / 32767.0  # numpy astype(int16) truncation
    assert torch.allclose(x[0, :6], expected, atol=0, rtol=1e-7)
    x[0, :6].sum().backward()
    assert torch.equal(audio.grad, torch.ones_like(audio))


def test_gradients_reach_the_waveform_and_not_the_model(clap_embedder: ClapEmbedder) -> None:
    # Two crops of one 11 s, 44.1 kHz stereo file in one batch: resampling, downmix, crop and model all in the graph.
    audio = _noise(1, 2, 44100 * 11).expand(2, 2, -1).clone().requires_grad_(True)
    text = clap_embedder.embed_text(["warm"])
    embedding = clap_embedder.embed_audio(audio, 44100, offsets=[0, 44100], quantize=True)
    assert embedding.shape == (2, 512)
    assert torch.allclose(embedding.norm(dim=-1), torch.ones(2))
    (embedding @ text.T).sum().backward()
    assert audio.grad is not None and torch.isfinite(audio.grad).all()
    assert audio.grad.abs().sum() > 0
    assert all(p.grad is None for p in clap_embedder.model.parameters())


def test_text_is_encoded_once_per_string(clap_embedder: ClapEmbedder, monkeypatch) -> None:
    calls: list[list[str]] = []
    tokenizer = clap_embedder._tokenizer

    def spy(texts, **kwargs):
        if kwargs.get("padding") == "max_length":  # an encoding call, not check_texts' counting
            calls.append(list(texts))
        return tokenizer(texts, **kwargs)

    monkeypatch.setattr(clap_embedder, "_tokenizer", spy)
    first = clap_embedder.embed_text(["a dusty old record", "a cathedral"])
    second = clap_embedder.embed_text(["a cathedral", "a dusty old record", "underwater", "underwater"])
    assert calls == [["a dusty old record", "a cathedral"], ["underwater"]]
    assert torch.equal(second[0], first[1]) and torch.equal(second[1], first[0])
    assert torch.equal(second[2], second[3])
    assert second.shape == (4, 512) and not second.requires_grad
    assert torch.allclose(second.norm(dim=-1), torch.ones(4))


def test_text_embedding_does_not_depend_on_the_batch(clap_embedder: ClapEmbedder, clap_checkpoint, clap_tokenizer_dir) -> None:
    other = ClapEmbedder(clap_checkpoint, clap_tokenizer_dir, device="cpu")  # empty cache
    alone = other.embed_text(["thin and harsh"])
    longest = _longest_prompt(clap_embedder, "a very long prompt ")  # padding differs most from the short one
    in_batch = clap_embedder.embed_text(["smooth", "thin and harsh", longest])
    assert torch.allclose(alone[0], in_batch[1], atol=1e-5)
    with pytest.raises(InputError, match="embed_text takes a list of strings"):
        clap_embedder.embed_text("not a list")


def _token_count(embedder: ClapEmbedder, text: str) -> int:
    return len(embedder._tokenizer(text)["input_ids"])


def _longest_prompt(embedder: ClapEmbedder, phrase: str) -> str:
    """`phrase` repeated as often as fits in CLAP's 77 tokens (start and end tokens included)."""
    text = phrase
    while _token_count(embedder, text + phrase) <= 77:
        text += phrase
    return text


def test_prompts_longer_than_77_tokens_are_refused(clap_embedder: ClapEmbedder) -> None:
    fits = _longest_prompt(clap_embedder, "this sound is warm ")
    too_long = fits + "this sound is warm "  # one phrase more than fits
    assert _token_count(clap_embedder, fits) <= 77 < _token_count(clap_embedder, too_long)
    clap_embedder.check_texts([fits, "warm"])
    assert clap_embedder.embed_text([fits]).shape == (1, 512)
    n = _token_count(clap_embedder, too_long)
    message = rf"text '{fits[:40]}\.\.\.' is {n} tokens long; CLAP reads at most 77: shorten the prompt"
    with pytest.raises(InputError, match=message):
        clap_embedder.check_texts(["warm", too_long])
    with pytest.raises(InputError, match=message):
        clap_embedder.embed_text(["warm", too_long])
    essay = "this sound is " * 400  # a pasted essay: was cut to its first 77 tokens without a word
    both = (r"^text 'this sound is this sound is this sound i\.\.\.' is \d+ tokens long; CLAP reads at most 77: "
            r"shorten the prompt \(1 more text is too long too\)$")
    with pytest.raises(InputError, match=both):
        clap_embedder.embed_text([essay, too_long])
    with pytest.raises(InputError, match="check_texts takes a list of strings"):
        clap_embedder.check_texts("warm")


def test_check_text_length_loads_only_the_tokenizer(
    clap_embedder: ClapEmbedder, clap_tokenizer_dir, monkeypatch
) -> None:
    from text2fx.clap import check_text_length
    from text2fx.clap import embedder as embedder_module
    from text2fx.clap.files import TOKENIZER_ENV

    def no_model(*args, **kwargs):
        raise AssertionError("check_text_length loaded the CLAP model")

    monkeypatch.setattr(embedder_module, "load_clap_state_dict", no_model)
    monkeypatch.setattr(embedder_module, "load_clap_model", no_model)
    monkeypatch.setattr(embedder_module, "resolve_model_files", no_model)  # nor looks for the checkpoint
    fits = _longest_prompt(clap_embedder, "bright ")
    check_text_length([fits, "warm"], clap_tokenizer_dir)
    n = _token_count(clap_embedder, fits + " and airy")
    with pytest.raises(InputError, match=rf"is {n} tokens long; CLAP reads at most 77: shorten the prompt"):
        check_text_length(["warm", fits + " and airy"], clap_tokenizer_dir)
    # The tokenizer is found as the embedder finds it: here from the environment.
    monkeypatch.setenv(TOKENIZER_ENV, str(clap_tokenizer_dir))
    with pytest.raises(InputError, match=rf"is {n} tokens long"):
        check_text_length([fits + " and airy"])
    with pytest.raises(InputError, match="check_text_length takes a list of strings"):
        check_text_length("warm")


@pytest.mark.parametrize("orig", [44100, 22050, 96000, 16000])
def test_resampler_is_band_limited_and_accurate(orig: int) -> None:
    resampler = Resampler(SR)
    n = orig // 2
    t_in = torch.arange(n, dtype=torch.float64) / orig
    tone = torch.sin(2 * math.pi * 997.0 * t_in).float()
    out = resampler(tone[None, None], orig)[0, 0]
    assert out.shape[-1] == math.ceil(n * SR / orig)
    t_out = torch.arange(out.shape[-1], dtype=torch.float64) / SR
    expected = torch.sin(2 * math.pi * 997.0 * t_out).float()
    edge = 200  # the filter sees zeros beyond the ends
    assert (out[edge:-edge] - expected[edge:-edge]).abs().max() < 2e-3
    assert resampler._kernel(orig, tone.device, tone.dtype) is resampler._kernel(orig, tone.device, tone.dtype)


def test_downsampling_removes_content_above_the_new_nyquist() -> None:
    t = torch.arange(96000) / 96000
    above = torch.sin(2 * math.pi * 30000.0 * t)  # above 24 kHz, must not alias into the 48 kHz signal
    out = Resampler(SR)(above[None], 96000)
    # About -38 dB: the stop-band of the 6-zero-crossing Hann-windowed sinc (torchaudio's default) at 30 kHz.
    assert out[0, 200:-200].abs().max() < 0.02


# bfloat16 autocast of the audio branch (`precision="bfloat16"`). With random weights these tolerances say the
# computation stays numerically close to float32, nothing about what the embeddings mean.


@pytest.fixture(scope="module")
def bf16_embedder(clap_checkpoint, clap_tokenizer_dir) -> ClapEmbedder:
    return ClapEmbedder(clap_checkpoint, clap_tokenizer_dir, device="cpu", precision="bfloat16")


def test_bfloat16_embeddings_stay_close_to_float32(clap_embedder: ClapEmbedder, bf16_embedder: ClapEmbedder) -> None:
    audio = _noise(3, 2, SR * 4, seed=3)
    exact, approx = clap_embedder.embed_audio(audio, SR), bf16_embedder.embed_audio(audio, SR)
    assert approx.dtype == torch.float32 and torch.allclose(approx.norm(dim=-1), torch.ones(3))
    assert torch.nn.functional.cosine_similarity(exact, approx).min() > 0.9999
    assert not torch.equal(exact, approx)  # autocast really ran
    assert torch.equal(clap_embedder.embed_text(["warm"]), bf16_embedder.embed_text(["warm"]))
    assert "precision='bfloat16'" in repr(bf16_embedder)
    with pytest.raises(AttributeError, match="precision"):
        bf16_embedder.precision = "float32"  # fixed at construction, with the front end set up for it
    # the log-mel front end stays float32 (bfloat16 would round its decibels to 0.5 dB steps)
    seen = []
    hook = bf16_embedder.model.audio_branch.logmel_extractor.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        bf16_embedder.embed_audio(audio[:1], SR)
    finally:
        hook.remove()
    assert seen == [torch.float32]


def test_bfloat16_optimization_reaches_the_float32_loss(clap_embedder: ClapEmbedder, bf16_embedder: ClapEmbedder) -> None:
    import fx
    from text2fx.optimize import Recipe, optimize

    chain = fx.Chain.from_spec("eq,reverb", seed=0)
    clips = _noise(1, 1, 2, SR * 3, seed=4) / 3
    text = clap_embedder.embed_text(["this sound is warm"])
    anchor = clap_embedder.embed_text(["this sound is not warm"])
    recipe = Recipe(steps=12, lr=0.1, restarts=1, excerpts=1, patience=None)
    losses = []
    for embedder in (clap_embedder, bf16_embedder):
        outcome = optimize(chain, embedder, clips, SR, [0], text, anchor, recipe, seed=0)[0]
        with torch.no_grad():  # both judged by the float32 model
            emb = clap_embedder.embed_audio(chain.process(clips[0, :1], SR, outcome.params[None]), SR)
        losses.append(1 - torch.nn.functional.cosine_similarity(emb, text).item())
        if embedder is clap_embedder:
            start = outcome.history[0]
    exact, approx = losses
    gained = start - exact
    assert gained > 3e-3  # the float32 run moved the loss, so the comparison below means something
    # bfloat16 acts like a small perturbation of the run, no more: both end within a tenth of what the float32
    # run gained (and within 1e-3, the figure the README gives).
    assert abs(exact - approx) < min(1e-3, 0.1 * gained)


def test_unknown_precision_is_refused_before_loading(tmp_path) -> None:
    with pytest.raises(InputError, match="precision 'float16'"):
        ClapEmbedder(tmp_path / "no-such.pt", tmp_path, device="cpu", precision="float16")


def test_ctrl_c_while_htsat_is_built_stays_an_interrupt(monkeypatch) -> None:
    from text2fx.clap import clap_module, create_clap_model

    htsat = clap_module().htsat

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    # laion-clap's HTSAT builder catches everything with a bare `except:` and raises a RuntimeError instead
    monkeypatch.setattr(htsat, "HTSAT_Swin_Transformer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        create_clap_model("HTSAT-tiny", init_text_branch=False)
