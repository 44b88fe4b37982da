"""The listening report: one self-contained HTML page for one or several results, opened from disk.

A page holds, per result: what was asked and how it went (prompt, chain, preset, loss, similarity before,
after and the bypass's, steps, time), before/after players with an A/B switch at the same position and
optional loudness-matched playback (with the level change in LUFS), spectrograms, every effect's settings
drawn and tabled with units, and the loss of every restart. Then the map of CLAP's audio-text space shared by
all results. Figures are PNGs made with matplotlib and embedded; audio is linked relative to the page when
it is a file a browser plays (WAV, FLAC, Ogg, MP3), else embedded as Ogg Vorbis. Nothing is fetched from a
network.

    write_html([result], "take.warm.html")          # what `text2fx ... --html` and Result.save_html do
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from text2fx.errors import InputError

PLAYABLE = {".wav", ".flac", ".ogg", ".oga", ".mp3"}
PAPER_PROMPTS_FILE = Path(__file__).parent / "data" / "paper_prompts.tsv"


def paper_prompts() -> list[str]:
    """The 60 prompts of the Text2FX paper's listener study (shipped with the package)."""
    lines = PAPER_PROMPTS_FILE.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[2] for line in lines if line.strip()]


def _b64_png(fig) -> str:
    from text2fx.plots import png_bytes

    return "data:image/png;base64," + base64.b64encode(png_bytes(fig)).decode("ascii")


def _read(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    return audio.T, sr


def _ogg_uri(audio: np.ndarray, sample_rate: int) -> str:
    import soundfile as sf

    buf = io.BytesIO()
    # in blocks: libsndfile's Vorbis encoder crashes on one very large write
    with sf.SoundFile(buf, "w", sample_rate, audio.shape[0], format="OGG", subtype="VORBIS") as f:
        for start in range(0, audio.shape[1], 65536):
            f.write(np.ascontiguousarray(audio[:, start : start + 65536].T))
    return "data:audio/ogg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _source(audio: np.ndarray, sample_rate: int, path: str | None, page: Path, embed: bool | None) -> str:
    """A link relative to the page to a file browsers play, else the audio embedded as Ogg Vorbis."""
    if path is not None and not embed and Path(path).suffix.lower() in PLAYABLE and Path(path).is_file():
        return Path(os.path.relpath(Path(path).absolute(), page.absolute().parent)).as_posix()
    return _ogg_uri(audio, sample_rate)


def _sides(result) -> tuple:
    """(before audio, before path, after audio, after path, sample rate); audio None when unavailable."""
    inp = result.input or {}
    before, before_path = getattr(result, "source_audio", None), inp.get("path")
    if before is None and before_path and Path(before_path).is_file():
        before, _ = _read(before_path)
    after, after_path = result.audio, result.output_path
    if after is None and after_path and Path(after_path).is_file():
        after, _ = _read(after_path)
    return before, before_path, after, after_path, result.sample_rate


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _num(v: float, unit: str = "") -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return f"{v}"
    a = abs(v)
    s = f"{v:.0f}" if a >= 100 else f"{v:.3g}" if a >= 0.01 or a == 0 else f"{v:.2e}"
    return f"{s} {unit}".strip()


def _bypass_loss(result) -> float:
    o = result.optimization
    return 1.0 - result.similarity_before if o.get("loss") == "cosine" else 1.0


def _info_rows(result) -> list[tuple[str, str]]:
    o = result.optimization
    rows = [
        ("prompt", f"\u201c{result.prompt}\u201d (text encoder read: \u201c{result.text}\u201d)"),
        ("anchor", result.anchor or "-"),
        ("input", (result.input or {}).get("path") or "array"),
        ("chain", result.params["chain"]),
        ("preset", f"{o.get('preset')} ({o.get('restarts')} restart(s), lr {o.get('lr')}, init {o.get('init')})"),
        ("loss", f"{o.get('loss_mode')}: kept a {o.get('loss')} candidate, loss {o.get('loss_value', float('nan')):.4f}"),
        ("CLAP similarity", f"before {result.similarity_before:+.4f} \u2192 after {result.similarity_after:+.4f} "
                            f"({result.similarity_after - result.similarity_before:+.4f})"),
        ("bypass scored", f"loss {_bypass_loss(result):.4f}, similarity {result.similarity_before:+.4f}"
                          + ("  \u2014 the bypass was kept: the output is the input" if result.bypassed else "")),
        ("steps", f"{o.get('steps_run')} of {o.get('steps')} run, kept step {o.get('best_step')}"),
        ("output gain", f"{result.output_gain_db:+.2f} dB (level policy: never clipped)"),
        *_length_row(result),
        ("model", f"{result.checkpoint} on {result.device}, {o.get('precision', 'float32')}"),
    ]
    seconds = getattr(result, "seconds", None)
    if seconds is not None:
        rows.append(("time", f"{seconds:.1f} s (optimizing and rendering every result of the run)"))
    return rows


def _length_row(result) -> list[tuple[str, str]]:
    """The output's length and its tail, when the result knows them (a report from before tails did not)."""
    frames, tail = getattr(result, "output_frames", None), getattr(result, "tail_frames", None)
    if frames is None:
        return []
    sr = result.sample_rate
    if getattr(result, "keep_length", None):
        why = "the input's (keep_length)"
    elif tail:
        why = f"the input's + a {tail / sr:.2f} s tail (the effects ringing on; the start is aligned)"
    else:
        why = "the input's (no tail)"
    return [("output length", f"{frames / sr:.2f} s, {why}")]


def _settings_table(result) -> str:
    tables = []
    for effect, units in zip(result.params["effects"], result.units):
        rows = "".join(f"<tr><td>{_esc(name)}</td><td class=num>{_esc(_num(value))}</td>"
                       f"<td>{_esc(units.get(name, ''))}</td></tr>" for name, value in effect["params"].items())
        tables.append(f'<table class="settings"><caption>{_esc(effect["type"])}</caption><tr><th>parameter</th>'
                      f"<th>value</th><th>unit</th></tr>{rows}</table>")
    return f'<div class="tables">{"".join(tables)}</div>'


def _players(i: int, before_src: str, after_src: str, lufs_before: float, lufs_after: float) -> str:
    change = lufs_after - lufs_before
    return f"""
<div class="ab" data-active="before" data-lufs-before="{lufs_before:.3f}" data-lufs-after="{lufs_after:.3f}">
  <div class="player-row"><span class="tag">A before</span>
    <audio class="player active" data-role="before" controls preload="auto" src="{_esc(before_src)}"></audio></div>
  <div class="player-row"><span class="tag">B after</span>
    <audio class="player" data-role="after" controls preload="auto" src="{_esc(after_src)}"></audio></div>
  <div class="controls">
    <button type="button" class="ab-switch" id="ab-switch-{i}">A/B: switch to after</button>
    <label><input type="checkbox" class="match"> loudness-matched playback</label>
    <span class="lufs">loudness: before {_num(lufs_before)} LUFS, after {_num(lufs_after)} LUFS
      (change {change:+.1f} LU)</span>
  </div>
</div>"""


def _figure_html(name: str, uri: str, caption: str) -> str:
    return (f'<figure><img class="figure" data-figure="{name}" alt="{_esc(caption)}" src="{uri}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _map_html(results, projection: str) -> str:
    from text2fx import plots

    recorded = [r for r in results if getattr(r, "embeddings", None)]
    if not recorded:
        return ('<section id="map"><h2>Map of CLAP\'s audio-text space</h2><p class="note">No embeddings were '
                "recorded for this result (run with <code>--html</code>, or <code>record=True</code> in "
                "<code>Engine.apply</code>).</p></section>")
    first = recorded[0].embeddings
    context = {"texts": first["context_texts"], "emb": first["context_emb"]} if first.get("context_emb") is not None else None
    groups = []
    for r in recorded:
        e = r.embeddings
        name = Path((r.input or {}).get("path") or "array").name
        groups.append({"label": f"\u201c{r.prompt}\u201d \u2190 {name}", "prompt": r.prompt, "text": r.text,
                       "anchor": r.anchor or "", **{k: e[k] for k in ("prompt_emb", "anchor_emb", "input_emb",
                                                                     "output_emb", "path", "path_steps")}})
    fig, ax, points = plots.map_figure(context, groups, projection)
    uri = _b64_png(fig)
    hover = plots.pixel_positions(fig, ax, points)
    areas = "\n".join(f'<area shape="circle" coords="{x:.0f},{y:.0f},6" title="{_esc(t)}" alt="{_esc(t)}">'
                      for x, y, t in hover)
    width, height = (int(v * plots.DPI) for v in fig.get_size_inches())
    cos = [float(np.dot(_unit(g["output_emb"] - g["input_emb"]), _unit(g["prompt_emb"] - g["anchor_emb"])))
           for g in groups]
    note = ", ".join(f"{_esc(g['label'])}: {c:+.3f}" for g, c in zip(groups, cos))
    return f"""<section id="map"><h2>Map of CLAP's audio-text space</h2>
<p class="note">Every point is a CLAP embedding: the prompt and anchor texts, the paper's 60 prompts (text, for
context), the input and output audio, and the audio every few steps of the optimization (the embeddings the
optimizer computed anyway). Arrows: the directional loss's two directions, text (anchor \u2192 prompt) and
audio (input \u2192 output); the cosine between them in CLAP's full space: {note}.
Distances in a 2-D projection ({_esc(projection.upper())}) are only indicative. Hover a point for its text.</p>
<img class="figure" data-figure="map" usemap="#embedding-map" width="{width}" height="{height}" src="{uri}"
 alt="map of CLAP embeddings">
<map name="embedding-map">
{areas}
</map></section>"""


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / max(np.linalg.norm(v), 1e-12)


def _result_html(i: int, result, page: Path, embed: bool | None) -> str:
    from text2fx import plots
    from text2fx.loudness import integrated_loudness

    parts = [f'<section class="result" id="result-{i}">',
             f"<h2>{i + 1}. \u201c{_esc(result.prompt)}\u201d \u2190 "
             f"{_esc(Path((result.input or {}).get('path') or 'array').name)}"
             + (' <span class="badge">bypassed</span>' if result.bypassed else "") + "</h2>",
             '<table class="info">'
             + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in _info_rows(result))
             + "</table>"]
    before, before_path, after, after_path, sr = _sides(result)
    if before is not None and after is not None:
        lufs = integrated_loudness(before, sr), integrated_loudness(after, sr)
        parts.append(_players(i, _source(before, sr, before_path, page, embed),
                              _source(after, sr, after_path, page, embed), *lufs))
        parts.append(_figure_html("spectrogram", _b64_png(plots.spectrogram_figure(before, after, sr)),
                                  "spectrograms: before, after (same dB scale), and after \u2212 before"))
    else:
        parts.append('<p class="note">The input or output audio is not available to this page (a result '
                     'kept in memory without <code>record=True</code>, or a file since moved).</p>')
    parts.append(_figure_html("settings", _b64_png(plots.settings_figure(result.params, sr)),
                              "every effect's settings, drawn by the functions the effects run"))
    parts.append(_settings_table(result))
    histories = getattr(result, "histories", None) or [result.history]
    chosen = getattr(result, "candidate", None) or 0
    kinds = getattr(result, "candidate_kinds", None)
    paths = (getattr(result, "embeddings", None) or {}).get("path_steps")
    parts.append(_figure_html("loss", _b64_png(plots.loss_figure(
        histories, min(chosen, len(histories) - 1), result.optimization.get("best_step", 0), kinds,
        _bypass_loss(result), result.bypassed, paths)), "the optimization: loss of every restart, the step kept"))
    parts.append("</section>")
    return "\n".join(parts)


def _summary_html(results) -> str:
    rows = "".join(
        f'<tr><td><a href="#result-{i}">{i + 1}</a></td><td>{_esc(r.prompt)}</td>'
        f"<td>{_esc(Path((r.input or {}).get('path') or 'array').name)}</td><td>{_esc(r.params['chain'])}</td>"
        f"<td class=num>{r.similarity_before:+.3f}</td><td class=num>{r.similarity_after:+.3f}</td>"
        f"<td class=num>{r.optimization.get('loss_value', float('nan')):.4f}</td>"
        f"<td>{'yes' if r.bypassed else 'no'}</td></tr>"
        for i, r in enumerate(results))
    return ('<section id="summary"><h2>Results</h2><table class="summary"><tr><th>#</th><th>prompt</th>'
            "<th>input</th><th>chain</th><th>similarity before</th><th>after</th><th>loss</th><th>bypassed</th></tr>"
            f"{rows}</table></section>")


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1060px;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em;margin:.6em 0}th,td{padding:.15em .6em;text-align:left;
vertical-align:top;border-bottom:1px solid #eee}th{color:#555;font-weight:600}td.num{text-align:right;
font-variant-numeric:tabular-nums}.tables{display:flex;flex-wrap:wrap;gap:2em}caption{text-align:left;font-weight:600}
.ab{background:#f6f7f9;border:1px solid #dde;border-radius:6px;padding:.6em .8em;margin:.8em 0}
.player-row{display:flex;align-items:center;gap:.6em;margin:.2em 0}.tag{width:5.5em;font-weight:600}
audio{width:560px;opacity:.45}audio.active{opacity:1;outline:2px solid #0072B2;border-radius:20px}
.controls{display:flex;flex-wrap:wrap;gap:1.2em;align-items:center;margin-top:.4em}
button{font-size:1em;padding:.25em .9em}.lufs{color:#444}.badge{background:#c33;color:#fff;border-radius:4px;
padding:0 .4em;font-size:.8em}figure{margin:.8em 0}figcaption{color:#666;font-size:.85em}
img.figure{max-width:100%;border:1px solid #eee}img[usemap]{max-width:none}.note{color:#555;font-size:.9em}
"""

_JS = """
(function () {
  function db(x) { return Math.pow(10, x / 20); }
  document.querySelectorAll('.ab').forEach(function (box) {
    var players = { before: box.querySelector('audio[data-role=before]'),
                    after: box.querySelector('audio[data-role=after]') };
    var button = box.querySelector('.ab-switch'), match = box.querySelector('.match');
    function volumes() {
      var diff = parseFloat(box.dataset.lufsAfter) - parseFloat(box.dataset.lufsBefore);
      players.before.volume = 1; players.after.volume = 1;
      if (match.checked && isFinite(diff)) {
        if (diff > 0) players.after.volume = db(-diff); else players.before.volume = db(diff);
      }
    }
    function activate(role) {
      var from = players[box.dataset.active], to = players[role];
      if (from !== to) {
        var playing = !from.paused;
        from.pause();
        try { to.currentTime = from.currentTime; } catch (e) { /* not loaded yet */ }
        if (playing) { to.play().catch(function () {}); }
      }
      box.dataset.active = role;
      players.before.classList.toggle('active', role === 'before');
      players.after.classList.toggle('active', role === 'after');
      button.textContent = 'A/B: switch to ' + (role === 'before' ? 'after' : 'before');
    }
    button.addEventListener('click', function () {
      activate(box.dataset.active === 'before' ? 'after' : 'before');
    });
    ['before', 'after'].forEach(function (role) {
      players[role].addEventListener('play', function () {
        if (box.dataset.active !== role) {
          var other = players[role === 'before' ? 'after' : 'before'];
          other.pause(); box.dataset.active = role; activate(role);
        }
      });
    });
    match.addEventListener('change', volumes);
    volumes();
  });
})();
"""


def render_html(results: Sequence, path: str | os.PathLike, projection: str = "pca",
                embed_audio: bool | None = None) -> str:
    """The page's HTML for `results`, to be written at `path` (audio links are relative to it)."""
    page = Path(path)
    title = (f"Text2FX: \u201c{results[0].prompt}\u201d" if len(results) == 1
             else f"Text2FX: {len(results)} results")
    body = [f"<h1>{_esc(title)}</h1>",
            f'<p class="note">Made by text2fx on {_esc(results[0].created)}. Press the A/B button (or play '
            "either player) to switch at the same position; tick loudness-matched playback to hear both at the "
            "same integrated loudness (ITU-R BS.1770).</p>"]
    if len(results) > 1:
        body.append(_summary_html(results))
    body += [_result_html(i, r, page, embed_audio) for i, r in enumerate(results)]
    body.append(_map_html(results, projection))
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f"<body>\n{''.join(body)}\n<script>{_JS}</script></body></html>\n")


def write_html(results, path: str | os.PathLike, *, overwrite: bool = False, projection: str = "pca",
               embed_audio: bool | None = None) -> Path:
    """Write one page for one or several `Result`s at `path`, atomically.

    Args:
        results: a `Result` or a list of them (several: one page comparing them, a row each, one shared map).
        overwrite: replace an existing file.
        projection: the map's projection, "pca" (default) or "umap" (needs umap-learn).
        embed_audio: True: embed the audio (Ogg Vorbis) even when it is a playable file; False/None: link
            files a browser plays, relative to the page, and embed the rest.

    Returns:
        The page's path.
    """
    from text2fx import audio_io, outputs

    results = list(results) if isinstance(results, (list, tuple)) else [results]
    if not results:
        raise InputError("no results to draw")
    path = Path(path)
    outputs.check_target(path, [], overwrite)
    outputs.check_writable(path)
    text = render_html(results, path, projection, embed_audio)
    with audio_io.atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
