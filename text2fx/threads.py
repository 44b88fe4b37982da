"""How torch uses the CPU's threads: a policy that keeps a step fast when other programs share the cores.

torch's CPU kernels run on an OpenMP pool with one thread per core. Between parallel regions those threads
spin-wait (GNU OpenMP spins for up to ~300,000 iterations before sleeping), which costs nothing on an idle
machine but is ruinous on a busy one: when a core is taken by another program (a DAW playing back, a second
`text2fx`), every parallel region waits for the thread that lost its core while the others burn the cores
that remain. On a 2-core machine, CLAP's step beside a second `text2fx` was several times slower than idle,
and close to idle with passive waiting (figures in benchmarks/RESULTS.md, "cpu contention").

The policy (`configure` before torch is imported, `apply_to_torch` once it is):

- threads that wait sleep instead of spinning: ``OMP_WAIT_POLICY=PASSIVE`` (GNU and LLVM/Intel OpenMP; GNU's
  spin count is then 0) and ``KMP_BLOCKTIME=0`` (Intel/LLVM OpenMP, which MKL builds use);
- torch's intra-op thread count is at most the number of CPUs this process may run on (`available_cpus`:
  the affinity mask, e.g. `taskset`, and a cgroup CPU quota, e.g. a container's `--cpus`), never raised
  (torch's default of one thread per physical core is kept where it is lower);
- ``--threads N`` / ``TEXT2FX_THREADS=N`` / ``Engine(threads=N)``: exactly N intra-op threads.

A user's explicit settings win: any of ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME`` set in the
environment leaves waiting alone; ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set, or a thread count already
lowered with `torch.set_num_threads`, leaves the count alone. ``TEXT2FX_THREADS=off`` turns the whole policy
off (torch's defaults). The inter-op pool is left alone: it only runs TorchScript forks, which Text2FX does
not use, and its threads are created lazily, so they neither spin nor take cores.

The command applies the policy before it imports torch. In a Python program (a DAW script) torch is often
imported already; the OpenMP runtime reads its environment once, when torch loads it, so the wait policy
only takes effect if `configure()` runs before the first `import torch`; `Engine` itself only applies the
thread count (`apply_to_torch`), and changes no environment variable of the caller's process.
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from pathlib import Path

from text2fx.errors import UsageError

ENV_VAR = "TEXT2FX_THREADS"
# Any of these set by the user means they chose how OpenMP threads wait.
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# Any of these set by the user means they chose the thread count (torch reads both at start-up).
COUNT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
PASSIVE_WAIT = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def check_threads(threads: object, source: str = "threads") -> int | None:
    """`threads` as a count of at least 1 (or None), else a one-line `UsageError` naming `source`."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"{source} must be a whole number of at least 1, got {threads!r}")
    return threads


def requested(threads: int | None = None, environ: MutableMapping[str, str] | None = None) -> int | str | None:
    """What was asked for: `threads` if given, else ``$TEXT2FX_THREADS`` (a count, or "off"), else None
    (the policy's defaults)."""
    if threads is not None:
        return check_threads(threads)
    value = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
    if not value:
        return None
    if value.lower() == "off":
        return "off"
    try:
        return check_threads(int(value), ENV_VAR)
    except ValueError:
        raise UsageError(f"{ENV_VAR} must be a whole number of at least 1 or 'off', got {value!r}") from None


def available_cpus() -> int:
    """How many CPUs this process may run on: the affinity mask (`taskset`, a batch scheduler's cpuset),
    bounded by a cgroup CPU quota (a container's `--cpus`; rounded up); at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of time the cgroup may use (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def configure(threads: int | None = None, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Choose the threading policy before torch is imported: set, in `environ` (default `os.environ`), the
    environment variables the OpenMP runtime reads when torch loads it.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` and ``KMP_BLOCKTIME=0`` unless the user set any of ``OMP_WAIT_POLICY``,
    ``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME``. With `threads` (or ``TEXT2FX_THREADS=N``), also sets
    ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` to it: an explicit count for this command wins over the
    environment's. ``TEXT2FX_THREADS=off`` sets nothing. Calling it again is harmless; child processes
    (e.g. `text2fx batch` workers) inherit the variables.

    Called after torch is imported, the variables only reach child processes; the thread count is then set
    by `apply_to_torch`.

    Args:
        threads: intra-op threads, at least 1; None: the policy's choice (see `apply_to_torch`).
        environ: the environment to change (tests pass a dict).

    Returns:
        The variables set by this call (name -> value); empty when the user's settings were all kept.

    Raises:
        UsageError: `threads` below 1 or not a whole number, or a malformed ``TEXT2FX_THREADS``.
    """
    env = os.environ if environ is None else environ
    want = requested(threads, env)
    if want == "off":
        return {}
    changes: dict[str, str] = {}
    if not any(name in env for name in WAIT_VARS):
        changes.update(PASSIVE_WAIT)
    if isinstance(want, int):
        changes.update({name: str(want) for name in COUNT_VARS if env.get(name) != str(want)})
    env.update(changes)
    return changes


def apply_to_torch(threads: int | None = None, environ: MutableMapping[str, str] | None = None) -> int:
    """Set torch's intra-op thread count by the policy, now that torch is imported; returns the count in effect.

    With `threads` (or ``TEXT2FX_THREADS=N``): exactly that many (`torch.set_num_threads` is process-wide).
    Otherwise the count is lowered to `available_cpus()` when it is higher, unless ``OMP_NUM_THREADS`` or
    ``MKL_NUM_THREADS`` is set in `environ` (the user's choice) or ``TEXT2FX_THREADS=off``; a count
    already at or below it (torch's default of one per physical core, or the user's `torch.set_num_threads`)
    is kept.

    Raises:
        UsageError: `threads` below 1 or not a whole number, or a malformed ``TEXT2FX_THREADS``.
    """
    import torch

    env = os.environ if environ is None else environ
    want = requested(threads, env)
    current = torch.get_num_threads()
    if isinstance(want, int):
        target = want
    elif want == "off" or any(name in env for name in COUNT_VARS):
        return current
    else:
        target = min(current, available_cpus())
    if target != current:
        torch.set_num_threads(target)
    return torch.get_num_threads()

