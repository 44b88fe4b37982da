"""Where a batch's tasks run: in this process, in local worker processes, or in Ray actors.

Every pool holds workers that each load one `Engine` once and run tasks one at a time; the scheduler
(`text2fx.batch.runner`) gives an idle worker the next task and reads back events as they happen:

    ("ready", worker)                 the worker's engine is loaded
    ("done", worker, results)         a task finished: one `ItemResult` per row
    ("died", worker, reason, ran)     the worker is gone; `ran`: it had loaded its engine (so the task it
                                      held was running and fails), else it never started (the task goes back)

A worker that dies mid-task (killed, out of memory, a crash in native code) costs only the rows it held.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import dataclass

from text2fx.batch.tasks import Task, execute
from text2fx.errors import UsageError

RAY_INSTALL_HINT = "--ray needs Ray, which is not installed: pip install 'text2fx[ray]' (or pip install ray)"


@dataclass(frozen=True)
class EngineSpec:
    """How each worker loads its engine: model files (resolved paths), device, precision, batch size, and
    how many CPU threads torch may use (None: torch's default)."""

    checkpoint: str
    tokenizer: str
    device: str | None
    precision: str | None
    max_batch: int
    threads: int | None = None
    factory: str | None = None

    def load(self, index: int = 0):
        """The worker's `Engine`. With several GPUs and device None/"cuda", worker `index` takes GPU
        index % count, so N workers spread over the GPUs. `factory` ("module:function", called with this
        spec and `index`) builds it instead (tests: a cheap stand-in embedder)."""
        import torch

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        if self.factory is not None:
            import importlib

            module, _, name = self.factory.partition(":")
            return getattr(importlib.import_module(module), name)(self, index)
        device = self.device
        if device in (None, "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
            device = f"cuda:{index % torch.cuda.device_count()}"
        from text2fx.engine import Engine

        return Engine(checkpoint=self.checkpoint, tokenizer=self.tokenizer, device=device,
                      precision=self.precision, max_batch=self.max_batch)


class InProcessPool:
    """One worker: this process (no start-up cost, no isolation; a crash ends the run, which resumes)."""

    def __init__(self, spec: EngineSpec):
        self.spec, self.engine, self.task = spec, None, None

    def start(self, count: int = 1) -> list[int]:
        return [0]

    def alive(self) -> list[int]:
        return [0]

    def submit(self, worker: int, task: Task) -> None:
        self.task = task

    def wait(self, timeout: float | None = None) -> list[tuple]:
        if self.engine is None:
            self.engine = self.spec.load()
            return [("ready", 0)]
        task, self.task = self.task, None
        return [("done", 0, execute(self.engine, task))]

    def kill(self, worker: int) -> None:
        raise NotImplementedError("the in-process worker cannot be killed on its own")

    def close(self) -> None:
        self.engine = None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _worker_main(conn, index: int, spec: EngineSpec) -> None:
    """A local worker process: load the engine, then run the tasks sent until None."""
    # SIGTERM (the parent stopping us) unwinds like Ctrl-C, so temporary output files are removed.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            engine = spec.load(index)
        except Exception as e:  # noqa: BLE001
            from text2fx.batch.manifest import one_line

            conn.send(("error", one_line(e)))
            return
        conn.send(("ready",))
        while True:
            task = conn.recv()
            if task is None:
                return
            conn.send(("done", execute(engine, task)))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return


@dataclass
class _Local:
    process: multiprocessing.Process
    conn: object
    ready: bool = False


class LocalPool:
    """Worker processes on this machine (spawned, so each starts clean: CUDA and torch threads included)."""

    def __init__(self, spec: EngineSpec):
        self.spec = spec
        self.workers: dict[int, _Local] = {}
        self._next = 0
        self._context = multiprocessing.get_context("spawn")

    def start(self, count: int = 1) -> list[int]:
        started = []
        for _ in range(count):
            parent, child = self._context.Pipe()
            index = self._next
            process = self._context.Process(target=_worker_main, args=(child, index, self.spec), daemon=True,
                                            name=f"text2fx-batch-worker-{index}")
            process.start()
            child.close()
            self.workers[index] = _Local(process, parent)
            self._next += 1
            started.append(index)
        return started

    def alive(self) -> list[int]:
        return list(self.workers)

    def submit(self, worker: int, task: Task) -> None:
        self.workers[worker].conn.send(task)

    def wait(self, timeout: float | None = None) -> list[tuple]:
        from multiprocessing.connection import wait

        if not self.workers:
            return []
        handles = {}
        for index, w in self.workers.items():
            handles[w.conn] = index
            handles[w.process.sentinel] = index
        events = []
        for handle in wait(list(handles), timeout):
            index = handles[handle]
            w = self.workers.get(index)
            if w is None:
                continue
            message = None
            try:
                if w.conn.poll():
                    message = w.conn.recv()
            except (EOFError, OSError):
                message = None
            if message is not None and message[0] == "ready":
                w.ready = True
                events.append(("ready", index))
            elif message is not None and message[0] == "done":
                events.append(("done", index, message[1]))
            elif message is not None and message[0] == "error":
                self._drop(index)
                events.append(("died", index, f"worker could not start: {message[1]}", False))
            elif not w.process.is_alive():
                w.process.join()
                code = w.process.exitcode
                how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                self._drop(index)
                events.append(("died", index, f"worker {index} died ({how}) while running this row", w.ready))
        return events

    def kill(self, worker: int) -> None:
        """SIGKILL one worker (tests: a worker dying mid-task)."""
        os.kill(self.workers[worker].process.pid, signal.SIGKILL)

    def _drop(self, index: int) -> None:
        w = self.workers.pop(index)
        try:
            w.conn.close()
        except OSError:
            pass

    def close(self) -> None:
        for w in self.workers.values():
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in self.workers.values():
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.terminate()  # SIGTERM: unwinds, removing temporary files
                w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
        self.workers.clear()

    def interrupt(self) -> None:
        """Stop now (Ctrl-C): SIGTERM every worker, so each removes its temporary files, then wait."""
        for w in self.workers.values():
            if w.process.is_alive():
                w.process.terminate()
        self.close()


def import_ray():
    """The `ray` module, or a `UsageError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_INSTALL_HINT) from None
    return ray


class _EngineActor:
    """A Ray actor holding one warm engine (`ray.remote` is applied when a pool starts)."""

    def __init__(self, spec: EngineSpec, index: int):
        self.engine = spec.load(index)

    def ready(self) -> str:
        return str(self.engine.device)

    def run(self, task: Task):
        return execute(self.engine, task)


class RayPool:
    """Ray actors, one engine each (`num_gpus=1` on a GPU device, else `num_cpus=threads or 1`), on the Ray
    instance this process is connected to (see `connect`). Results stream back with `ray.wait`."""

    def __init__(self, spec: EngineSpec, gpu: bool):
        self.ray = import_ray()
        self.spec, self.gpu = spec, gpu
        resources = {"num_gpus": 1} if gpu else {"num_cpus": spec.threads or 1}
        self.actor_class = self.ray.remote(max_restarts=0, max_task_retries=0, **resources)(_EngineActor)
        self.actors: dict[int, object] = {}
        self.ready: dict[int, bool] = {}
        self.refs: dict[object, tuple[str, int]] = {}
        self._next = 0

    def start(self, count: int = 1) -> list[int]:
        started = []
        for _ in range(count):
            index = self._next
            self._next += 1
            actor = self.actor_class.remote(self.spec, index)
            self.actors[index], self.ready[index] = actor, False
            self.refs[actor.ready.remote()] = ("ready", index)
            started.append(index)
        return started

    def alive(self) -> list[int]:
        return list(self.actors)

    def submit(self, worker: int, task: Task) -> None:
        self.refs[self.actors[worker].run.remote(task)] = ("run", worker)

    def wait(self, timeout: float | None = None) -> list[tuple]:
        ray = self.ray
        if not self.refs:
            return []
        done, _ = ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        events = []
        for ref in done:
            kind, index = self.refs.pop(ref)
            if index not in self.actors:
                continue
            try:
                value = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                ran = self.ready[index] or self._started(index)
                self._drop(index)
                cause = " ".join(str(e).split())[:300]
                reason = (f"Ray actor {index} died while running this row" if ran
                          else f"Ray actor could not start: {cause}")
                events.append(("died", index, reason, ran))
                continue
            except ray.exceptions.RayError as e:
                events.append(("died", index, f"Ray task failed: {' '.join(str(e).split())[:300]}", True))
                self._drop(index)
                continue
            if kind == "ready":
                self.ready[index] = True
                events.append(("ready", index))
            else:
                self.ready[index] = True  # a finished task means the engine loaded, whichever ref came first
                events.append(("done", index, value))
        return events

    def _started(self, index: int) -> bool:
        """Whether actor `index` finished loading its engine (its ready call returned) before it died."""
        for ref, (kind, i) in self.refs.items():
            if kind == "ready" and i == index:
                done, _ = self.ray.wait([ref], timeout=0)
                try:
                    return bool(done) and self.ray.get(ref) is not None
                except Exception:  # noqa: BLE001 - it died loading
                    return False
        return False

    def kill(self, worker: int) -> None:
        """`ray.kill` one actor (tests: an actor dying mid-task)."""
        self.ray.kill(self.actors[worker], no_restart=True)

    def _drop(self, index: int) -> None:
        actor = self.actors.pop(index)
        self.ready.pop(index, None)
        self.refs = {r: v for r, v in self.refs.items() if v[1] != index}
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def close(self) -> None:
        for index in list(self.actors):
            self._drop(index)

    interrupt = close


def connect(address: str):
    """Connect to Ray at `address` ("auto": the cluster this machine belongs to; "local": a new instance on
    this machine, loopback only). Returns (ray, whether this call started the connection, so it shuts it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    if address == "local":
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 configure_logging=False)
    else:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise UsageError(f"cannot connect to Ray at {address!r}: {' '.join(str(e).split())[:300]}") from None
    return ray, True


def cluster_has_gpus(ray) -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0
