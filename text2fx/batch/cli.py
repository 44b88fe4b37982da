"""`text2fx batch MANIFEST -o OUTDIR`: every row of a manifest, resumable, on local workers or a Ray cluster.

Exit codes: 0 every row done (or done by an earlier run); 1 some row failed (the summary says which and why)
or a runtime error; 2 a usage error (bad option, unusable manifest or output folder); 130 interrupted.
"""

from __future__ import annotations

import argparse
import time

from text2fx.batch.manifest import JOB_COLUMNS, RECIPE_COLUMNS
from text2fx.errors import UsageError
from text2fx.options import PRESET_NAMES, EngineOptions, JobOptions, add_model_file_arguments

EXIT_OK, EXIT_FAILED_ROWS = 0, 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UsageError(f"{message} (see {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="text2fx batch",
        description="Process every row of a manifest (CSV with a header, or JSONL): columns input, prompt and "
        "optionally chain, preset, seed, loss, steps, lr, restarts, init, excerpts, template, anchor, subtype, "
        "keep_length. "
        "Empty cells take the options below. Writes INPUTSTEM.PROMPT-SLUG.HASH.EXT and .json per row in OUTDIR "
        "and a summary table; a re-run skips rows whose output and report match their settings.",
        epilog="Relative input paths are relative to the manifest's folder. With --ray, inputs, OUTDIR and the "
        "model files must be reachable at the same paths on every node.",
    )
    p.add_argument("manifest", metavar="MANIFEST", help="a .csv (with a header) or .jsonl file, one row per item")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for outputs, reports and the summary")
    p.add_argument("-p", "--prompt", metavar="TEXT", help="prompt for rows without one")
    p.add_argument("--chain", help="effects for rows without a chain (default: eq,reverb)")
    p.add_argument("--preset", choices=PRESET_NAMES, help="recipe for rows without one (default: auto)")
    p.add_argument("--loss", choices=["cosine", "directional", "best"])
    p.add_argument("--anchor", metavar="TEXT")
    p.add_argument("--template", metavar="TEXT")
    p.add_argument("--steps", type=int, metavar="N")
    p.add_argument("--lr", type=float)
    p.add_argument("--restarts", type=int, metavar="K")
    p.add_argument("--init", choices=["random", "neutral"])
    p.add_argument("--excerpts", type=int, metavar="N")
    p.add_argument("--seed", type=int, help="seed for rows without one (default 0)")
    p.add_argument("--subtype", help="output sample format for rows without one (default: the input's)")
    p.add_argument("--keep-length", action="store_true", default=None,
                   help="give outputs their input's length, for rows without a keep_length (default: an effect "
                   "with a tail, e.g. a reverb, makes the output longer by that tail)")
    p.add_argument("--max-batch", type=int, metavar="N", help="most clips optimized at once per worker (default 16); "
                   "rows with the same options share a batch up to this")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local worker processes, each with its own engine (one per GPU when there are several); "
                   "with --ray, the number of Ray actors (default 1)")
    p.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster: auto, HOST:PORT, ray://HOST:PORT, or "
                   "local (a new instance on this machine); needs pip install 'text2fx[ray]'")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads per worker (default: cores / workers; 1 per "
                   "Ray CPU actor, which requests that many CPUs)")
    p.add_argument("--summary", metavar="PATH", help="summary table, .csv or .jsonl (default: OUTDIR/summary.csv)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    add_model_file_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary line")
    return p


def defaults_from(args) -> dict:
    """The manifest defaults the command line gives (only those given), checked as one row would be."""
    names = ("prompt", "chain", "preset", "loss", "anchor", "template", "steps", "lr", "restarts", "init",
             "excerpts", "seed", "subtype", "keep_length")
    defaults = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    changes = {k: defaults[k] for k in RECIPE_COLUMNS if k in defaults}
    JobOptions(prompts=defaults.get("prompt", "x"), recipe_changes=changes,
               **{k: defaults[k] for k in JOB_COLUMNS if k in defaults})
    return defaults


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    defaults = defaults_from(args)
    engine_options = EngineOptions(checkpoint=args.clap_ckpt, tokenizer=args.tokenizer, device=args.device,
                                   precision=args.precision,
                                   **({} if args.max_batch is None else {"max_batch": args.max_batch}))
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")

    from text2fx.batch.runner import run_batch

    started = time.perf_counter()
    outcome = run_batch(args.manifest, args.output, defaults, engine_options, workers=args.workers or 1,
                        ray=args.ray, threads=args.threads, summary_path=args.summary, progress=not args.quiet)
    counts = {s: outcome.count(s) for s in ("done", "skipped", "failed")}
    if not args.quiet:
        print(f"batch: {counts['done']} done, {counts['skipped']} skipped (done before), {counts['failed']} failed, "
              f"of {len(outcome.entries)} rows in {time.perf_counter() - started:.1f} s; summary: {outcome.summary_path}")
    return EXIT_FAILED_ROWS if counts["failed"] else EXIT_OK
