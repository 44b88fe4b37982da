"""The `text2fx` command.

    text2fx INPUT [INPUT ...] PROMPT [options]      optimize effects toward the words, write audio + settings
    text2fx render INPUT PARAMS.json -o OUT         re-apply saved settings
    text2fx plot PARAMS.json -o CURVES.png          draw saved settings (EQ curve, reverb decay, ...)
    text2fx export PARAMS.json --to FORMAT -o FILE  settings for other tools (eqapo, ir, pedalboard, sos)
    text2fx batch MANIFEST -o OUTDIR                every row of a manifest (see text2fx.batch)
    text2fx serve [--port N]                        keep the engine loaded; `text2fx ... --server` sends it jobs

Exit codes: 0 success; 2 usage errors (bad options, unknown effect, empty prompt, output path conflicts);
1 runtime errors (unreadable input, missing model files, ...); 130 interrupted. Errors are one line.

Heavy modules (torch, the models) are imported only after the command line is understood, so `--help`
and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from pathlib import Path

from text2fx import threads
from text2fx.errors import InputError, Text2FXError, UsageError
from text2fx.options import (
    DEFAULT_ANCHOR,
    DEFAULT_CHAIN,
    DEFAULT_TEMPLATE,
    PRESET_NAMES,
    EngineOptions,
    JobOptions,
    OutputOptions,
    add_model_file_arguments,
    check_text_side,
    chain_value,
)
from text2fx.report import BYPASS_NOTE, load_chain, read_settings, settings_at

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(f"{message} (see {self.prog} --help)")


KEEP_LENGTH_HELP = ("give the output the input's length (default: an effect with a tail, e.g. a reverb, makes "
                    "the output longer by that tail, until it has decayed by 60 dB; the start stays aligned "
                    "with the input either way)")


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
    p.add_argument("--chain", help="effects in order, e.g. eq | reverb | eq,reverb | "
                   "eq,compressor,reverb (default: eq,reverb, or the --from file's chain)")
    p.add_argument("--amount", type=float, default=1.0, metavar="A",
                   help="how much of the found effect to apply, -2 to 2 (default 1): 0 the input unchanged, 0.5 "
                   "half (gains and mixes halfway, frequencies and times kept), negative: EQ/gain inverted")
    p.add_argument("--from", dest="previous", metavar="PREVIOUS.json",
                   help="refine a previous result: start from its settings, and optimize toward the new words "
                   "relative to the sound it left (same chain, or a longer one with its effects in order)")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (one input, one prompt) or directory")
    p.add_argument("--params", metavar="OUT.json", help="where to write the settings (default: OUT with .json)")
    p.add_argument("--preset", default="auto", choices=PRESET_NAMES,
                   help="optimization recipe: default (300 steps, 4 restarts; for GPUs); paper (600 steps, "
                   "lr 0.01, random init, cosine: the paper's); fast (100 steps; for CPUs); random (random settings, "
                   "no optimization: the paper's control, for comparisons); auto (the default): fast on a CPU, "
                   "else default")
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
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default=None,  # None: float32 (or the server's)
                   help="CLAP audio branch precision; bfloat16 is faster on GPUs and on CPUs with bfloat16 "
                   "instructions (default: float32)")
    p.add_argument("--embedder", choices=["clap", "features"], default="clap",
                   help="what hears the audio: clap (default; words and audio) or features (acoustic features: "
                   "tonal balance, brightness, decay, crest factor; no model files, no words: match a reference "
                   "with --like REF.wav)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: the CPUs this process "
                   "may use, at most one per core; $TEXT2FX_THREADS=N or off for torch's own defaults)")
    add_model_file_arguments(p)
    p.add_argument("--subtype", help="output sample format, e.g. PCM_16, PCM_24, FLOAT (default: the input's)")
    p.add_argument("--keep-length", action="store_true", help=KEEP_LENGTH_HELP)
    p.add_argument("--html", nargs="?", const=True, metavar="PAGE.html",
                   help="also write a listening report page (players with A/B switch, spectrograms, the settings "
                   "drawn, the optimization, a map of CLAP's space); default OUT.html, or text2fx-report.html "
                   "for several results")
    p.add_argument("--avoid", action="append", metavar="TEXT", help="words the result should not sound like "
                   "(repeatable): the loss also pushes away from them; the report shows the similarity to each")
    p.add_argument("--avoid-weight", type=float, metavar="W", help="weight of --avoid's push against the prompt's "
                   "pull: loss += W * mean over texts of cos(audio, text) (default 0.5)")
    p.add_argument("--like", metavar="REF", help="a reference recording to sound like (any rate, channels): the "
                   "target is its audio embedding (its loudest 10 s windows, up to 8, averaged); the PROMPT is then "
                   "optional (a last positional that is an existing file is an input)")
    p.add_argument("--like-weight", type=float, metavar="W", help="with a prompt and --like: the reference's weight, "
                   "the prompt's is 1 - W (default 0.5)")
    p.add_argument("--candidates", type=int, metavar="K", help="write up to K distinct results (OUT.1.wav ... "
                   "OUT.K.wav, each with its report): the best restarts whose settings differ by at least "
                   "--candidate-distance; restarts default to 2K")
    p.add_argument("--candidate-distance", type=float, metavar="D", help="least RMS difference of two candidates' "
                   "settings in unit space (each range 0..1, frequencies log; default 0.1)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--server", action="store_true", help="send the job to a running `text2fx serve` (found through "
                   "its server file, $TEXT2FX_SERVER_FILE) instead of loading the model here; fails if none runs. "
                   "$TEXT2FX_SERVER=1 does the same, =auto runs here when no server answers")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    return p


def _plot_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="text2fx plot", description="Draw saved effect settings (no CLAP): the EQ's magnitude "
                "response, the reverb's decay per band and energy decay curve, compressor and distortion curves.")
    p.add_argument("params", metavar="PARAMS.json", help="a text2fx report or its 'chain' part")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", help="image file (.png, .svg or .pdf)")
    p.add_argument("--sample-rate", type=int, default=48000, help="rate the curves are computed at (default 48000)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing image")
    return p


def run_plot(argv: list[str]) -> int:
    args = _plot_parser().parse_args(argv)
    out = Path(args.output)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"output {out}: give an image name ending in .png, .svg or .pdf")
    from text2fx import audio_io, outputs
    from text2fx.options import sample_rate_value

    sample_rate = sample_rate_value(args.sample_rate)
    outputs.check_target(out, [Path(args.params)], args.overwrite)
    outputs.check_writable(out)
    settings = read_settings(args.params)  # a malformed file is reported before torch is imported
    from text2fx import plots

    fig = plots.settings_figure(load_chain(settings, source=args.params), sample_rate, title=Path(args.params).name)
    with audio_io.atomic_path(out) as tmp:
        plots.save_figure(fig, tmp, out.suffix.lower()[1:])
    print(f"wrote {out}")
    return EXIT_OK


def _render_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="text2fx render", description="Re-apply saved effect settings to an audio file (no CLAP).")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("params", metavar="PARAMS.json", help="a text2fx report or its 'chain' part")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--chain", help="refuse settings that are not for this chain spec")
    p.add_argument("--amount", type=float, metavar="A",
                   help="render this amount of the found settings, -2 to 2 (default: the settings as saved); "
                   "0 writes the input's samples unchanged")
    p.add_argument("--subtype", help="output sample format (default: the input's)")
    p.add_argument("--keep-length", action="store_true", help=KEEP_LENGTH_HELP)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def _progress(quiet: bool, label: str):
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = None

    def update(step: int, steps: int, loss: float, best: float) -> None:
        nonlocal bar
        if bar is None:  # the engine reports step 0 as optimization starts: the bar's clock starts there
            bar = tqdm(total=steps, desc=label, unit="step", dynamic_ncols=True, file=sys.stderr, leave=False)
        bar.update(step - bar.n)
        if math.isfinite(best):
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


def _options(args, prompts: list[str]) -> tuple[JobOptions, EngineOptions]:
    changes = dict(loss=args.loss, steps=args.steps, lr=args.lr, restarts=args.restarts, init=args.init,
                   excerpts=args.excerpts)
    chain = DEFAULT_CHAIN if args.chain is None and args.previous is None else args.chain
    job = JobOptions(prompts=prompts, chain=chain, preset=args.preset, seed=args.seed,
                     recipe_changes={k: v for k, v in changes.items() if v is not None},
                     template=DEFAULT_TEMPLATE if args.template is None else args.template,
                     anchor=DEFAULT_ANCHOR if args.anchor is None else args.anchor,
                     keep_length=args.keep_length, amount=args.amount, previous=args.previous,
                     avoid=args.avoid or (), avoid_weight=args.avoid_weight, like=args.like,
                     like_weight=args.like_weight, candidate_distance=args.candidate_distance,
                     **({} if args.candidates is None else {"candidates": args.candidates}))
    engine = EngineOptions(checkpoint=args.clap_ckpt, tokenizer=args.tokenizer, device=args.device,
                           precision=args.precision, embedder=args.embedder,
                           **({} if args.max_batch is None else {"max_batch": args.max_batch}))
    check_text_side(job, engine)
    return job, engine


def run_main(argv: list[str]) -> int:
    args = _main_parser().parse_args(argv)
    if args.prompts:
        inputs, prompts = args.inputs, args.prompts
    elif args.like is not None and (len(args.inputs) == 1 or Path(args.inputs[-1]).is_file()):
        inputs, prompts = args.inputs, []  # --like alone: the reference is the whole target
    else:
        if len(args.inputs) < 2:
            raise UsageError("give an INPUT and a PROMPT, e.g. text2fx song.wav \"warm and bright\"")
        inputs, prompts = args.inputs[:-1], args.inputs[-1:]
    threads.configure(args.threads)  # the thread count, before torch is imported (main set the wait policy)
    from text2fx import pipeline

    # Every option and output path is checked before torch is imported or the model loads.
    options, engine_options = _options(args, prompts)
    output = OutputOptions(output=args.output, params=args.params, subtype=args.subtype, overwrite=args.overwrite,
                           html=args.html)
    job = pipeline.file_job(inputs, options, output)
    if engine_options.embedder != "clap" and args.server:
        raise UsageError("--server sends jobs to the server's CLAP model; --embedder features runs here: drop --server")
    if engine_options.embedder == "clap" and (args.server or os.environ.get("TEXT2FX_SERVER")):
        from text2fx.server.cli import run_via_server

        code = run_via_server(args, job)  # None: no server asked for, or TEXT2FX_SERVER=auto found none
        if code is not None:
            return code

    from text2fx import devices
    from text2fx.recipe import resolve_preset

    started = time.perf_counter()
    device = devices.resolve(engine_options.device)
    preset = resolve_preset(options.preset, device)
    # Bad audio (NaN, silence) and prompts too long for the text encoder are reported before the model loads.
    job.prepare(options.recipe(preset).excerpts)
    from text2fx.engine import Engine

    if engine_options.embedder == "features":  # no model files, no text
        engine = Engine("features", device=device, max_batch=engine_options.max_batch, threads=args.threads)
    else:
        from text2fx.clap import check_text_length
        from text2fx.clap.files import resolve_model_files

        files = resolve_model_files(engine_options.checkpoint, engine_options.tokenizer)
        check_text_length(options.texts() + options.anchors() + options.avoid_texts(), files.tokenizer_dir)
        engine = Engine(checkpoint=files.checkpoint, tokenizer=files.tokenizer_dir, device=device,
                        precision=engine_options.precision, max_batch=engine_options.max_batch, threads=args.threads)
    label = prompts[0] if len(prompts) == 1 else f"{len(prompts)} prompts" if prompts else f"like {job.like.name}"
    update, close = _progress(args.quiet, label)
    try:
        results = engine.run(job, update)
    finally:
        close()
    if not args.quiet:
        plans = {plan.audio: plan for plan in job.plans}
        for result in results:
            for r in result.candidates or [result]:
                _print_result(r, plans[Path(r.output_path)])
            if result.candidates is not None and len(result.candidates) < options.candidates:
                print(f"  only {len(result.candidates)} of the {options.candidates} candidates asked differ by at "
                      f"least {options.candidate_distance_value():g} (RMS, unit space) and beat the input; "
                      f"wrote {len(result.candidates)}")
        if job.html is not None:
            print(f"report page: {job.html}")
        print(f"done in {time.perf_counter() - started:.1f} s on {engine.device}")
    return EXIT_OK


def _print_result(result, plan) -> None:
    o = result.optimization
    goal = f"\"{result.prompt}\"" if result.prompt is not None else f"like {result.like['path']}"
    print(f"{goal}  <-  {result.input['path']}")
    print(f"  wrote {plan.audio}  (settings: {plan.params})")
    print(f"  CLAP similarity {result.similarity_before:+.3f} -> {result.similarity_after:+.3f}   "
          f"({o['loss']} loss {o['loss_value']:.4f}, {o['steps_run']} steps, best at step {o['best_step']}, "
          f"output gain {result.output_gain_db:+.1f} dB)")
    print(f"  length: {_length(result.output_frames, result.tail_frames, result.sample_rate, result.keep_length)}")
    for line in _shaping_lines(result) + _target_lines(result):
        print(f"  {line}")
    if result.bypassed and len(result.turns or []) < 2:  # a refinement's bypass keeps the previous settings
        print(f"  {BYPASS_NOTE}")
    print("\n".join(_format_settings(result)))


def _shaping_lines(result) -> list[str]:
    """The amount applied (and what it clamped) and the turn, when they are not the plain defaults."""
    lines = []
    amount = result.amount or {}
    if amount.get("value", 1.0) != 1.0:
        clamped = ", ".join(f"{c['type']} {c['param']}" for c in amount.get("clamped", []))
        lines.append(f"amount {amount['value']:g} of the found settings"
                     + (f" (clamped to their range: {clamped})" if clamped else ""))
    turns = result.turns or []
    if len(turns) > 1:
        lines.append(f"turn {len(turns)}: refined from the previous settings"
                     + (" (kept them: nothing found sounded closer to the words)" if result.bypassed else ""))
    return lines


def _target_lines(result) -> list[str]:
    """The candidate's rank, and the similarity to the reference and to each avoided text (--like, --avoid)."""
    lines = []
    if result.choice is not None:
        c = result.choice
        apart = f", {min(c['distances']):.2f} from the nearest other (RMS, unit space)" if c["distances"] else ""
        lines.append(f"candidate {c['rank']} of {c['of']} (restart {c['restart']}{apart})")
    if result.like is not None and result.like["similarity"] is not None:
        sim = result.like["similarity"]
        weight = f", weight {result.like['weight']:g}" if result.prompt is not None else ""
        lines.append(f"similarity to the reference {sim['before']:+.3f} -> {sim['after']:+.3f}{weight}")
    if result.avoid is not None:
        for a in result.avoid["texts"]:
            if a["similarity"] is not None:
                lines.append(f"avoid \"{a['avoid']}\": similarity {a['similarity']['before']:+.3f} -> "
                             f"{a['similarity']['after']:+.3f}")
    return lines


def _length(frames: int, tail: int, sample_rate: int, keep_length: bool) -> str:
    """How long an output is, and why: "5.00 s (the input's: --keep-length)", "7.31 s (input + 2.31 s tail)"."""
    text = f"{frames / sample_rate:.2f} s"
    if keep_length:
        return f"{text} (the input's: --keep-length)"
    return f"{text} (input + {tail / sample_rate:.2f} s tail)" if tail else f"{text} (the input's: no tail)"


def run_render(argv: list[str]) -> int:
    args = _render_parser().parse_args(argv)
    from text2fx import audio_io, outputs

    inp, out = Path(args.input), Path(args.output)
    if args.chain is not None:
        chain_value(args.chain)
    outputs.check_target(out, [inp], args.overwrite)
    from text2fx.amount import saved

    # a malformed file or amount is reported before torch is imported
    settings, amount, clamped = saved(args.params, args.amount)
    info = audio_io.probe(inp)
    try:
        fmt, subtype = audio_io.output_format(out, info, args.subtype)
    except InputError as e:
        raise UsageError(str(e)) from None
    outputs.check_writable(out, info, fmt, subtype)

    from text2fx import devices, rendering

    device = devices.resolve(args.device)
    chain = load_chain(settings, args.chain, source=args.params)
    unit = settings_at(chain, info.sample_rate)
    # amount 0 is the input's own samples: no effect, no tail, no level policy
    render_chain = None if amount == 0 else chain.to(device)
    tail = rendering.tail_frames(render_chain, unit, info.sample_rate, args.keep_length)
    gain = rendering.render_file(render_chain, unit, info, out, fmt, subtype, device,
                                 keep_length=args.keep_length, level=amount != 0)
    if not args.quiet:
        length = _length(info.frames + tail, tail, info.sample_rate, args.keep_length)
        shaped = f", amount {amount:g}" if amount != 1 else ""
        shaped += f", clamped: {', '.join(c['param'] for c in clamped)}" if clamped else ""
        print(f"wrote {out}  (chain {chain.spec}{shaped}, output gain {gain:+.1f} dB, length {length})")
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
        # Before any subcommand imports torch: OpenMP reads its wait policy once, when torch loads it.
        threads.configure()
        if argv and argv[0] == "render":
            return run_render(argv[1:])
        if argv and argv[0] == "plot":
            return run_plot(argv[1:])
        if argv and argv[0] == "export":
            from text2fx.export.cli import run as run_export

            return run_export(argv[1:])
        if argv and argv[0] == "batch":
            from text2fx.batch.cli import run as run_batch

            return run_batch(argv[1:])
        if argv and argv[0] == "serve":
            from text2fx.server.cli import run as run_serve

            return run_serve(argv[1:])
        return run_main(argv)
    except UsageError as e:
        print(f"text2fx: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("text2fx: interrupted; no partial output was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the one place that turns errors into a one-line message
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
