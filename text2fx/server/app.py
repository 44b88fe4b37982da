"""The HTTP side of `text2fx serve`: requests in, one warm engine working through a bounded queue.

Threads: `ThreadingHTTPServer` gives each connection a thread that checks the request (client address,
token, size, JSON, options, input paths: everything that needs no model) and queues the job; one worker
thread owns the engine and runs the queued jobs one at a time (each job is one pipeline run, its inputs and
prompts batched as the command batches them). The connection's thread waits for its job, watching the socket:
a client that goes away has its job dropped from the queue, or cancelled at the running job's next progress
report (files are written atomically, so nothing partial is left), and the server goes on.
"""

from __future__ import annotations

import collections
import copy
import hmac
import ipaddress
import json
import math
import os
import queue
import select
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from text2fx.client import STREAM_TYPE
from text2fx.errors import InputError, Text2FXError, UsageError
from text2fx.server import protocol

OOM_MESSAGE = ("out of device memory; optimizing needs less with a lower max_batch (default 16), restarts or "
               "excerpts, or a server on --device cpu")


class JobCancelled(BaseException):
    """Raised from the progress callback to stop a running job (a BaseException, so that no `except Exception`
    on the way treats it as a failure to recover from)."""


def is_loopback(host: str) -> bool:
    """Whether an address (or "localhost") is on this machine's loopback interface (IPv4-mapped IPv6 too)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class Failure(Exception):
    """A refusal or a failed job: HTTP status, kind (see `text2fx.client.ServerError`) and one line."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, " ".join(str(message).split())


def failure(e: BaseException) -> Failure:
    """An exception from checking or running a job as the answer's status, kind and one line (the command's)."""
    if isinstance(e, Failure):
        return e
    if isinstance(e, UsageError):
        return Failure(400, "usage", str(e))
    if isinstance(e, InputError):
        return Failure(400, "input", str(e))
    if isinstance(e, Text2FXError):
        return Failure(500, "runtime", str(e))
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(e, getattr(torch, "OutOfMemoryError", ())):
        return Failure(500, "runtime", OOM_MESSAGE)
    return Failure(500, "internal", f"internal error ({type(e).__name__}): {e}")


class Work:
    """One queued job, between the connection's thread and the worker."""

    def __init__(self, request: protocol.Request):
        self.request = request
        self.cancelled = threading.Event()  # the client went away
        self.finished = threading.Event()
        self.events: queue.SimpleQueue = queue.SimpleQueue()  # progress, for a streaming answer
        self.answer: dict | None = None
        self.failure: Failure | None = None
        self.queued_at = time.monotonic()

    def finish(self, answer: dict | None = None, fail: Failure | None = None) -> None:
        self.answer, self.failure = answer, fail
        self.request.cleanup()
        self.finished.set()


class Server(ThreadingHTTPServer):
    """The HTTP server with its job queue; `work()` is the engine's thread.

    Args:
        address: (host, port); port 0 picks a free one (`url` says which).
        engine: a loaded `text2fx.engine.Engine`, used by the worker thread only.
        token: what every request must present (`Authorization: Bearer TOKEN`).
        queue_size: jobs that may wait while one runs; more are refused (503).
        max_request_bytes: the largest request body taken (413 beyond).
        model: what the server runs, for `/status` and for checking a request's engine fields
            (`device`, `precision`, `checkpoint`, `tokenizer`: resolved paths).
        log: where one line per request goes (None: nowhere).
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], engine, *, token: str, queue_size: int, max_request_bytes: int,
                 model: dict, log=sys.stderr):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.engine, self.token, self.model, self.log = engine, token, model, log
        self.queue_size, self.max_request_bytes = queue_size, max_request_bytes
        self.loopback_only = is_loopback(address[0])
        self.stopping = threading.Event()
        self._lock = threading.Condition()
        self._queue: collections.deque[Work] = collections.deque()
        self._running: Work | None = None
        self.jobs_done = 0
        self.started = time.monotonic()
        self._connections = 0  # connections being answered

    def process_request_thread(self, request, client_address) -> None:
        with self._lock:
            self._connections += 1
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._connections -= 1
                self._lock.notify_all()

    def wait_answered(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until every open connection has been answered, e.g. those of the jobs
        that `stop` cancelled."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._connections and time.monotonic() < deadline:
                self._lock.wait(0.05)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::"):  # reachable on every interface; local clients use the loopback
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def client_allowed(self, host: str) -> bool:
        """A server bound to the loopback interface answers this machine only."""
        return not self.loopback_only or is_loopback(host)

    def token_ok(self, header: str | None) -> bool:
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    # -- the queue -------------------------------------------------------------------------------------------

    def submit(self, work: Work) -> int:
        """Queue a job; returns how many jobs are ahead of it. Failure(503) when the queue is full or the
        server is stopping."""
        with self._lock:
            if self.stopping.is_set():
                raise Failure(503, "stopping", "the server is stopping; the job was not run")
            ahead = len(self._queue) + (self._running is not None)
            # `queue_size` jobs may wait while one runs; with none running, one more starts at once
            if len(self._queue) >= self.queue_size + (self._running is None):
                raise Failure(503, "busy", f"the server is busy: {len(self._queue)} job(s) waiting (its --queue "
                              f"is {self.queue_size}); try again later")
            self._queue.append(work)
            self._lock.notify_all()
            return ahead

    def counts(self) -> tuple[bool, int]:
        with self._lock:
            return self._running is not None, len(self._queue)

    def work(self) -> None:
        """The worker thread: run queued jobs one at a time until `stopping` is set."""
        while True:
            with self._lock:
                while not self._queue and not self.stopping.is_set():
                    self._lock.wait(0.5)
                if self.stopping.is_set():
                    return
                work = self._queue.popleft()
                if work.cancelled.is_set():
                    work.finish(fail=Failure(499, "cancelled", "the client went away"))
                    continue
                self._running = work
            try:
                self._run(work)
            finally:
                with self._lock:
                    self._running = None
                    self.jobs_done += 1

    def _run(self, work: Work) -> None:
        request = work.request
        work.events.put({"event": "started", "waited_s": round(time.monotonic() - work.queued_at, 3)})

        def progress(step: int, steps: int, loss: float, best: float) -> None:
            if work.cancelled.is_set() or self.stopping.is_set():
                raise JobCancelled
            work.events.put({"event": "progress", "step": step, "steps": steps, "loss": _finite(loss),
                             "best": _finite(best)})

        started = time.perf_counter()
        try:
            engine = self._engine_for(request.engine)
            results = engine.run(request.job, progress)
            work.finish(protocol.answer(request, results, time.perf_counter() - started, str(engine.device)))
        except JobCancelled:
            if self.stopping.is_set():
                work.finish(fail=Failure(503, "stopping", "the server is stopping; the job was cancelled and "
                                         "nothing was written"))
            else:
                work.finish(fail=Failure(499, "cancelled", "the client went away; the job was cancelled"))
            self._log(f"job cancelled after {time.perf_counter() - started:.1f} s")
        except Exception as e:  # noqa: BLE001 - one job's failure is that job's answer, never the server's end
            fail = failure(e)
            if fail.kind == "internal":
                traceback.print_exc(file=self.log or sys.stderr)
            work.finish(fail=fail)

    def _engine_for(self, fields: dict):
        """The engine, or a view of it with the job's `max_batch`; a job asking for another device,
        precision or model files is refused (they are the server's, fixed when it started)."""
        from pathlib import Path

        import torch

        from text2fx import devices
        from text2fx.options import EngineOptions, replace

        EngineOptions(**{k: fields[k] for k in ("device", "precision", "max_batch") if k in fields})
        engine = self.engine
        restart = "start a server with that option, or run without --server"
        if "device" in fields:
            want, have = torch.device(devices.resolve(fields["device"])), engine.device
            if want.type != have.type or (want.index is not None and want.index != (have.index or 0)):
                raise UsageError(f"device {fields['device']}: this server runs on {have}; {restart}")
        if fields.get("embedder", "clap") != "clap":
            raise UsageError(f"embedder {fields['embedder']}: this server runs the CLAP model; run without --server")
        if "precision" in fields and fields["precision"] != self.model["precision"]:
            raise UsageError(f"precision {fields['precision']}: this server runs {self.model['precision']}; {restart}")
        for name in ("checkpoint", "tokenizer"):
            if name in fields and Path(fields[name]).resolve() != Path(self.model[name]).resolve():
                raise UsageError(f"{name} {fields[name]}: this server uses {self.model[name]}; {restart}")
        if fields.get("max_batch", engine.max_batch) != engine.max_batch:
            view = copy.copy(engine)  # shares the loaded embedder
            view.options = replace(engine.options, max_batch=fields["max_batch"])
            engine = view
        return engine

    def stop(self) -> None:
        """Stop taking jobs, cancel the running one at its next progress report and refuse the waiting ones."""
        self.stopping.set()
        with self._lock:
            waiting = list(self._queue)
            self._queue.clear()
            self._lock.notify_all()
        for work in waiting:
            work.finish(fail=Failure(503, "stopping", "the server is stopping; the job was not run"))

    def status(self) -> dict:
        from text2fx.version import __version__

        running, queued = self.counts()
        return {"text2fx_version": __version__, "pid": os.getpid(), "url": self.url,
                "device": str(self.engine.device), **{k: str(v) for k, v in self.model.items()},
                "max_batch": self.engine.max_batch, "running": running, "queued": queued, "queue": self.queue_size,
                "max_request_mb": self.max_request_bytes / 2**20, "jobs_done": self.jobs_done,
                "uptime_s": round(time.monotonic() - self.started, 1)}

    def _log(self, line: str) -> None:
        if self.log is not None:
            print(f"text2fx serve: {line}", file=self.log, flush=True)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "text2fx"
    timeout = 120  # seconds per socket read or write: a stalled client cannot hold a thread for ever

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        self.server._log(f"{self.client_address[0]} {format % args}")

    # -- routes ----------------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self._admitted():
            return
        if self.path.split("?")[0] != "/status":
            return self._refuse(Failure(404, "usage", f"no such resource {self.path}; use GET /status or POST /jobs"))
        self._send_json(200, self.server.status())

    def do_POST(self) -> None:  # noqa: N802
        if not self._admitted():
            return
        if self.path.split("?")[0] != "/jobs":
            return self._refuse(Failure(404, "usage", f"no such resource {self.path}; use POST /jobs"))
        try:
            body = self._read_body()
            request = protocol.parse(body)
        except Exception as e:  # noqa: BLE001 - every refusal is one line to the client
            return self._refuse(failure(e))
        work = Work(request)
        try:
            ahead = self.server.submit(work)
        except Failure as e:
            request.cleanup()
            return self._refuse(e)
        self._wait(work, ahead, STREAM_TYPE in (self.headers.get("Accept") or ""))

    def do_PUT(self) -> None:  # noqa: N802
        self._refuse(Failure(405, "usage", f"method {self.command} not allowed; use GET /status or POST /jobs"))

    do_DELETE = do_PATCH = do_PUT

    # -- checks ----------------------------------------------------------------------------------------------

    def _admitted(self) -> bool:
        host = self.client_address[0]
        if not self.server.client_allowed(host):
            self._refuse(Failure(403, "forbidden", f"requests from {host} are refused: this server answers its own "
                                 f"machine only (start it with --host to listen elsewhere)"))
            return False
        if not self.server.token_ok(self.headers.get("Authorization")):
            missing = not self.headers.get("Authorization")
            self._refuse(Failure(401, "auth", ("no token given" if missing else "wrong token") + ": send "
                                 "'Authorization: Bearer TOKEN' with the token from the server file"))
            return False
        return True

    def _read_body(self):
        if self.headers.get("Transfer-Encoding"):
            raise Failure(411, "usage", "send the request with a Content-Length (chunked bodies are not taken)")
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            raise Failure(411, "usage", "the request needs a Content-Length header")
        length = int(length)
        limit = self.server.max_request_bytes
        if length > limit:
            self._too_large = length
            raise Failure(413, "too_large", f"the request is {length / 2**20:.1f} MB, over this server's limit of "
                          f"{limit / 2**20:g} MB (--max-request-mb); send a path instead of the audio, or raise it")
        data = self.rfile.read(length)
        if len(data) < length:
            raise Failure(400, "usage", "the request body ended early")
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise Failure(400, "usage", f"the request is not valid JSON: {e}") from None

    # -- answers ---------------------------------------------------------------------------------------------

    def _wait(self, work: Work, ahead: int, stream: bool) -> None:
        if stream:
            if not self._start_stream():
                work.cancelled.set()
                return
            self._event({"event": "queued", "ahead": ahead})
        while not work.finished.is_set():
            try:
                event = work.events.get(timeout=0.25)
            except queue.Empty:
                event = None
            if self._client_gone() or (stream and event is not None and not self._event(event)):
                work.cancelled.set()  # dropped from the queue, or stopped at the running job's next report
                self.server._log("client went away; its job is cancelled")
                return
        if stream:
            if work.failure is None:
                self._event({"event": "done", "response": work.answer})
            else:
                f = work.failure
                self._event({"event": "error", "status": f.status, "kind": f.kind, "error": f.message})
        elif work.failure is not None:
            self._refuse(work.failure)
        else:
            self._send_json(200, work.answer)

    def _client_gone(self) -> bool:
        """Whether the client closed its connection (it sends nothing more once the request is read, so a
        readable socket with nothing to read means it has gone)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _refuse(self, f: Failure) -> None:
        self.close_connection = True
        self._send_json(f.status, {"error": f.message, "kind": f.kind})
        too_large = getattr(self, "_too_large", None)
        if too_large:
            self._drain(too_large)

    def _drain(self, length: int) -> None:
        """Read (and drop) some of a refused body, so that a client still sending it gets to read the answer."""
        try:
            self.connection.settimeout(1.0)
            left = min(length, 64 * 2**20)
            while left > 0:
                chunk = self.rfile.read1(min(left, 2**20))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _send_json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status if status != 499 else 400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.server._log("client went away before its answer was sent")

    def _start_stream(self) -> bool:
        try:
            self.send_response(200)
            self.send_header("Content-Type", STREAM_TYPE)
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.flush()
            return True
        except OSError:
            return False

    def _event(self, event: dict) -> bool:
        try:
            self.wfile.write(json.dumps(event).encode("utf-8") + b"\n")
            self.wfile.flush()
            return True
        except OSError:
            return False
