"""Figures of a result: every effect's settings, the optimization, spectrograms and the map of CLAP's space.

Every figure is a `matplotlib.figure.Figure` made without pyplot (no global state, no display needed). The
curves of the effects come from the functions the effects run (`fx.eq.eq_frequency_response`, the reverb's
`impulse_response`, `fx.functional.compressor`, `fx.functional.distortion`, `fx.functional.gain`), so what
is drawn is what is applied.

    from text2fx.plots import settings_figure
    settings_figure("take.warm.json").savefig("curves.png")      # no CLAP needed

matplotlib is an optional dependency (`pip install "text2fx[report]"`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from text2fx.errors import InputError

DPI = 100
# Colours of results on a shared map (and of restarts in a loss plot), colour-blind safe (Okabe-Ito).
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def _figure(width: float, height: float, layout: str | None = "constrained"):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("plots need matplotlib: pip install matplotlib (or pip install \"text2fx[report]\")") from None
    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def save_png(fig, path) -> None:
    """Write `fig` as a PNG (no pyplot, so no display is needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=DPI)


def save_figure(fig, path, fmt: str = "png") -> None:
    """Write `fig` as png, svg or pdf."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, format=fmt, dpi=DPI)


def png_bytes(fig) -> bytes:
    """`fig` drawn once and encoded as PNG (afterwards its transforms give pixel positions)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    buf = io.BytesIO()
    Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3]).save(buf, "PNG", compress_level=3)
    return buf.getvalue()


def pixel_positions(fig, ax, points: Sequence[tuple]) -> list[tuple[float, float, str]]:
    """(x, y, text) in image pixels (origin top-left) of `(data xy, text)` points, once `fig` is drawn."""
    height = fig.bbox.height
    out = []
    for p, text in points:
        x, y = ax.transData.transform(p)
        out.append((float(x), float(height - y), text))
    return out


def _hz(f: float) -> str:
    return f"{f / 1000:.3g} kHz" if f >= 1000 else f"{f:.3g} Hz"


# -- effect settings -------------------------------------------------------------------------------------


def settings_figure(settings: Any, sample_rate: int = 48000, title: str | None = None):
    """One row per effect of a chain's settings, drawn.

    Args:
        settings: a report or its chain part (dict or JSON path), or an `fx.Chain` holding settings.
        sample_rate: the rate the curves are computed at (the EQ's bands are clamped to 0.45 x this rate,
            as when processing).
        title: above the rows.
    """
    from text2fx.report import load_chain

    chain = settings if hasattr(settings, "physical_settings") else load_chain(settings)
    rows = list(zip(chain.effects, chain.physical_settings()))
    fig = _figure(10, 2.9 * len(rows) + (0.3 if title else 0))
    grid = fig.add_gridspec(len(rows), 2)
    for r, (effect, params) in enumerate(rows):
        draw = _DRAWERS.get(effect.type_name)
        if effect.type_name == "reverb":
            _draw_reverb(fig.add_subplot(grid[r, 0]), fig.add_subplot(grid[r, 1]), effect, params, sample_rate)
        elif draw is not None:
            draw(fig.add_subplot(grid[r, :]), params, sample_rate)
        else:
            _draw_table(fig.add_subplot(grid[r, :]), effect.type_name, params)
    if title:
        fig.suptitle(title)
    return fig


def _draw_eq(ax, p: dict, sample_rate: int) -> None:
    import fx
    from fx import functional as F

    freqs, mag = fx.eq_frequency_response(p, sample_rate, n_freqs=600, f_min=20.0)
    freqs, mag = freqs.numpy(), mag.numpy()
    ax.semilogx(freqs, mag, color=COLORS[0], lw=2)
    ax.axhline(0, color="0.6", lw=0.8)
    top = max(6.0, float(np.abs(mag).max()) + 4.0)
    for k, section in enumerate(F.EQ_SECTIONS):
        f = min(p[f"{section}_cutoff_freq"], F.EQ_MAX_FREQ_RATIO * sample_rate)
        g, q = p[f"{section}_gain_db"], p[f"{section}_q_factor"]
        y = float(np.interp(math.log(f), np.log(freqs), mag))
        strong = abs(g) >= 0.5
        ax.plot([f], [y], "o", color=COLORS[1] if strong else "0.6", ms=6, zorder=3)
        ax.annotate(f"{_hz(f)}\n{g:+.1f} dB, Q {q:.2g}", (f, y), xytext=(0, 12 if k % 2 == 0 else -30),
                    textcoords="offset points", ha="center", fontsize=7, color="0.1" if strong else "0.55")
    ax.set_xlim(20, sample_rate / 2)
    ax.set_ylim(-top, top)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("gain (dB)")
    ax.set_title("EQ: magnitude response (each band: frequency, gain, Q)", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)


def _draw_reverb(ax_bars, ax_edc, effect, p: dict, sample_rate: int) -> None:
    import torch

    from fx import functional as F

    centers = F.OCTAVE_CENTERS_HZ
    nb = len(centers)
    rt60 = np.array([p[f"band{k}_rt60_s"] for k in range(nb)])
    gains = np.array([p[f"band{k}_gain_db"] for k in range(nb)])
    labels = [_hz(c).replace(" kHz", "k").replace(" Hz", "") for c in centers]
    x = np.arange(nb)
    live = np.array([c < sample_rate / 2 for c in centers])
    ax_bars.bar(x, rt60, color=[COLORS[0] if v else "0.8" for v in live])
    ax_bars.set_xticks(x, labels, fontsize=7)
    ax_bars.set_xlabel("octave band (Hz)")
    ax_bars.set_ylabel("RT60 (s)")
    ax_bars.set_ylim(0, max(1.0, rt60.max() * 1.25))
    for k in range(nb):
        ax_bars.text(x[k], rt60[k], f"{gains[k]:+.0f} dB", ha="center", va="bottom", fontsize=6, color="0.3")
    ax_bars.set_title(f"reverb: decay per band (wet gain on bars); mix {p['mix']:.0f} %, "
                      f"pre-delay {p['predelay_ms']:.0f} ms", fontsize=9)

    with torch.no_grad():
        ir = effect.impulse_response(sample_rate, p)[0, 0].double()
        energy = ir.square().flip(-1).cumsum(-1).flip(-1)  # Schroeder's backward integral
        edc = (10 * torch.log10(energy / energy[0] + 1e-30)).numpy()
    step = max(1, len(edc) // 2000)
    t = np.arange(0, len(edc), step) / sample_rate
    ax_edc.plot(t, edc[::step], color=COLORS[0], lw=2)
    ax_edc.axhline(-60, color="0.5", ls="--", lw=0.8)
    ax_edc.set_ylim(-90, 3)
    ax_edc.set_xlim(0, min(t[-1], 1.3 * rt60[live].max() + 0.1))
    ax_edc.set_xlabel("time (s)")
    ax_edc.set_ylabel("energy decay (dB)")
    ax_edc.set_title("energy decay curve of its impulse response (wet, all bands)", fontsize=9)
    ax_edc.grid(True, alpha=0.25)


def _levels_axes(ax, title: str) -> np.ndarray:
    levels = np.linspace(-60.0, 0.0, 61)
    ax.plot(levels, levels, color="0.6", ls="--", lw=0.8, label="unchanged")
    ax.set_xlabel("input level (dBFS)")
    ax.set_ylabel("output level (dBFS)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.25)
    return levels


def _draw_compressor(ax, p: dict, sample_rate: int) -> None:
    import torch

    from fx import functional as F

    knee = p.get("knee_db", 0.0)
    levels = _levels_axes(ax, f"compressor: static curve (ratio {p['ratio']:.2g}:1, knee {knee:.1f} dB, attack "
                              f"{p['attack_ms']:.3g} ms, release {p['release_ms']:.3g} ms, makeup "
                              f"{p['makeup_gain_db']:+.1f} dB)")
    t = lambda v: torch.tensor([[float(v)]], dtype=torch.float64)  # noqa: E731
    with torch.no_grad():  # the effect's own static curve (the gain the detector level asks for)
        gain = F.compressor_gain_db(torch.tensor(levels)[None], t(p["threshold_db"]), t(p["ratio"]), t(knee))[0]
    ax.plot(levels, levels + gain.numpy() + p["makeup_gain_db"], color=COLORS[0], lw=2, label="compressed")
    ax.axvline(p["threshold_db"], color=COLORS[1], lw=0.8, ls=":", label=f"threshold {p['threshold_db']:.1f} dB")
    ax.legend(fontsize=7)


def _draw_distortion(ax, p: dict, sample_rate: int) -> None:
    import torch

    from fx import functional as F

    # A full-scale 100 Hz sine through the effect's function (it matches its output's loudness to the input's
    # over 100 ms, so the curve is the one a steady sine gets); one period once settled.
    n = int(0.5 * sample_rate)
    x = torch.sin(2 * math.pi * 100.0 * torch.arange(n, dtype=torch.float64) / sample_rate)
    with torch.no_grad():
        y = F.distortion(x[None, None], torch.tensor([p["drive_db"]], dtype=torch.float64),
                         torch.tensor([p["mix"]], dtype=torch.float64), sample_rate)[0, 0]
    period = slice(n - int(sample_rate / 100), n)
    order = torch.argsort(x[period])
    xs, ys = x[period][order].numpy(), y[period][order].numpy()
    ax.plot(xs, xs, color="0.6", ls="--", lw=0.8, label="unchanged")
    ax.plot(xs, ys, color=COLORS[0], lw=2, label="shaped")
    ax.set_xlabel("input sample (full-scale sine)")
    ax.set_ylabel("output sample")
    ax.set_title(f"distortion: transfer curve (drive {p['drive_db']:.1f} dB, mix {p['mix']:.0f} %)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.25)


def _draw_gain(ax, p: dict, sample_rate: int) -> None:
    import torch

    from fx import functional as F

    levels = _levels_axes(ax, f"gain: {p['gain_db']:+.1f} dB")
    amp = torch.tensor(10 ** (levels / 20))[:, None, None]
    with torch.no_grad():
        y = F.gain(amp, torch.full((len(levels),), p["gain_db"], dtype=torch.float64))[:, 0, 0].numpy()
    ax.plot(levels, 20 * np.log10(y), color=COLORS[0], lw=2, label="gain")
    ax.legend(fontsize=7)


def _draw_table(ax, name: str, p: dict) -> None:
    ax.axis("off")
    ax.set_title(name, fontsize=10)
    ax.text(0, 1, "\n".join(f"{k} = {v:g}" for k, v in p.items()), va="top", family="monospace", fontsize=8,
            transform=ax.transAxes)


_DRAWERS = {"eq": _draw_eq, "compressor": _draw_compressor, "distortion": _draw_distortion,
            "gain": _draw_gain}


# -- optimization ----------------------------------------------------------------------------------------


def loss_figure(histories: Sequence[Sequence[float]], chosen: int, best_step: int, kinds: Sequence[str] | None = None,
                bypass_loss: float | None = None, bypassed: bool = False, path_steps: Sequence[int] | None = None):
    """Loss per step of every restart (candidate); the chosen one bold with its kept step marked."""
    fig = _figure(10, 3.0)
    ax = fig.add_subplot()
    for j, h in enumerate(histories):
        kind = f" ({kinds[j]})" if kinds else ""
        bold = j == chosen
        ax.plot(np.arange(len(h)), h, color=COLORS[j % len(COLORS)], lw=2.2 if bold else 1.0, alpha=1 if bold else 0.6,
                label=f"restart {j + 1}{kind}" + (" - kept" if bold else ""), zorder=3 if bold else 2)
    h = histories[chosen]
    if 0 <= best_step < len(h):
        ax.plot([best_step], [h[best_step]], "*", ms=14, color="k", zorder=4,
                label=f"kept step {best_step} (loss {h[best_step]:.4f})")
    if bypass_loss is not None:
        ax.axhline(bypass_loss, color="0.4", ls="--", lw=1,
                   label=f"bypass (unprocessed) {bypass_loss:.4f}" + (" - chosen" if bypassed else ""))
    if path_steps:
        ax.plot(path_steps, [h[s] for s in path_steps if s < len(h)], "|", color="0.3", ms=8,
                label="embeddings recorded (map)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (with the step's time shift)")
    ax.set_title("optimization: loss per step of every restart", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(True, alpha=0.25)
    return fig


# -- spectrograms ----------------------------------------------------------------------------------------


def spectrogram_db(audio: np.ndarray, sample_rate: int, columns: int = 600, rows: int = 160,
                   f_min: float = 30.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dB `(rows, frames)`, frame times s, log-spaced frequencies Hz) of the channel mean; at most `columns`
    frames, so a long file costs no more than a short one."""
    x = np.asarray(audio, dtype=np.float32)
    x = x.mean(0) if x.ndim == 2 else x
    n_fft = 2048 if sample_rate > 24000 else 1024
    if x.shape[-1] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[-1]))
    hop = max(n_fft // 4, -(-(x.shape[-1] - n_fft) // columns) if x.shape[-1] > n_fft else 1)
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=-1)) ** 2  # (frames, bins)
    freqs = np.geomspace(f_min, sample_rate / 2, rows)
    pos = freqs / (sample_rate / n_fft)
    lo = np.clip(np.floor(pos).astype(int), 0, power.shape[1] - 2)
    frac = (pos - lo)[None]
    rowed = power[:, lo] * (1 - frac) + power[:, lo + 1] * frac
    times = (np.arange(frames.shape[0]) * hop + n_fft / 2) / sample_rate
    return 10 * np.log10(rowed.T + 1e-12), times, freqs


def spectrogram_figure(before: np.ndarray, after: np.ndarray, sample_rate: int):
    """Before and after on the same dB scale, and their difference (after - before). The shorter one (an
    input without the reverb tail its output kept) is padded with silence."""
    n = max(np.shape(before)[-1], np.shape(after)[-1])
    pad = lambda x: np.pad(x, [(0, 0)] * (np.ndim(x) - 1) + [(0, n - np.shape(x)[-1])])  # noqa: E731
    before, after = pad(before), pad(after)
    a, times, freqs = spectrogram_db(before, sample_rate)
    b, _, _ = spectrogram_db(after, sample_rate)
    top = float(max(a.max(), b.max()))
    fig = _figure(10, 2.6)
    axes = fig.subplots(1, 3, sharey=True)
    extent = (0, times[-1] + times[0], 0, len(freqs))
    ticks = [f for f in (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000) if freqs[0] <= f <= freqs[-1]]
    tick_pos = np.interp(np.log(ticks), np.log(freqs), np.arange(len(freqs)))
    for ax, data, title, kw in (
        (axes[0], a, "before", dict(cmap="magma", vmin=top - 90, vmax=top)),
        (axes[1], b, "after (same scale)", dict(cmap="magma", vmin=top - 90, vmax=top)),
        (axes[2], b - a, "after - before (dB)", dict(cmap="RdBu_r", vmin=-20, vmax=20)),
    ):
        im = ax.imshow(data, origin="lower", aspect="auto", extent=extent, interpolation="nearest", **kw)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("time (s)")
        fig.colorbar(im, ax=ax, pad=0.01, fraction=0.05)
    axes[0].set_yticks(tick_pos, [_hz(f).replace(" kHz", "k").replace(" Hz", "") for f in ticks], fontsize=7)
    axes[0].set_ylabel("frequency (Hz)")
    return fig


# -- the map of CLAP's audio-text space ------------------------------------------------------------------


def project(points: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """`(n, D)` embeddings (L2-normalised here) -> `(n, 2)`: PCA, or UMAP (needs umap-learn)."""
    x = np.asarray(points, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise InputError("projection 'umap' needs umap-learn: pip install umap-learn") from None
        return umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(x) - 1)).fit_transform(x)
    if method != "pca":
        raise InputError(f"unknown projection {method!r}; choose pca or umap")
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def _short(text: str, n: int = 22) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def map_figure(context: dict | None, groups: Sequence[dict], method: str = "pca"):
    """The 2-D map: context texts (the paper's prompts), and per result its prompt and anchor texts, input and
    output audio, the audio's path during the optimization, and the directional loss's two directions.

    Args:
        context: {"texts": [...], "emb": (n, D)} or None.
        groups: per result {"label", "prompt", "anchor", "prompt_emb", "anchor_emb", "input_emb",
            "output_emb", "path" (R, D) or None, "path_steps"}.
        method: "pca" or "umap".

    Returns:
        (figure, axes, hover): hover lists every point as (data xy, text); `pixel_positions` turns them into
        image pixels once the figure is drawn (e.g. by `png_bytes`).
    """
    blocks, labels = [], []
    if context is not None:
        blocks.append(np.asarray(context["emb"]))
        labels += [("context", None, t) for t in context["texts"]]
    for g, group in enumerate(groups):
        for key, kind in (("prompt_emb", "prompt"), ("anchor_emb", "anchor"), ("input_emb", "input"),
                          ("output_emb", "output")):
            blocks.append(np.asarray(group[key])[None])
            labels.append((kind, g, None))
        if group.get("path") is not None and len(group["path"]):
            blocks.append(np.asarray(group["path"]))
            labels += [("path", g, s) for s in group["path_steps"]]
    xy = project(np.concatenate(blocks), method)

    fig = _figure(10, 7.0, layout=None)  # fixed margins: a layout engine would measure every label
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95)
    ax = fig.add_subplot()
    where: dict[tuple, np.ndarray] = {}
    hover = []
    texts = []
    for (kind, g, extra), p in zip(labels, xy):
        if kind == "context":
            ax.plot(*p, "o", color="0.7", ms=4, zorder=1)
            texts.append(ax.annotate(_short(extra), p, xytext=(3, 2), textcoords="offset points", fontsize=6,
                                     color="0.5"))
            hover.append((p, f"paper prompt (text): {extra}"))
        elif kind == "path":
            where.setdefault(("path", g), []).append(p)
            hover.append((p, f"{groups[g]['label']}: audio at step {extra}"))
        else:
            where[kind, g] = p
    handles = {}
    for g, group in enumerate(groups):
        c = COLORS[g % len(COLORS)]
        path = where.get(("path", g))
        if path is not None:
            path = np.array(path + [where["output", g]])
            handles["path"] = ax.plot(path[:, 0], path[:, 1], "-", color=c, lw=1, alpha=0.6, marker=".", ms=4,
                                      label="audio during the optimization")[0]
        pi, po, pt, pa = where["input", g], where["output", g], where["prompt", g], where["anchor", g]
        ax.annotate("", po, pi, arrowprops=dict(arrowstyle="-|>", color=c, lw=2, mutation_scale=16), zorder=4)
        ax.annotate("", pt, pa, arrowprops=dict(arrowstyle="-|>", color=c, lw=1.5, ls="--", mutation_scale=14),
                    zorder=4)
        handles["input"] = ax.plot(*pi, "o", color=c, ms=9, mec="k", label="input audio", zorder=5)[0]
        handles["output"] = ax.plot(*po, "s", color=c, ms=9, mec="k", label="output audio", zorder=5)[0]
        handles["prompt"] = ax.plot(*pt, "*", color=c, ms=15, mec="k", label="prompt text", zorder=5)[0]
        handles["anchor"] = ax.plot(*pa, "X", color=c, ms=10, mec="k", label="anchor text", zorder=5)[0]
        tag = f"{g + 1}: " if len(groups) > 1 else ""
        for p, text, weight in ((pi, f"{tag}input", "normal"), (po, f"{tag}output", "bold"),
                                (pt, f"{tag}\u201c{_short(group['prompt'], 30)}\u201d", "bold"),
                                (pa, f"{tag}anchor", "normal")):
            texts.append(ax.annotate(text, p, xytext=(7, -4), textcoords="offset points", fontsize=9, color=c,
                                     fontweight=weight, zorder=6))
        label = group["label"]
        hover += [(pi, f"{label}: input audio"), (po, f"{label}: output audio"),
                  (pt, f"{label}: prompt text \u201c{group['text']}\u201d"),
                  (pa, f"{label}: anchor text \u201c{group['anchor']}\u201d")]
    from matplotlib.lines import Line2D

    extra = [Line2D([], [], color="0.3", lw=2, marker=">", label="audio direction: input \u2192 output"),
             Line2D([], [], color="0.3", lw=1.5, ls="--", marker=">", label="text direction: anchor \u2192 prompt")]
    if context is not None:
        extra.append(Line2D([], [], color="0.7", marker="o", ls="", label="the paper's 60 prompts (text)"))
    ax.legend(handles=list(handles.values()) + extra, fontsize=7, loc="best", framealpha=0.85)
    ax.set_title(f"CLAP embeddings, {method.upper()} projection to 2-D (cosine geometry; hover a point)", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig, ax, hover
