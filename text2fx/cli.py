"""The `text2fx` command.

    text2fx INPUT [INPUT ...] PROMPT [options]      optimize effects toward the words, write audio + settings
    text2fx render INPUT PARAMS.json -o OUT         re-apply saved settings

Exit codes: 0 success; 2 usage errors (bad options, unknown effect, empty prompt, output path conflicts);
1 runtime errors (unreadable input, missing model files, ...); 130 interrupted. Errors are one line.

Heavy modules (torch, the models) are imported only after the command line is understood, so `--help`
and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A problem with the command line itself (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(f"{message} (see {self.prog} --help)")


def _main_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="text2fx",
        description="Optimize a chain of audio effects so that CLAP hears the audio as the words you give. "
        "Writes the processed audio and its effect settings (JSON, re-appliable with `text2fx render`).",
        epilog="Several inputs and/or prompts (--prompt, repeatable) are optimized together in one batch; "
        "outputs are then named INPUTSTEM.PROMPT-SLUG.EXT in the -o directory (default: beside each input). "
        "Re-apply settings: text2fx render INPUT PARAMS.json -o OUT",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio file(s); then the PROMPT, unless --prompt is used")
    p.add_argument("-p", "--prompt", action="append", dest="prompts", metavar="TEXT",
                   help="a prompt (repeatable); when given, every positional argument is an input")
    p.add_argument("--chain", default="eq,reverb", help="effects in order, e.g. eq | reverb | eq,reverb | "
                   "eq,compressor,reverb (default: eq,reverb)")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (one input, one prompt) or directory")
    p.add_argument("--params", metavar="OUT.json", help="where to write the settings (default: OUT with .json)")
    p.add_argument("--preset", default="auto", choices=["auto", "default", "paper", "fast"],
                   help="optimization recipe: default (300 steps, 4 restarts; for GPUs); paper (600 steps, "
                   "lr 0.01, random init, cosine: the paper's); fast (100 steps; for CPUs); auto (the "
                   "default): fast on a CPU, else default")
    p.add_argument("--loss", choices=["cosine", "directional", "best"], help="objective (preset's default: cosine)")
    p.add_argument("--anchor", metavar="TEXT", help="directional loss's contrasting text; {prompt} is replaced "
                   "(default: 'this sound is not {prompt}')")
    p.add_argument("--template", metavar="TEXT", help="how a prompt is phrased for CLAP (default: "
                   "'this sound is {prompt}')")
    p.add_argument("--steps", type=int, metavar="N", help="optimization steps")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--restarts", type=int, metavar="K", help="starting points optimized together; best kept")
    p.add_argument("--init", choices=["random", "neutral"], help="starting parameters")
    p.add_argument("--excerpts", type=int, metavar="N", help="10 s windows of a long input to listen to")
    p.add_argument("--max-batch", type=int, metavar="N", help="most clips optimized at once (restarts x excerpts per "
                   "input and prompt; default 16); lower it if the GPU runs out of memory")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed and settings, same result")
    p.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: best available")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                   help="CLAP audio branch precision; bfloat16 is faster on GPUs and on CPUs with bfloat16 "
                   "instructions (default: float32)")
    p.add_argument("--clap-ckpt", metavar="PATH", help="CLAP checkpoint file (else $TEXT2FX_CLAP_CKPT, else "
                   "the cached/downloaded 630k-audioset-best.pt)")
    p.add_argument("--tokenizer", metavar="DIR", help="folder with roberta-base vocab.json and merges.txt (else "
                   "$TEXT2FX_CLAP_TOKENIZER, else cached/downloaded)")
    p.add_argument("--subtype", help="output sample format, e.g. PCM_16, PCM_24, FLOAT (default: the input's)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    return p


def _render_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="text2fx render", description="Re-apply saved effect settings to an audio file (no CLAP).")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("params", metavar="PARAMS.json", help="a text2fx report or its 'chain' part")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--chain", help="refuse settings that are not for this chain spec")
    p.add_argument("--subtype", help="output sample format (default: the input's)")
    p.add_argument("--device", choices=["cpu", "cuda", "mps"], default="cpu")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


# The effects a chain spec may name (fx's built-ins; a test keeps this equal to fx.available_effects()).
# Spelled out here so that a typo in --chain is reported without importing torch.
BUILTIN_EFFECTS = ("compressor", "distortion", "eq", "gain", "reverb")


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe form of a prompt: lower case, letters (any script) and digits joined by '-'."""
    s = re.sub(r"[\W_]+", "-", text.lower()).strip("-")
    return s[:limit].rstrip("-") or "prompt"


def _unique_slugs(prompts: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for p in prompts:
        s = slug(p)
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return out


def _check_chain(spec: str) -> None:
    names = [n.strip() for n in spec.split(",")]
    if not all(names):
        raise UsageError(f"--chain {spec!r}: name effects separated by commas, e.g. eq,reverb")
    unknown = [n for n in names if n not in BUILTIN_EFFECTS]
    if unknown:
        raise UsageError(f"unknown effect {unknown[0]!r} in --chain; available: {', '.join(BUILTIN_EFFECTS)}")


def _check_text(text: str, what: str, needs_prompt: bool) -> None:
    try:
        text.format(prompt="x")
    except (KeyError, IndexError, ValueError):
        raise UsageError(f"{what} {text!r}: the only placeholder allowed is {{prompt}}") from None
    if needs_prompt and "{prompt}" not in text:
        raise UsageError(f"{what} {text!r} must contain {{prompt}}, where the prompt goes")


def _check_output(out: Path, inputs: list[Path], overwrite: bool) -> None:
    for i in inputs:
        if out.exists() and i.exists() and out.resolve() == i.resolve() or out.absolute() == i.absolute():
            raise UsageError(f"output {out} is the input file; choose another output path")
    if out.exists() and not overwrite:
        raise UsageError(f"output {out} already exists (use --overwrite to replace it)")
    if out.exists() and out.is_dir():
        raise UsageError(f"output {out} is a directory")


def _audio_suffix(info) -> str:
    """The input's extension when it names its container, else one that does (e.g. for 'take1')."""
    from text2fx import audio_io

    suffix = info.path.suffix
    try:
        audio_io.output_format(Path("x" + suffix), None)
        return suffix
    except Exception:
        return "." + info.format.lower()


def _plan_outputs(args, infos: list, prompts: list[str]) -> list[tuple[Path, Path]]:
    """(audio path, params path) for each (input, prompt), input-major."""
    plans = []
    inputs = [info.path for info in infos]
    single = len(inputs) == 1 and len(prompts) == 1
    out_dir = None
    as_dir = bool(args.output) and (args.output.endswith(("/", os.sep)) or Path(args.output).is_dir())
    if args.output and not single:
        out_dir = Path(args.output)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"-o {out_dir}: with several inputs or prompts, -o must be a directory")
    if args.params and not single:
        raise UsageError("--params names one file; with several inputs or prompts the settings are written "
                         "beside each output")
    slugs = _unique_slugs(prompts)
    for info in infos:
        name = info.path.name[: -len(info.path.suffix)] if info.path.suffix else info.path.name
        suffix = _audio_suffix(info)
        for s in slugs:
            if single and args.output and not as_dir:
                audio = Path(args.output)
            else:
                audio = (Path(args.output) if single and as_dir else out_dir or info.path.parent) / f"{name}.{s}{suffix}"
            params = Path(args.params) if args.params else audio.with_suffix(".json")
            plans.append((audio, params))
    seen = set()
    for audio, params in plans:
        for path in (audio, params):
            if path in seen:
                raise UsageError(f"two outputs would be written to {path}; give the inputs distinct names")
            seen.add(path)
            _check_output(path, inputs, args.overwrite)
    if plans[0][0].suffix.lower() == ".json":
        raise UsageError(f"output {plans[0][0]} looks like a params file; give an audio file name")
    return plans


def _check_writable(path: Path, info, fmt: str, subtype: str) -> None:
    """Fail now, not after minutes of optimization, if `path` cannot hold this audio (a rate or channel
    count the container refuses, a folder that cannot be created or written)."""
    import tempfile

    import soundfile as sf

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".text2fx-check-") as d:
            sf.SoundFile(str(Path(d) / f"probe{path.suffix}"), "w", samplerate=info.sample_rate,
                         channels=info.channels, format=fmt, subtype=subtype).close()
    except (OSError, RuntimeError) as e:
        raise UsageError(f"cannot write {path}: {' '.join(str(e).split())}") from None


def _progress(quiet: bool, label: str):
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = None

    def update(step: int, steps: int, loss: float, best: float) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=steps, desc=label, unit="step", dynamic_ncols=True, file=sys.stderr, leave=False)
        bar.update(step - bar.n)
        bar.set_postfix_str(f"loss {loss:.4f} (best {best:.4f})")

    def close() -> None:
        if bar is not None:
            bar.close()

    return update, close


def _number(v: float) -> str:
    """About three significant digits, never in exponent notation (12345 Hz, 682 Hz, 3.09, -0.43)."""
    magnitude = math.floor(math.log10(abs(v))) if abs(v) >= 1 else 0
    return f"{v:.{max(0, 2 - magnitude)}f}"


def _format_settings(result) -> list[str]:
    import textwrap

    lines = []
    for effect, units in zip(result.params["effects"], result.units):
        parts = [f"{name} {_number(value)}{(' ' + units[name]) if units.get(name) else ''}"
                 for name, value in effect["params"].items()]
        lines += textwrap.wrap(", ".join(parts), width=100, initial_indent=f"  {effect['type']:<11} ",
                               subsequent_indent=" " * 14)
    return lines


def run_main(argv: list[str]) -> int:
    args = _main_parser().parse_args(argv)
    if args.prompts:
        inputs, prompts = args.inputs, args.prompts
    else:
        if len(args.inputs) < 2:
            raise UsageError("give an INPUT and a PROMPT, e.g. text2fx song.wav \"warm and bright\"")
        inputs, prompts = args.inputs[:-1], args.inputs[-1:]
    prompts = [p.strip() for p in prompts]
    if any(not p for p in prompts):
        raise UsageError("empty prompt: describe the sound you want, e.g. \"warm and bright\"")
    for name, value in (("steps", args.steps), ("restarts", args.restarts), ("excerpts", args.excerpts),
                        ("max-batch", args.max_batch)):
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be at least 1")
    if args.lr is not None and not (args.lr > 0 and math.isfinite(args.lr)):
        raise UsageError("--lr must be a positive number")
    if not -(2**63) <= args.seed < 2**63:
        raise UsageError("--seed must fit in 64 bits")
    _check_chain(args.chain)
    if args.template is not None:
        _check_text(args.template, "--template", needs_prompt=True)
    if args.anchor is not None:
        _check_text(args.anchor, "--anchor", needs_prompt=False)

    from text2fx import audio_io
    from text2fx.errors import InputError

    infos = [audio_io.probe(Path(i)) for i in inputs]
    plans = _plan_outputs(args, infos, prompts)
    formats = []
    for (audio_path, _), info in zip(plans, [i for i in infos for _ in prompts]):
        try:
            formats.append(audio_io.output_format(audio_path, info, args.subtype))
        except InputError as e:
            raise UsageError(str(e)) from None
        _check_writable(audio_path, info, *formats[-1])
    device = _check_device(args.device)

    from text2fx import rendering
    from text2fx.engine import DEFAULT_ANCHOR, DEFAULT_TEMPLATE, Engine, prepare_input

    from text2fx.optimize import resolve_preset

    started = time.perf_counter()
    preset = resolve_preset(args.preset, device)
    given = dict(loss=args.loss, steps=args.steps, lr=args.lr, restarts=args.restarts, init=args.init,
                 excerpts=args.excerpts)
    recipe = Engine.recipe(preset, **{k: v for k, v in given.items() if v is not None})
    sources = [rendering.FileSource(info) for info in infos]
    # Bad audio (NaN, silence) is reported before minutes go into loading the model.
    prepared = [prepare_input(src, str(path), recipe.excerpts) for src, path in zip(sources, inputs)]
    engine = Engine(checkpoint=args.clap_ckpt, tokenizer=args.tokenizer, device=device, precision=args.precision,
                    **({} if args.max_batch is None else {"max_batch": args.max_batch}))
    label = prompts[0] if len(prompts) == 1 else f"{len(prompts)} prompts"
    update, close = _progress(args.quiet, label)
    try:
        fx_chain, targets = engine.optimize(
            sources, [str(i) for i in inputs], prompts, args.chain, recipe, args.seed,
            DEFAULT_TEMPLATE if args.template is None else args.template,
            DEFAULT_ANCHOR if args.anchor is None else args.anchor, update, prepared,
        )
    finally:
        close()
    for target, (audio_path, params_path), (fmt, subtype) in zip(targets, plans, formats):
        info = infos[target.input]
        audio_path.parent.mkdir(parents=True, exist_ok=True)
        params_path.parent.mkdir(parents=True, exist_ok=True)
        gain = rendering.render_file(fx_chain, target.outcome.params, info, audio_path, fmt, subtype, engine.device)
        result = engine.result(fx_chain, target, recipe, preset, args.seed, None, sources[target.input],
                               str(info.path), gain)
        result.output_path = str(audio_path)
        result.save_report(params_path, overwrite=True)
        if not args.quiet:
            o = target.outcome
            print(f"\"{target.prompt}\"  <-  {info.path}")
            print(f"  wrote {audio_path}  (settings: {params_path})")
            print(f"  CLAP similarity {o.similarity_before:+.3f} -> {o.similarity_after:+.3f}   "
                  f"({o.loss} loss {o.loss_value:.4f}, {o.steps_run} steps, best at step {o.best_step}, "
                  f"output gain {gain:+.1f} dB)")
            print("\n".join(_format_settings(result)))
    if not args.quiet:
        print(f"done in {time.perf_counter() - started:.1f} s on {engine.device}")
    return EXIT_OK


def _check_device(name: str | None):
    """The torch device to run on: `name`, or the best available; a usage error if it is not there."""
    import torch

    from text2fx.clap import default_device

    if name is None:
        return default_device()
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[name]:
        raise UsageError(f"--device {name}: no such device on this machine (available: "
                         f"{', '.join(k for k, v in available.items() if v)})")
    return torch.device(name)


def run_render(argv: list[str]) -> int:
    args = _render_parser().parse_args(argv)
    inp, out = Path(args.input), Path(args.output)
    _check_output(out, [inp], args.overwrite)

    from text2fx import audio_io
    from text2fx import rendering
    from text2fx.engine import load_chain
    from text2fx.errors import InputError

    info = audio_io.probe(inp)
    try:
        fmt, subtype = audio_io.output_format(out, info, args.subtype)
    except InputError as e:
        raise UsageError(str(e)) from None
    _check_writable(out, info, fmt, subtype)
    device = _check_device(args.device)
    fx_chain, unit = load_chain(args.params, args.chain)
    gain = rendering.render_file(fx_chain.to(device), unit, info, out, fmt, subtype, device)
    if not args.quiet:
        print(f"wrote {out}  (chain {fx_chain.spec}, output gain {gain:+.1f} dB)")
    return EXIT_OK


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def entry() -> None:
    """The console script: `main` with SIGTERM/SIGHUP handled like Ctrl-C, so a closed terminal or a job
    manager stopping the command also leaves no temporary files behind."""
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _interrupt)
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "render":
            return run_render(argv[1:])
        return run_main(argv)
    except UsageError as e:
        print(f"text2fx: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("text2fx: interrupted; no partial output was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the one place that turns errors into a one-line message
        from text2fx.errors import Text2FXError

        torch = sys.modules.get("torch")
        if isinstance(e, Text2FXError):
            print(f"text2fx: error: {e}", file=sys.stderr)
        elif torch is not None and isinstance(e, getattr(torch, "OutOfMemoryError", ())):
            print("text2fx: error: out of device memory; optimizing needs less with a lower --max-batch (default 16), "
                  "--restarts or --excerpts, or run on --device cpu", file=sys.stderr)
        else:
            print(f"text2fx: internal error ({type(e).__name__}): {' '.join(str(e).split())}", file=sys.stderr)
            if os.environ.get("TEXT2FX_DEBUG"):
                raise
        return EXIT_RUNTIME


if __name__ == "__main__":
    entry()
