"""The listening report page (`--html`, `Result.save_html`), the plots, the loudness figure, and what the
optimizer records for them. The cheap embedder stand-in is used, except in the one command-line run."""

import math
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import fx
import text2fx.clap
from doubles import SpectralTestEmbedder
from text2fx.cli import main
from text2fx.engine import Engine
from text2fx.errors import UsageError
from text2fx.loudness import integrated_loudness
from text2fx.optimize import Recipe, optimize
from text2fx.page import paper_prompts, write_html

SR = 16000
QUICK = dict(steps=12, restarts=2, patience=None)


def clip(seconds=10.0, channels=2, sr=SR, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(t)) + 0.03 * rng.standard_normal(t.size)
    return np.stack([x * (1 - 0.2 * c) for c in range(channels)]).astype(np.float32)


@pytest.fixture
def engine():
    return Engine(SpectralTestEmbedder(sample_rate=SR, window_seconds=1.0))


def png_pixels(path):
    import matplotlib.image

    return matplotlib.image.imread(path)[..., :3]


# -- what the optimizer records ---------------------------------------------------------------------------


def _optimize(record_every):
    embedder = SpectralTestEmbedder(sample_rate=SR)
    chain = fx.Chain.from_spec("eq", seed=0)
    clips = torch.from_numpy(clip(1.0, 1))[None, None]
    text, anchor = embedder.embed_text(["bright"]), embedder.embed_text(["anchor"])
    return optimize(chain, embedder, clips, SR, [0], text, anchor, Recipe(steps=23, restarts=3, patience=None),
                    record_every=record_every)[0]


def test_recording_the_path_changes_nothing_in_the_result():
    plain, recorded = _optimize(None), _optimize(5)
    assert plain.path is None and recorded.histories == plain.histories
    assert torch.equal(plain.params, recorded.params) and plain.history == recorded.history


def test_the_path_holds_the_kept_candidates_embedding_every_n_steps():
    out = _optimize(5)
    assert out.path_steps == [0, 5, 10, 15, 20] and out.path.shape == (5, 32)
    assert torch.allclose(out.path.norm(dim=1), torch.ones(5), atol=1e-5)  # real embeddings, every slot written
    assert len(out.histories) == 3 and out.histories[out.candidate] == out.history


class GraphSafeEmbedder(SpectralTestEmbedder):
    """The stand-in with its band sums as one matrix product (no boolean indexing): CUDA-graph capturable."""

    graph_safe = True

    def embed_audio(self, audio, sample_rate, offsets=None):
        x = self._fit_window(audio.to(self.device), sample_rate, offsets).mean(1)
        key = (x.shape[-1], sample_rate)
        if key not in self.__dict__.setdefault("bands_of", {}):
            freqs = torch.fft.rfftfreq(x.shape[-1], 1.0 / sample_rate)
            edges = torch.logspace(math.log10(20.0), math.log10(0.99 * sample_rate / 2), self.bands + 1)
            band = torch.bucketize(freqs, edges) - 1
            onehot = torch.zeros(len(freqs), self.bands)
            valid = (band >= 0) & (band < self.bands)
            onehot[valid.nonzero()[:, 0], band[valid]] = 1.0
            self.bands_of[key] = onehot.to(self.device)
        features = torch.log(torch.fft.rfft(x).abs().square() @ self.bands_of[key] + 1e-6)
        return torch.nn.functional.normalize((features - features.mean(-1, keepdim=True)) @ self.projection, dim=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_recording_inside_a_cuda_graph_matches_plain_steps():
    embedder = GraphSafeEmbedder(sample_rate=SR, device="cuda")
    chain = fx.Chain.from_spec("gain,reverb", seed=0).to("cuda")
    clips = torch.from_numpy(clip(1.0, 2))[None, None].cuda()
    text, anchor = embedder.embed_text(["bright"]), embedder.embed_text(["anchor"])
    runs = [optimize(chain, embedder, clips, SR, [0], text, anchor, Recipe(steps=40, restarts=2, patience=None),
                     cuda_graph=graph, record_every=5)[0] for graph in (False, True)]
    assert runs[1].path_steps == list(range(0, 40, 5))
    assert torch.allclose(runs[0].path, runs[1].path, atol=1e-4)


# -- loudness ---------------------------------------------------------------------------------------------


def test_loudness_agrees_with_pyloudnorm_and_the_standards_sine():
    pyloudnorm = pytest.importorskip("pyloudnorm")
    x = clip(7.0, 2, 44100)
    x[:, :44100] *= 0.01  # a quiet second, gated away
    reference = pyloudnorm.Meter(44100, filter_class="DeMan").integrated_loudness(x.T.astype(np.float64))
    assert integrated_loudness(x, 44100) == pytest.approx(reference, abs=0.01)
    sine = np.sin(2 * np.pi * 997 * np.arange(5 * 48000) / 48000)  # BS.1770: 0 dBFS 997 Hz, one channel
    assert integrated_loudness(sine, 48000) == pytest.approx(-3.01, abs=0.01)


# -- plots --------------------------------------------------------------------------------------------------


def settings_file(tmp_path, spec="eq,reverb,compressor,distortion,gain"):
    chain = fx.Chain.from_spec(spec, seed=0)
    chain.set_settings(torch.rand(chain.num_params, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    path = tmp_path / "settings.json"
    import json

    path.write_text(json.dumps(chain.to_dict()))
    return path


def test_plot_command_draws_every_effect(tmp_path):
    out = tmp_path / "curves.png"
    assert main(["plot", str(settings_file(tmp_path)), "-o", str(out)]) == 0
    px = png_pixels(out)
    assert px.shape[0] > 4 * px.shape[1] // 3  # five rows of panels
    for band in np.array_split(px, 5):  # every row holds a drawing: the curves' blue, not just axes
        blue = (np.abs(band - np.array([0, 0x72, 0xB2]) / 255).max(-1) < 0.08).mean()
        assert blue > 0.002, blue


def test_plot_command_answers_a_bad_file_in_one_line_without_torch(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code = ("import sys\nfrom text2fx.cli import main\n"
            f"code = main(['plot', {str(bad)!r}, '-o', {str(tmp_path / 'x.png')!r}])\n"
            "print(code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["1", "False"], out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and "not valid JSON" in out.stderr
    assert not (tmp_path / "x.png").exists()


def test_result_plot_returns_a_figure(engine):
    result = engine.apply(clip(1.5), SR, "bright", chain="eq,reverb", **QUICK)
    fig = result.plot()
    assert len(fig.axes) == 3 and fig.axes[0].get_xscale() == "log"


# -- the page -----------------------------------------------------------------------------------------------


def test_html_is_checked_before_any_work(engine, tmp_path):
    src = tmp_path / "in.wav"
    sf.write(src, clip(1.0).T, SR)
    (tmp_path / "in.bright.html").write_text("mine")
    with pytest.raises(UsageError, match=r"in\.bright\.html already exists"):
        engine.apply_files(src, "bright", chain="eq", html=True)
    with pytest.raises(UsageError, match=r"must end in \.html"):
        engine.apply_files(src, "bright", chain="eq", html="page.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bright.html", "in.wav"]


def test_the_page_of_a_10s_clip_has_everything(engine, tmp_path):
    src = tmp_path / "in.wav"
    sf.write(src, clip(10.0).T, SR)
    [result] = engine.apply_files(src, "bright", chain="eq,reverb", html=True, **QUICK)
    page = (tmp_path / "in.bright.html").read_text()
    assert 'src="in.wav"' in page and 'src="in.bright.wav"' in page  # linked, relative to the page
    for figure in ("spectrogram", "settings", "loss", "map"):
        assert f'data-figure="{figure}"' in page
    assert page.count("<area ") == 60 + 4 + len(result.embeddings["path_steps"])
    assert all(f"paper prompt (text): {p}" in page for p in paper_prompts()[:5])
    assert re.search(r"before -?\d+\.?\d* LUFS, after -?\d+\.?\d* LUFS", page) and "http" not in page.split("<body>")[1]
    # how long a page takes to write is measured in benchmarks/RESULTS.md, not timed here
    assert write_html([result], tmp_path / "again.html").read_text().count('data-figure="map"') == 1


def test_several_results_share_one_page_and_one_map(engine, tmp_path):
    results = engine.apply(clip(1.5), SR, ["bright", "dark"], chain="eq", record=True, **QUICK)
    path = write_html(results, tmp_path / "both.html")
    page = path.read_text()
    assert page.count('class="result"') == 2 and page.count('data-figure="map"') == 1
    assert page.count("data:audio/ogg;base64,") == 4  # in-memory audio is embedded
    assert '<table class="summary">' in page


def test_a_3_minute_stereo_page_stays_under_15_mb(engine, tmp_path):
    result = engine.apply(clip(180.0, 2, 44100), 44100, "bright", chain="eq", record=True, steps=2, restarts=1)
    path = result.save_html(tmp_path / "long.html")
    assert path.stat().st_size < 15e6


@pytest.fixture
def shared_clap(monkeypatch, clap_embedder, clap_checkpoint, clap_tokenizer_dir):
    monkeypatch.setenv("TEXT2FX_CLAP_CKPT", str(clap_checkpoint))
    monkeypatch.setenv("TEXT2FX_CLAP_TOKENIZER", str(clap_tokenizer_dir))
    monkeypatch.setattr(text2fx.clap, "ClapEmbedder", lambda *a, **k: clap_embedder)


def test_the_command_writes_the_page_beside_the_output(tmp_path, shared_clap, capsys):
    src = tmp_path / "in.wav"
    sf.write(src, clip(2.0, 1, 44100).T, 44100)
    assert main([str(src), "dark", "--chain", "eq", "--steps", "6", "--html", "-o", str(tmp_path / "o.wav")]) == 0
    assert f"report page: {tmp_path / 'o.html'}" in capsys.readouterr().out
    assert 'data-figure="map"' in (tmp_path / "o.html").read_text()


def test_the_page_of_an_output_longer_than_its_input_says_so_and_plays_both(engine, tmp_path):
    result = engine.apply(clip(1.5), SR, "airy", chain="reverb", record=True, **QUICK)
    assert not result.bypassed and result.audio.shape[1] == clip(1.5).shape[1] + result.tail_frames > 24000
    page = result.save_html(tmp_path / "airy.html").read_text()
    tail_s = f"{result.tail_frames / SR:.2f} s tail"
    assert f"output length</th><td>{result.audio.shape[1] / SR:.2f} s, the input&#x27;s + a {tail_s}" in page
    assert page.count("data:audio/ogg;base64,") == 2 and 'data-figure="spectrogram"' in page
    assert re.search(r"before -?\d+\.?\d* LUFS, after -?\d+\.?\d* LUFS", page)
