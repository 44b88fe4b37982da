"""How long a user waits for the `text2fx` command, and where the time goes: old code against new, same run.

Each run is the real command (`text2fx.cli.main`) in a child process on a 10 s stereo 48 kHz clip, with
`--steps 1` (the fixed cost: one optimization step) unless stated. The child times its parts by wrapping
the functions the command calls, the same way in either version of the code:

    python start    from spawning the child to its first line (interpreter start-up)
    imports         first line to the model's construction: imports, argument parsing, reading the clip,
                    checking the prompt's length with the tokenizer
    model           `ClapEmbedder(...)`: model code imports, building the model, loading the checkpoint
    text            `ClapEmbedder.embed_text`: tokenizing and encoding the prompt (or reading it from the
                    on-disk text embedding cache)
    optimization    `text2fx.optimize.optimize`: the step(s), first-forward costs included
    rendering       `text2fx.rendering.render_file`: running the chain over the file and writing the audio
    writing         `text2fx.report.write`: the settings/report JSON
    other           the rest of `main` (effect chain set-up, results, printing)
    exit            `main`'s return to the process's exit (interpreter teardown)

Variants: "before" runs a checkout of the old code (`--before DIR`, e.g. made with `git worktree add --detach
/tmp/t2fx-before <commit>`; `git stash` or a checkout in the working tree is not needed); "after" the code
this script lives in, with a prompt it has not seen (text cache miss) and again with the same prompt (hit).
The on-disk caches live in a temporary folder of this run. Before timing, one untimed run of each variant
pages the checkpoint in and compiles the old checkout's bytecode, as a user's second run would find them.
Each figure is the median over `--repeats` rounds; within a round the order of "before" and "after"
alternates. The checkpoint has random weights (the speed does not depend on them): nothing here measures
quality. `--runs auto` adds whole runs of the default preset for the device (before and after).

    python benchmarks/cli_time.py --before /tmp/t2fx-before [--repeats 5] [--arch tiny|base] [--device cpu]
        [--runs auto,auto-bf16,paper,prompts16,help] [--workdir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 48000
HERE = Path(__file__).resolve().parents[1]
PROMPTS = [
    "warm and bright", "dark and muffled", "in a large cathedral", "coming through an old telephone",
    "crisp and airy", "boomy", "thin and tinny", "in a small bathroom", "distant", "intimate and close",
    "underwater", "harsh", "smooth", "metallic", "like a vinyl record", "in a concert hall",
]
RUNS = {  # name -> (what it is, extra command-line arguments)
    "help": ("`text2fx --help`", ["--help"]),
    "auto": ("1 prompt, default preset for the device", []),
    "auto-bf16": ("1 prompt, default preset, --precision bfloat16", ["--precision", "bfloat16"]),
    "paper": ("1 prompt, --preset paper (600 steps)", ["--preset", "paper"]),
    "prompts16": ("16 prompts in one command, default preset", [a for p in PROMPTS for a in ("-p", p)]),
}
PHASES = ["python start", "imports", "model", "text", "optimization", "rendering", "writing", "other", "exit"]

# Run in the child: time the command's parts by wrapping what it calls, then run it.
CHILD = r"""
import json, os, sys, time
first_wall = time.time()
t0 = time.perf_counter()
import text2fx
tree = os.environ["T2FX_BENCH_TREE"]
if not os.path.realpath(text2fx.__file__).startswith(os.path.realpath(tree) + os.sep):
    raise SystemExit(f"benchmark child imported {text2fx.__file__}, not the code in {tree}")
totals = {}
stack = []
start = [None]

def wrap(owner, name, key):
    fn = getattr(owner, name)
    def timed(*args, **kwargs):
        t = time.perf_counter()
        if start[0] is None:
            start[0] = t
        stack.append(0.0)
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - t
            inner = stack.pop()
            totals[key] = totals.get(key, 0.0) + elapsed - inner  # exclusive of wrapped calls inside
            if stack:
                stack[-1] += elapsed
    setattr(owner, name, timed)

# Wrapped as each module loads, so nothing is imported earlier than the command imports it (the command
# chooses its threading policy before torch loads).
WRAPS = {
    "text2fx.clap.embedder": [("ClapEmbedder.__init__", "model"), ("ClapEmbedder.embed_text", "text")],
    "text2fx.optimize": [("optimize", "optimization")],
    "text2fx.rendering": [("render_file", "rendering")],
    "text2fx.report": [("write", "writing")],
}

import importlib.abc, importlib.util

class WrapOnLoad(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in WRAPS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            for attr, key in WRAPS[name]:
                owner = module
                *parents, leaf = attr.split(".")
                for part in parents:
                    owner = getattr(owner, part)
                wrap(owner, leaf, key)

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, WrapOnLoad())
from text2fx.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help
    code = exc.code or 0
end = time.perf_counter()
phases = {"python start": first_wall - float(os.environ["T2FX_BENCH_SPAWN"]),
          "imports": (start[0] if start[0] is not None else end) - t0}
phases.update(totals)
phases["other"] = end - t0 - sum(v for k, v in phases.items() if k != "python start")
with open(os.environ["T2FX_BENCH_OUT"], "w") as f:
    json.dump({"phases": phases, "end_wall": time.time(), "code": code}, f)
sys.exit(code)
"""


def write_clip(path: Path) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(10 * SR) / SR
    tone = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    sf.write(str(path), np.stack([tone, 0.7 * tone]).T + 0.02 * rng.standard_normal((t.size, 2)), SR)


def model_files(workdir: Path, arch: str) -> tuple[Path, Path]:
    from text2fx.testing import make_random_clap_checkpoint, make_test_tokenizer

    checkpoint = workdir / f"random-{arch}.pt"
    if not checkpoint.exists():
        make_random_clap_checkpoint(checkpoint, arch, seed=0)
    return checkpoint, make_test_tokenizer(workdir / "tokenizer")


class Runner:
    def __init__(self, tmp: Path, clip: Path, env: dict, device: list[str]) -> None:
        self.tmp, self.clip, self.env, self.device = tmp, clip, env, device
        self.count = 0

    def run(self, tree: Path, args: list[str]) -> dict:
        """One command in a child process running the code in `tree`: its phases and wall clock (s)."""
        self.count += 1
        out = self.tmp / f"run{self.count}"
        out.mkdir()
        timing = out / "timing.json"
        env = dict(self.env, PYTHONPATH=str(tree), T2FX_BENCH_TREE=str(tree), T2FX_BENCH_OUT=str(timing))
        cmd = [sys.executable, "-c", CHILD, *args, *self.device, "-o", str(out / "files") + os.sep, "-q"]
        env["T2FX_BENCH_SPAWN"] = repr(time.time())
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
        wall = time.perf_counter() - started
        exited = time.time()
        if proc.returncode != 0 or not timing.exists():
            raise SystemExit(f"{' '.join(args[:3])} in {tree} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        record = json.loads(timing.read_text())
        phases = record["phases"]
        phases["exit"] = exited - record["end_wall"]
        reports = [json.loads(p.read_text()) for p in sorted((out / "files").glob("*.json"))]
        return {"wall": wall, "phases": phases, "reports": reports}


def median_phases(runs: list[dict]) -> dict:
    return {p: statistics.median(r["phases"].get(p, 0.0) for r in runs) for p in PHASES} | {
        "total": statistics.median(r["wall"] for r in runs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="a checkout of the old code (git worktree add --detach DIR COMMIT)")
    ap.add_argument("--repeats", type=int, default=5, help="rounds of 1-step runs (default 5)")
    ap.add_argument("--arch", choices=["tiny", "base"], default="tiny",
                    help="HTSAT size of the random checkpoint: tiny (as 630k-audioset-best.pt, default) or base")
    ap.add_argument("--device", default=None, help="passed to the command (default: its own choice)")
    ap.add_argument("--runs", default="", help=f"whole runs too, comma-separated, from {', '.join(RUNS)}")
    ap.add_argument("--workdir", type=Path, help="keep the random checkpoint here between runs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    names = [n for n in args.runs.split(",") if n]
    if not set(names) <= set(RUNS):
        ap.error(f"--runs takes {', '.join(RUNS)}")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    trees = {"after": HERE}
    if args.before is not None:
        if not (args.before / "text2fx" / "cli.py").is_file():
            ap.error(f"--before {args.before} holds no text2fx checkout")
        trees = {"before": args.before.resolve(), "after": HERE}

    results: dict = {"repeats": args.repeats, "arch": args.arch, "trees": {k: str(v) for k, v in trees.items()}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        workdir = args.workdir or tmp
        workdir.mkdir(parents=True, exist_ok=True)
        checkpoint, tokenizer = model_files(workdir, args.arch)
        clip = tmp / "clip.wav"
        write_clip(clip)
        env = dict(os.environ, TEXT2FX_CLAP_CKPT=str(checkpoint), TEXT2FX_CLAP_TOKENIZER=str(tokenizer),
                   TEXT2FX_CACHE_DIR=str(tmp / "cache"), TEXT2FX_TEXT_CACHE="1")
        env.pop("TEXT2FX_SERVER", None)
        runner = Runner(tmp, clip, env, ["--device", args.device] if args.device else [])
        one_step = ["--steps", "1"]

        # untimed: page the checkpoint in, compile bytecode, memoise the checkpoint's digest (after)
        for tree in trees.values():
            runner.run(tree, [str(clip), "warm-up", *one_step])
        rounds: dict[str, list[dict]] = {"before": [], "after, new prompt": [], "after, prompt seen before": []}
        for r in range(args.repeats):
            prompt = PROMPTS[r % len(PROMPTS)] + f" {r}"  # new to the text cache every round
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for variant in order:
                if variant in trees:
                    key = "before" if variant == "before" else "after, new prompt"
                    rounds[key].append(runner.run(trees[variant], [str(clip), prompt, *one_step]))
            rounds["after, prompt seen before"].append(runner.run(HERE, [str(clip), prompt, *one_step]))
        columns = {k: median_phases(v) for k, v in rounds.items() if v}
        results["one_step"] = columns
        steps = {r["reports"][0]["optimization"]["steps_run"] for v in rounds.values() for r in v if r["reports"]}
        device = {r["reports"][0]["clap"]["device"] for v in rounds.values() for r in v if r["reports"]}
        print(f"1-step command on a 10 s stereo 48 kHz clip, HTSAT-{args.arch} random-weight checkpoint "
              f"(plumbing, not quality); device {','.join(sorted(device))}; steps run {sorted(steps)}; "
              f"median of {args.repeats} (s)\n")
        print("| part | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
        for part in PHASES + ["total"]:
            shown = "**total (wall clock)**" if part == "total" else part
            print(f"| {shown} | " + " | ".join(f"{c[part]:.2f}" for c in columns.values()) + " |")
        model_ready = {k: c["python start"] + c["imports"] + c["model"] for k, c in columns.items()}
        print("\nmodel part alone: " + ", ".join(f"{k} {c['model']:.2f} s" for k, c in columns.items()))
        print("start to model ready: " + ", ".join(f"{k} {v:.2f} s" for k, v in model_ready.items()), flush=True)

        if names:
            print("\n| run | code | wall clock (s) | steps run | device | precision |\n|---|---|---:|---:|---|---|")
            results["runs"] = {}
            for name in names:
                what, extra = RUNS[name]
                for variant, tree in trees.items():
                    if extra == ["--help"]:
                        positional = []
                    elif extra[:1] == ["-p"]:
                        positional = [str(clip)]
                    else:
                        positional = [str(clip), PROMPTS[0]]
                    run = runner.run(tree, [*positional, *extra])
                    opt = [r["optimization"] for r in run["reports"]]
                    steps_run = ",".join(sorted({str(o["steps_run"]) for o in opt})) or "-"
                    dev = ",".join(sorted({r["clap"]["device"] for r in run["reports"]})) or "-"
                    precision = ",".join(sorted({o["precision"] for o in opt})) or "-"
                    results["runs"][f"{name}/{variant}"] = {"wall_s": run["wall"], "phases": run["phases"],
                                                            "steps_run": steps_run, "device": dev}
                    print(f"| {what} | {variant} | {run['wall']:.2f} | {steps_run} | {dev} | {precision} |",
                          flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
