"""`text2fx serve` (start a server) and `text2fx --server` (send the command's job to one).

    text2fx serve [--port 0] [--queue 8] [--device cuda] ...     load the engine once, answer jobs over HTTP
    text2fx in.wav "warm" --server                              the same job, run by that server
    TEXT2FX_SERVER=1 text2fx in.wav "warm"                      the same, chosen by the environment

The server writes its URL, token and process id to the server file (user-only, removed when it stops); the
command and `text2fx.client.Client` read it there. Exit codes of `text2fx serve`: 0 stopped by Ctrl-C or
SIGTERM (the running job cancelled, nothing partial written); 1 could not start (port taken, model files
missing, a server already running with that server file); 2 usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from text2fx.client import Client, ServerError, ServerUnavailable, default_server_file, read_server_file
from text2fx.errors import Text2FXError, UsageError
from text2fx.options import DEFAULT_CHAIN, PRECISIONS, EngineOptions, add_model_file_arguments

SERVER_ENV = "TEXT2FX_SERVER"
TOKEN_ENV = "TEXT2FX_SERVER_TOKEN"
DEFAULT_QUEUE = 8
DEFAULT_MAX_REQUEST_MB = 256.0
_OFF = ("", "0", "no", "off", "false")
_ON = ("1", "yes", "on", "true")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UsageError(f"{message} (see {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="text2fx serve",
        description="Keep the engine loaded and answer text2fx jobs over HTTP: `text2fx ... --server`, "
        "text2fx.client.Client (standard library only, for a DAW's Python), or any HTTP client with the token. "
        "Jobs run one at a time, in order; the URL and token are written to a user-only server file.",
        epilog="Stop it with Ctrl-C or SIGTERM: the running job is cancelled (nothing partial is written), "
        "waiting jobs are refused, and the server file is removed.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; anything else lets other machines reach the server, with the token)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free one, written to the server file)")
    p.add_argument("--token-file", metavar="PATH", help="server file for the URL, token and pid (default: "
                   "$TEXT2FX_SERVER_FILE, else $XDG_RUNTIME_DIR/text2fx/server.json, else "
                   "~/.cache/text2fx/server.json)")
    p.add_argument("--queue", type=int, default=DEFAULT_QUEUE, metavar="N",
                   help=f"jobs that may wait while one runs; more are refused, 503 (default {DEFAULT_QUEUE})")
    p.add_argument("--max-request-mb", type=float, default=DEFAULT_MAX_REQUEST_MB, metavar="MB",
                   help=f"largest request taken, audio included (default {DEFAULT_MAX_REQUEST_MB:g})")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="CLAP audio branch precision "
                   "(default float32)")
    p.add_argument("--max-batch", type=int, metavar="N", help="most clips optimized at once (default 16; a job "
                   "may ask for another)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: the CPUs this process "
                   "may use; fewer leave cores to a DAW playing beside it)")
    add_model_file_arguments(p)
    p.add_argument("--no-warmup", action="store_true", help="skip the 1-step job run at start that pays the "
                   "first job's one-time costs")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per request")
    return p


# -- the server file ---------------------------------------------------------------------------------------------

def write_server_file(path: Path, info: dict) -> None:
    """Write `info` to `path` readable by this user only (0600, folder 0700 when created), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with _quiet():
            os.unlink(tmp)
        raise


def remove_server_file(path: Path, token: str) -> None:
    """Remove the server file if it is still this server's (another server may have replaced it)."""
    with _quiet():
        if json.loads(path.read_text(encoding="utf-8")).get("token") == token:
            path.unlink()


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb) -> bool:
        return kind is not None and issubclass(kind, (OSError, ValueError))


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_server(path: Path) -> dict | None:
    """The server file's contents when a server answers there (a stale file, left by a killed server, is not)."""
    try:
        info = read_server_file(path)
    except ServerUnavailable:
        return None
    if info.get("pid") == os.getpid() or not _pid_alive(info.get("pid")):
        return None
    try:
        Client(info["url"], info["token"], server_file=path, timeout=5).status()
    except (ServerError, OSError):
        return None
    return info


# -- text2fx serve -----------------------------------------------------------------------------------------------

def run(argv: list[str]) -> int:
    """`text2fx serve`: check the options, listen, load the engine, answer until Ctrl-C / SIGTERM."""
    from text2fx.checks import integer
    from text2fx.errors import InputError
    from text2fx.server.app import Server, is_loopback

    from text2fx import threads

    args = parser().parse_args(argv)
    threads.configure(args.threads)  # before torch is imported
    engine_options = EngineOptions(checkpoint=args.clap_ckpt, tokenizer=args.tokenizer, device=args.device,
                                   precision=args.precision,
                                   **({} if args.max_batch is None else {"max_batch": args.max_batch}))
    try:
        queue_size = integer(args.queue, "--queue", 0)
    except InputError as e:
        raise UsageError(str(e)) from None
    if not (math.isfinite(args.max_request_mb) and args.max_request_mb > 0):
        raise UsageError(f"--max-request-mb must be a positive number of MB, got {args.max_request_mb}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {args.port}")
    server_file = Path(args.token_file).expanduser().absolute() if args.token_file else default_server_file()
    other = _live_server(server_file)
    if other is not None:
        raise Text2FXError(f"a text2fx server is already running at {other['url']} (pid {other.get('pid')}, server "
                           f"file {server_file}); stop it, or give this one another --token-file")
    if not is_loopback(args.host):
        print(f"text2fx serve: WARNING: listening on {args.host}, not only this machine: anyone who can reach "
              "this port and has the token can make this server read and write files as this user; the "
              "connection is not encrypted", file=sys.stderr, flush=True)

    log = None if args.quiet else sys.stderr
    token = secrets.token_urlsafe(32)
    try:  # listen before the model loads, so that a taken port is reported at once
        server = Server((args.host, args.port), None, token=token, queue_size=queue_size,
                        max_request_bytes=int(args.max_request_mb * 2**20), model={}, log=log)
    except OSError as e:
        raise Text2FXError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    try:
        engine, model = _load(engine_options, args.threads)
        server.engine, server.model = engine, model
        if not args.no_warmup:
            _warm_up(engine)
        return _serve(server, server_file, token)
    finally:
        server.server_close()


def _load(options: EngineOptions, threads: int | None):
    from text2fx import devices
    from text2fx.clap.files import resolve_model_files
    from text2fx.engine import Engine

    device = devices.resolve(options.device)
    files = resolve_model_files(options.checkpoint, options.tokenizer)
    engine = Engine(checkpoint=files.checkpoint, tokenizer=files.tokenizer_dir, device=device,
                    precision=options.precision, max_batch=options.max_batch, cuda_graphs=options.cuda_graphs,
                    threads=threads)
    precision = getattr(engine.embedder, "precision", options.precision or "float32")
    return engine, {"checkpoint": str(files.checkpoint), "tokenizer": str(files.tokenizer_dir), "precision": precision}


def _warm_up(engine) -> None:
    """One 1-step job on 1 s of noise through the default chain, so that the first real job does not pay
    one-time costs (lazy imports, first kernel runs, allocator growth)."""
    import numpy as np

    noise = np.random.default_rng(0).standard_normal((1, 48000)).astype(np.float32) * 0.1
    engine.apply(noise, 48000, "warm", chain=DEFAULT_CHAIN, steps=1, restarts=1, excerpts=1)


def _serve(server, server_file: Path, token: str) -> int:
    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():  # a second Ctrl-C: stop now (writes are atomic, so still nothing partial)
            raise KeyboardInterrupt
        stop.set()

    names = [n for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {n: signal.signal(getattr(signal, n), on_signal) for n in names}
    worker = threading.Thread(target=server.work, name="text2fx-engine", daemon=True)
    http = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="text2fx-http",
                            daemon=True)
    try:
        worker.start()
        http.start()
        write_server_file(server_file, {
            "url": server.url, "token": token, "pid": os.getpid(), "device": str(server.engine.device),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        print(f"text2fx serve: listening on {server.url} ({server.engine.device}); server file {server_file}; "
              "Ctrl-C stops", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            if not worker.is_alive() or not http.is_alive():
                raise Text2FXError("the server's worker stopped unexpectedly")
        print("text2fx serve: stopping (the running job is cancelled, waiting jobs refused)", file=sys.stderr,
              flush=True)
        server.stop()
        worker.join()
        server.shutdown()  # takes no new connection
        server.wait_answered(5.0)  # the clients of cancelled and refused jobs get their answer
    finally:
        server.stop()
        remove_server_file(server_file, token)
        for n, handler in previous.items():
            signal.signal(getattr(signal, n), handler)
    print("text2fx serve: stopped", file=sys.stderr, flush=True)
    return 0


# -- text2fx --server --------------------------------------------------------------------------------------------

def server_target(flag: bool) -> tuple[str | None, Path, bool] | None:
    """Where the command's job goes: None (run here), else (URL or None for the server file's, the server file,
    whether to run here when no server answers). `--server` and TEXT2FX_SERVER=1|URL|PATH fail when none
    answers; TEXT2FX_SERVER=auto runs the job here instead."""
    env = os.environ.get(SERVER_ENV, "").strip()
    if not flag and env.lower() in _OFF:
        return None
    if env.startswith("http://"):
        return env, default_server_file(), False
    if env and env.lower() not in _ON + _OFF + ("auto",):
        return None, Path(env).expanduser(), False
    return None, default_server_file(), not flag and env.lower() == "auto"


def run_via_server(args, job) -> int | None:
    """Send the command's checked file job to a running server and print what a local run prints. Returns the
    exit code, or None when the job is to run here (TEXT2FX_SERVER=auto and no server answers)."""
    from text2fx import cli

    target = server_target(args.server)
    if target is None:
        return None
    url, server_file, fallback = target
    request = _request(args, job)
    prompts = job.options.prompts
    label = prompts[0] if len(prompts) == 1 else f"{len(prompts)} prompts" if prompts else "job"
    update, close = cli._progress(args.quiet, label)
    started = time.perf_counter()
    try:
        client = Client(url, os.environ.get(TOKEN_ENV) or None, server_file=server_file)
        answer = client.submit(request, progress=None if args.quiet else update)
    except ServerUnavailable as e:
        if fallback:
            print(f"text2fx: {e}; running here", file=sys.stderr)
            return None
        raise Text2FXError(str(e)) from None
    except ServerError as e:
        raise (UsageError if e.kind == "usage" else Text2FXError)(str(e)) from None
    finally:
        close()
    if not args.quiet:
        plans = {os.path.abspath(plan.audio): plan for plan in job.plans}
        inputs = {os.path.abspath(source.path): str(source.path) for source in job.sources}
        for entry in answer["results"]:  # printed with the paths as given, as a local run prints them
            report = entry["report"]
            cli._print_result(_ReportView(report, inputs[report["input"]["path"]]), plans[entry["audio_path"]])
        if job.html is not None:
            print(f"report page: {job.html}")
        print(f"done in {time.perf_counter() - started:.1f} s on {answer['device']} (server {client.url})")
    return cli.EXIT_OK


def _request(args, job) -> dict:
    """The request for a command's job: its checked options, paths made absolute (the server has its own
    working folder), and the engine settings given on the command line (the server refuses other ones)."""
    options = job.options
    absolute = lambda p: None if p is None else os.path.abspath(p) + (os.sep if str(p).endswith(("/", os.sep)) else "")  # noqa: E731
    request = {"inputs": [os.path.abspath(s.path) for s in job.sources], **options.recipe_changes}
    for f in dataclasses.fields(options):
        if f.name != "recipe_changes":
            request[f.name] = _wire(f.name, getattr(options, f.name))
    request.update(output=absolute(args.output), params=absolute(args.params), subtype=args.subtype,
                   overwrite=args.overwrite, html=args.html if args.html in (None, True) else absolute(args.html))
    engine = {"embedder": getattr(args, "embedder", None), "device": args.device, "precision": args.precision,
              "max_batch": args.max_batch,
              "checkpoint": absolute(args.clap_ckpt), "tokenizer": absolute(args.tokenizer)}
    return {**request, **{k: v for k, v in engine.items() if v is not None}}


def _wire(name: str, value):
    """A checked option as JSON: plain values as they are; settings read from a file (e.g. the previous turn's)
    as that file's absolute path, which the server reads and checks again."""
    from text2fx.server.protocol import JOB_PATH_FIELDS

    if name in JOB_PATH_FIELDS and isinstance(value, (str, Path)):
        return os.path.abspath(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, (str, bool, int, float)) for v in value):
        return list(value)
    source = getattr(value, "source", None)
    if isinstance(source, str) and os.path.isfile(source):
        return os.path.abspath(source)
    raise UsageError(f"{name}: cannot be sent to a server; run without --server")


class _ReportView:
    """A `Result` as `text2fx.cli._print_result` reads it, from its JSON report: the report's keys under the
    `Result`'s attribute names (any other attribute is the report's key of that name, or None)."""

    _KEYS = {"params": ("chain",), "similarity_before": ("similarity", "before"),
             "similarity_after": ("similarity", "after"), "output_gain_db": ("output", "gain_db"),
             "output_frames": ("output", "frames"), "tail_frames": ("output", "tail_frames"),
             "keep_length": ("output", "keep_length"), "output_path": ("output", "path"),
             "sample_rate": ("input", "sample_rate"), "choice": ("candidate",)}

    def __init__(self, report: dict, input_path: str):
        self._report = {**report, "input": {**report["input"], "path": input_path}}

    def __getattr__(self, name: str):
        value = self._report
        for key in self._KEYS.get(name, (name,)):
            value = value.get(key) if isinstance(value, dict) else None
        return value
