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
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same result")
    p.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: best available")
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
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (s[:limit].rstrip("-") or "prompt")


def _check_output(out: Path, inputs: list[Path], overwrite: bool) -> None:
    for i in inputs:
        if out.exists() and i.exists() and out.resolve() == i.resolve() or out.absolute() == i.absolute():
            raise UsageError(f"output {out} is the input file; choose another output path")
    if out.exists() and not overwrite:
        raise UsageError(f"output {out} already exists (use --overwrite to replace it)")
    if out.exists() and out.is_dir():
        raise UsageError(f"output {out} is a directory")


def _plan_outputs(args, inputs: list[Path], prompts: list[str]) -> list[tuple[Path, Path]]:
    """(audio path, params path) for each (input, prompt), input-major."""
    plans = []
    single = len(inputs) == 1 and len(prompts) == 1
    out_dir = None
    if args.output and not single:
        out_dir = Path(args.output)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"-o {out_dir}: with several inputs or prompts, -o must be a directory")
    if args.params and not single:
        raise UsageError("--params names one file; with several inputs or prompts the settings are written "
                         "beside each output")
    for i in inputs:
        for p in prompts:
            if single and args.output:
                audio = Path(args.output)
                if audio.is_dir():
                    audio = audio / f"{i.stem}.{slug(p)}{i.suffix}"
            else:
                audio = (out_dir or i.parent) / f"{i.stem}.{slug(p)}{i.suffix}"
            params = Path(args.params) if args.params else audio.with_suffix(".json")
            plans.append((audio, params))
    seen = set()
    for audio, params in plans:
        for path in (audio, params):
            if path in seen:
                raise UsageError(f"two outputs would be written to {path}; give inputs distinct names or use -o")
            seen.add(path)
            _check_output(path, inputs, args.overwrite)
    if plans[0][0].suffix.lower() == ".json":
        raise UsageError(f"output {plans[0][0]} looks like a params file; give an audio file name")
    return plans


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
    for name, value in (("steps", args.steps), ("restarts", args.restarts), ("excerpts", args.excerpts)):
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be at least 1")
    if args.lr is not None and not args.lr > 0:
        raise UsageError("--lr must be positive")
    inputs = [Path(i) for i in inputs]
    plans = _plan_outputs(args, inputs, prompts)

    from text2fx import audio_io
    from text2fx.errors import InputError

    import fx

    try:
        fx.Chain.from_spec(args.chain)
    except ValueError as e:
        raise UsageError(str(e)) from None
    infos = [audio_io.probe(i) for i in inputs]
    formats = []
    for (audio_path, _), info in zip(plans, [i for i in infos for _ in prompts]):
        try:
            formats.append(audio_io.output_format(audio_path, info, args.subtype))
        except InputError as e:
            raise UsageError(str(e)) from None

    from text2fx import render as rendering
    from text2fx.engine import DEFAULT_ANCHOR, DEFAULT_TEMPLATE, Engine, prepare_input

    from text2fx.clap import default_device
    from text2fx.optimize import resolve_preset

    started = time.perf_counter()
    preset = resolve_preset(args.preset, args.device or default_device())
    recipe = Engine.recipe(preset, loss=args.loss, steps=args.steps, lr=args.lr, restarts=args.restarts,
                           init=args.init, excerpts=args.excerpts)
    sources = [rendering.FileSource(info) for info in infos]
    # Bad audio (NaN, silence) is reported before minutes go into loading the model.
    prepared = [prepare_input(src, str(path), recipe.excerpts) for src, path in zip(sources, inputs)]
    engine = Engine(checkpoint=args.clap_ckpt, tokenizer=args.tokenizer, device=args.device)
    label = prompts[0] if len(prompts) == 1 else f"{len(prompts)} prompts"
    update, close = _progress(args.quiet, label)
    try:
        fx_chain, targets = engine.optimize(
            sources, [str(i) for i in inputs], prompts, args.chain, recipe, args.seed,
            args.template or DEFAULT_TEMPLATE, args.anchor or DEFAULT_ANCHOR, update, prepared,
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


def run_render(argv: list[str]) -> int:
    args = _render_parser().parse_args(argv)
    inp, out = Path(args.input), Path(args.output)
    _check_output(out, [inp], args.overwrite)

    from text2fx import audio_io
    from text2fx import render as rendering
    from text2fx.engine import load_chain
    from text2fx.errors import InputError

    info = audio_io.probe(inp)
    try:
        fmt, subtype = audio_io.output_format(out, info, args.subtype)
    except InputError as e:
        raise UsageError(str(e)) from None
    fx_chain, unit = load_chain(args.params, args.chain)
    out.parent.mkdir(parents=True, exist_ok=True)
    gain = rendering.render_file(fx_chain.to(args.device), unit, info, out, fmt, subtype, args.device)
    if not args.quiet:
        print(f"wrote {out}  (chain {fx_chain.spec}, output gain {gain:+.1f} dB)")
    return EXIT_OK


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

        if isinstance(e, Text2FXError):
            print(f"text2fx: error: {e}", file=sys.stderr)
        else:
            print(f"text2fx: internal error ({type(e).__name__}): {' '.join(str(e).split())}", file=sys.stderr)
            if os.environ.get("TEXT2FX_DEBUG"):
                raise
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
