"""The report page in a real browser: headless Chromium (Debian's `chromium`; `.ci/run` installs it when
missing). The page is loaded in an iframe of a small harness page, which waits for the players, looks at
every figure, presses the A/B switch and writes what it saw into its own DOM, which Chromium then dumps.
Skipped, with the reason, where no Chromium is installed."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from doubles import SpectralTestEmbedder
from text2fx.engine import Engine

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None or not sys.platform.startswith("linux"),
    reason="needs headless Chromium (apt-get install chromium; .ci/run installs it when it can)")
WIDTH, HEIGHT = 1100, 5200

HARNESS = """<!doctype html><html><body style="margin:0"><iframe id="page" src="PAGE" width="%d" height="%d"
style="border:0;display:block"></iframe><pre id="out">pending</pre><script>
var frame = document.getElementById('page');
frame.onload = function () {
  var doc = frame.contentDocument, t0 = Date.now();
  function stats(img) {  // mean and spread of the figure's pixels, drawn into a canvas
    var c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
    var g = c.getContext('2d'); g.drawImage(img, 0, 0);
    var d = g.getImageData(0, 0, c.width, c.height).data, n = d.length / 4, s = 0, s2 = 0;
    for (var i = 0; i < d.length; i += 4) { var v = (d[i] + d[i + 1] + d[i + 2]) / 3; s += v; s2 += v * v; }
    var m = s / n; return {mean: m, std: Math.sqrt(s2 / n - m * m)};
  }
  function report() {
    var audios = Array.prototype.slice.call(doc.querySelectorAll('audio'));
    var box = doc.querySelector('.ab');
    var out = {players: audios.map(function (a) { return {role: a.dataset.role, ready: a.readyState,
                 duration: a.duration, error: a.error && a.error.code}; }),
               figures: Array.prototype.slice.call(doc.querySelectorAll('img.figure')).map(function (img) {
                 var r = img.getBoundingClientRect(), s = stats(img);
                 return {name: img.dataset.figure, width: img.naturalWidth, x: r.left, y: r.top, w: r.width,
                         h: r.height, mean: s.mean, std: s.std}; }),
               active: [box.dataset.active]};
    box.querySelector('.ab-switch').click();
    out.active.push(box.dataset.active, doc.querySelector('audio.active').dataset.role);
    box.querySelector('.ab-switch').click();
    out.active.push(box.dataset.active);
    document.getElementById('out').textContent = JSON.stringify(out);
  }
  (function wait() {
    var audios = Array.prototype.slice.call(doc.querySelectorAll('audio'));
    if (audios.every(function (a) { return a.readyState >= 1 || a.error; }) || Date.now() - t0 > 8000) report();
    else setTimeout(wait, 100);
  })();
};
</script></body></html>"""


def chromium(*args, timeout=90):
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--mute-audio", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("page")
    rng = np.random.default_rng(0)
    t = np.arange(4 * 44100) / 44100
    x = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(t.size)
    sf.write(folder / "in.wav", np.stack([x, 0.8 * x], 1).astype(np.float32), 44100, subtype="PCM_16")
    engine = Engine(SpectralTestEmbedder(sample_rate=16000, window_seconds=1.0))
    engine.apply_files(folder / "in.wav", "bright", chain="eq,reverb", html=True, steps=12, restarts=2)
    return folder / "in.bright.html"


@pytest.fixture(scope="module")
def seen(page):
    harness = page.parent / "harness.html"
    harness.write_text(HARNESS.replace("PAGE", page.name) % (WIDTH, HEIGHT))
    run = chromium("--allow-file-access-from-files", "--enable-logging=stderr", "--v=0",
                   "--virtual-time-budget=20000", "--dump-dom", harness.as_uri())
    found = re.search(r'<pre id="out">(.*?)</pre>', run.stdout, re.S)
    assert found and found.group(1) != "pending", run.stdout[-2000:] + run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line and page.name in line]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")), console


def test_the_page_loads_without_errors_plays_both_and_switches(page, seen):
    out, console = seen
    assert console == []  # the page logs nothing: no errors, no failed loads
    assert [p["role"] for p in out["players"]] == ["before", "after"]
    # the output is longer than the input by the reverb's tail (output.frames in the report)
    frames = json.loads(page.with_suffix(".json").read_text())["output"]["frames"]
    durations = {"before": 4.0, "after": frames / 44100}
    assert all(p["ready"] >= 1 and p["duration"] == pytest.approx(durations[p["role"]], abs=0.01)
               and p["error"] is None for p in out["players"]), out["players"]
    assert out["active"] == ["before", "after", "after", "before"]
    names = [f["name"] for f in out["figures"]]
    assert names == ["spectrogram", "settings", "loss", "map"]
    assert all(f["width"] > 300 and f["std"] > 20 for f in out["figures"]), out["figures"]


def test_every_figure_is_visible_on_screen(page, seen, tmp_path):
    shot = tmp_path / "page.png"
    chromium(f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}", page.as_uri())
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    for f in seen[0]["figures"]:
        y0, x0 = int(f["y"]), int(f["x"])
        assert y0 + f["h"] <= HEIGHT, "make HEIGHT larger: the page is longer than the screenshot"
        region = pixels[y0 : y0 + int(f["h"]), x0 : x0 + int(f["w"])]
        drawn = (region < 0.9).any(-1).mean()  # share of pixels that are not (near) white
        assert region.size and region.std() > 0.05 and drawn > 0.01, (f["name"], region.std(), drawn)
