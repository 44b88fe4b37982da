"""CLAP's CPU step on a busy machine: idle, beside a busy core, beside a second `text2fx`, with the threading
policy off (torch's defaults, as before `text2fx.threads`) and on, all in one run.

The step is what each optimization step of the command spends most of its time on: CLAP's audio branch
forward and backward on one 10 s clip at 48 kHz (batch 1, as the CPU presets run), on a random-weight
checkpoint with the real architecture of the default `630k-audioset-best.pt` (HTSAT-tiny audio branch,
RoBERTa text branch; ~600 MB, built by `text2fx.testing` on first use; no network). Random weights cost the
same time as trained ones.

For each policy one process loads the model (the policy is chosen before it imports torch, as the command
does) and times the step under each condition in turn:

- idle: nothing else running;
- busy: beside one process spinning on one core (`while True: pass`; what a DAW playing back looks like);
- text2fx: beside a second real `text2fx` command optimizing a 10 s clip (`--preset paper`, no early stop)
  with the same policy, timed once it has reached its optimization loop.

Policies: `off` (TEXT2FX_THREADS=off: torch's defaults), `on` (the command's policy), or a number N
(TEXT2FX_THREADS=N). Prints a Markdown table with each condition's median step and its ratio to the same
policy's idle step, and checks the targets of issue 16 on a 2-core machine (busy <= 2x idle, text2fx <= 3x
idle, idle with the policy no slower than without). Run it on an otherwise idle machine:

    python benchmarks/cpu_contention.py                       # off and on, 5 timed steps per cell
    python benchmarks/cpu_contention.py --policies off,on,1 --repeats 8
    python benchmarks/cpu_contention.py --quick               # 2 timed steps per cell (a plumbing check)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from text2fx import threads  # noqa: E402  (torch-free)

CONDITIONS = ("idle", "busy", "text2fx")
NEIGHBOUR_STEPS = 100000  # the neighbour never finishes while we measure; it is stopped after each cell


def _child_env(policy: str) -> dict[str, str]:
    """The environment of a process run under `policy`: the parent's, less every threading variable."""
    env = {k: v for k, v in os.environ.items() if k not in threads.WAIT_VARS + threads.COUNT_VARS + (threads.ENV_VAR,)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if policy == "off":
        env[threads.ENV_VAR] = "off"
    elif policy != "on":
        env[threads.ENV_VAR] = policy
    return env


def measure_child(args: argparse.Namespace) -> None:
    """Load CLAP under the policy in our environment, then time the step once per condition the parent names
    on stdin (one line each), answering one JSON line per condition on stdout."""
    threads.configure()  # as the command does; sets nothing under TEXT2FX_THREADS=off
    import warnings

    import torch

    warnings.filterwarnings("ignore", message="torch.meshgrid")  # raised inside laion-clap's HTSAT; not ours

    from text2fx.clap import ClapEmbedder

    embedder = ClapEmbedder(args.checkpoint, args.tokenizer, device="cpu")
    threads.apply_to_torch()  # as Engine does
    audio = 0.1 * torch.randn(args.batch, 1, embedder.window_samples, generator=torch.Generator().manual_seed(0))

    def step() -> float:
        start = time.perf_counter()
        x = audio.clone().requires_grad_(True)
        embedder.embed_audio(x, embedder.sample_rate).sum().backward()
        return time.perf_counter() - start

    step()  # first call: allocator, FFT plans
    info = {"threads": torch.get_num_threads(), "torch": torch.__version__,
            "env": {k: os.environ.get(k) for k in threads.WAIT_VARS + threads.COUNT_VARS}}
    print(json.dumps({"ready": info}), flush=True)
    for line in sys.stdin:
        condition = line.strip()
        if not condition:
            continue
        times = [step() for _ in range(args.repeats)]
        print(json.dumps({"condition": condition, "times": times}), flush=True)


class Neighbour:
    """A process beside the measurement: a spinning core, or a second `text2fx` run under the same policy."""

    def __init__(self, kind: str, policy: str, files: dict[str, Path], workdir: Path):
        self.kind, self.reached = kind, threading.Event()
        env = _child_env(policy)
        if kind == "busy":
            self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=env)
            self.reached.set()
            return
        command = [sys.executable, "-m", "text2fx.cli", str(files["clip"]), "warm and bright", "--chain", "eq,reverb",
                   "--preset", "paper", "--steps", str(NEIGHBOUR_STEPS), "--device", "cpu",
                   "--clap-ckpt", str(files["checkpoint"]), "--tokenizer", str(files["tokenizer"]),
                   "-o", str(workdir / "neighbour.wav"), "--overwrite"]
        self.proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.tail = b""
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        # The progress bar (stderr) appears when the optimization starts; its total is NEIGHBOUR_STEPS.
        marker = f"/{NEIGHBOUR_STEPS}".encode()
        while chunk := os.read(self.proc.stderr.fileno(), 4096):
            self.tail = (self.tail + chunk)[-4000:]
            if marker in self.tail:
                self.reached.set()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.reached.wait(0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                detail = self.tail.decode(errors="replace").strip().splitlines()[-3:]
                sys.exit(f"cpu_contention: the neighbouring text2fx did not reach its optimization loop: {detail}")
        time.sleep(1.0)  # past step 0's bookkeeping, into the steady loop

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # the command treats SIGTERM as Ctrl-C and removes its temporary files
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _make_files(workdir: Path) -> dict[str, Path]:
    import numpy as np
    import soundfile as sf

    from text2fx.testing import random_clap_files

    checkpoint, tokenizer = random_clap_files(workdir)
    clip = workdir / "clip-10s.wav"
    if not clip.exists():
        rng = np.random.default_rng(0)
        t = np.arange(480000) / 48000
        audio = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2 + 0.02 * rng.standard_normal(t.size)
        sf.write(clip, audio.astype(np.float32), 48000)
    return {"checkpoint": checkpoint, "tokenizer": tokenizer, "clip": clip}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(args: argparse.Namespace) -> None:
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for p in policies:
        if p not in ("on", "off") and not (p.isdigit() and int(p) >= 1):
            sys.exit(f"cpu_contention: a policy is off, on or a thread count of at least 1, got {p!r}")
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    if unknown := set(conditions) - set(CONDITIONS):
        sys.exit(f"cpu_contention: unknown condition(s) {sorted(unknown)}; choose from {', '.join(CONDITIONS)}")
    conditions = ["idle"] + [c for c in conditions if c != "idle"]  # every ratio is to the idle step
    user_set = [k for k in threads.WAIT_VARS + threads.COUNT_VARS + (threads.ENV_VAR,) if k in os.environ]
    if user_set:
        print(f"note: {', '.join(user_set)} set in this shell; left out of every measured process", file=sys.stderr)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        files = _make_files(workdir)
        results: dict[str, dict[str, list[float]]] = {}
        info: dict[str, dict] = {}
        for policy in policies:
            child = subprocess.Popen(
                [sys.executable, __file__, "--child", "--checkpoint", str(files["checkpoint"]),
                 "--tokenizer", str(files["tokenizer"]), "--repeats", str(args.repeats), "--batch", str(args.batch)],
                env=_child_env(policy), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                info[policy] = json.loads(child.stdout.readline())["ready"]
                results[policy] = {}
                for condition in conditions:
                    neighbour = None if condition == "idle" else Neighbour(condition, policy, files, workdir)
                    try:
                        if neighbour is not None:
                            neighbour.wait_ready(args.neighbour_timeout)
                        child.stdin.write(condition + "\n")
                        child.stdin.flush()
                        answer = json.loads(child.stdout.readline())
                    finally:
                        if neighbour is not None:
                            neighbour.stop()
                    results[policy][condition] = answer["times"]
                    print(f"  policy {policy:>3} {condition:>7}: median {statistics.median(answer['times']):.3f} s "
                          f"({', '.join(f'{t:.2f}' for t in answer['times'])})", file=sys.stderr)
            finally:
                child.stdin.close()
                child.wait()
    _report(args, policies, conditions, results, info, load_before)


def _report(args, policies, conditions, results, info, load_before) -> None:
    med = {p: {c: statistics.median(results[p][c]) for c in conditions} for p in policies}
    print(f"CPU: {_cpu_name()}; {threads.available_cpus()} CPUs available; torch {info[policies[0]]['torch']}; "
          f"batch {args.batch} x 10 s at 48 kHz, forward+backward; median of {args.repeats} steps after one "
          f"warm-up; load average before {load_before[0]:.2f}\n")
    print("| policy | threads | " + " | ".join(f"{c} s" for c in conditions) + " | "
          + " | ".join(f"{c} / idle" for c in conditions if c != "idle") + " |")
    print("|---|---:|" + "---:|" * (2 * len(conditions) - 1))
    for p in policies:
        cells = [f"{med[p][c]:.3f}" for c in conditions]
        ratios = [f"{med[p][c] / med[p]['idle']:.2f}" for c in conditions if c != "idle"]
        print(f"| {p} | {info[p]['threads']} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    print("\nTargets (issue 16, 2-core machine):")
    for p in policies:
        if p == "off":
            continue
        checks = []
        if "busy" in conditions:
            r = med[p]["busy"] / med[p]["idle"]
            checks.append(f"busy {r:.3f}x idle (<= 2: {'met' if r <= 2 else 'NOT met'})")
        if "text2fx" in conditions:
            r = med[p]["text2fx"] / med[p]["idle"]
            checks.append(f"beside text2fx {r:.3f}x idle (<= 3: {'met' if r <= 3 else 'NOT met'})")
        if "off" in policies:
            r = med[p]["idle"] / med["off"]["idle"]
            checks.append(f"idle {r:.3f}x the policy-off idle (<= 1 within noise)")
        print(f"- policy {p}: " + "; ".join(checks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default="off,on", help="comma-separated: off, on, or a thread count "
                        "(default: off,on)")
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated subset of "
                        f"{', '.join(CONDITIONS)} (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per cell (default: 5)")
    parser.add_argument("--batch", type=int, default=1, help="clips per step (default: 1, as the CPU presets)")
    parser.add_argument("--quick", action="store_true", help="2 timed steps per cell")
    parser.add_argument("--workdir", type=Path, help="where the random checkpoint is kept between runs "
                        "(default: a temporary folder)")
    parser.add_argument("--neighbour-timeout", type=float, default=600.0,
                        help="seconds the second text2fx may take to reach its optimization loop (default: 600)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.repeats = 2
    if args.child:
        measure_child(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
