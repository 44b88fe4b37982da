"""The CPU threading policy (`text2fx.threads`): environment defaults that leave a user's settings alone, the
thread count in torch, and the command choosing both before torch is imported (checked in a child process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from text2fx import threads
from text2fx.engine import Engine
from text2fx.errors import UsageError
from doubles import SpectralTestEmbedder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def torch_threads():
    """Restores torch's intra-op thread count after a test that changes it (it is process-wide)."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_configure_sets_passive_waiting_when_unset():
    env: dict[str, str] = {}
    changed = threads.configure(environ=env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"} == changed
    assert threads.configure(environ=env) == {}  # a second call changes nothing
    assert "OMP_NUM_THREADS" not in env  # no count unless asked: torch's default is lowered later if needed


@pytest.mark.parametrize("name, value", [("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "10000"),
                                         ("KMP_BLOCKTIME", "200")])
def test_configure_keeps_the_users_wait_settings(name, value):
    env = {name: value}
    assert threads.configure(environ=env) == {}
    assert env == {name: value}


def test_configure_keeps_the_users_thread_count_unless_a_count_is_given():
    env = {"OMP_NUM_THREADS": "7", "MKL_NUM_THREADS": "5"}
    threads.configure(environ=env)
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"]) == ("7", "5")
    # --threads N is this command's explicit choice: it wins over the environment's
    threads.configure(3, environ=env)
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"]) == ("3", "3")


def test_text2fx_threads_variable():
    env = {"TEXT2FX_THREADS": "off"}
    assert threads.configure(environ=env) == {}
    assert env == {"TEXT2FX_THREADS": "off"}
    env = {"TEXT2FX_THREADS": " 2 "}
    threads.configure(environ=env)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    # an explicit count beats the variable
    assert threads.requested(1, {"TEXT2FX_THREADS": "4"}) == 1


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_text2fx_threads_is_a_one_line_usage_error(value):
    with pytest.raises(UsageError, match="TEXT2FX_THREADS must be a whole number of at least 1 or 'off'"):
        threads.configure(environ={"TEXT2FX_THREADS": value})


@pytest.mark.parametrize("value", [0, -2, True, 1.5, "3"])
def test_bad_thread_count_is_a_usage_error(value):
    with pytest.raises(UsageError, match="threads must be a whole number of at least 1"):
        threads.configure(value, environ={})


def test_available_cpus_follows_the_affinity_mask():
    assert 1 <= threads.available_cpus() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
    ({}, None),
])
def test_cgroup_cpu_quota(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert threads._cgroup_quota(tmp_path) == quota


def test_apply_lowers_an_oversubscribed_count_only(torch_threads):
    available = threads.available_cpus()
    torch.set_num_threads(available + 2)
    assert threads.apply_to_torch(environ={}) == available == torch.get_num_threads()
    torch.set_num_threads(1)  # the user's own lower choice (or torch's one-per-physical-core default) is kept
    assert threads.apply_to_torch(environ={}) == 1


def test_apply_keeps_counts_the_user_chose(torch_threads):
    torch.set_num_threads(threads.available_cpus() + 2)
    for env in ({"OMP_NUM_THREADS": "8"}, {"MKL_NUM_THREADS": "8"}, {"TEXT2FX_THREADS": "off"}):
        assert threads.apply_to_torch(environ=env) == threads.available_cpus() + 2
    assert threads.apply_to_torch(1, environ={"OMP_NUM_THREADS": "8"}) == 1  # an explicit count is applied
    assert threads.apply_to_torch(environ={"TEXT2FX_THREADS": "3"}) == 3


def test_engine_threads(torch_threads):
    embedder = SpectralTestEmbedder(sample_rate=16000, window_seconds=1.0)
    Engine(embedder, threads=1)
    assert torch.get_num_threads() == 1
    with pytest.raises(UsageError, match="threads must be a whole number of at least 1, got 0"):
        Engine(embedder, threads=0)


# Runs the command's `main` in a fresh interpreter and records the environment at the moment `torch` is first
# imported (an import hook), then torch's thread count. The model files do not exist, so the command stops
# with an error after importing torch, before loading anything.
_CHILD = r"""
import json, os, sys

seen = {}

class _Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.update({k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS")})
        return None

sys.meta_path.insert(0, _Watch())
from text2fx.cli import main

code = main(sys.argv[1:])
torch = sys.modules.get("torch")
print(json.dumps({"code": code, "at_import": seen, "threads": torch.get_num_threads() if torch else None}))
"""


def _run_command(tmp_path: Path, args: list[str], env_changes: dict[str, str]) -> dict:
    audio = tmp_path / "in.wav"
    sf.write(audio, 0.1 * np.sin(np.arange(16000) * 0.05), 16000)
    env = {k: v for k, v in os.environ.items()
           if k not in threads.WAIT_VARS + threads.COUNT_VARS + (threads.ENV_VAR,)}
    env.update(env_changes)
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(audio), "warm", "--chain", "eq",
                           "--clap-ckpt", str(tmp_path / "missing.pt"), "--tokenizer", str(tmp_path), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["code"] != 0 and out["at_import"], (out, proc.stderr)  # torch was imported, then the files refused
    return out


def test_command_sets_the_policy_before_torch_is_imported(tmp_path):
    out = _run_command(tmp_path, ["--threads", "1"], {})
    assert out["at_import"] == {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0", "OMP_NUM_THREADS": "1"}
    assert out["threads"] == 1  # torch read the count the command chose


def test_command_keeps_the_users_environment(tmp_path):
    out = _run_command(tmp_path, [], {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1"})
    assert out["at_import"] == {"OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": None, "OMP_NUM_THREADS": "1"}
    assert out["threads"] == 1
    out = _run_command(tmp_path, [], {"TEXT2FX_THREADS": "off"})
    assert out["at_import"] == {"OMP_WAIT_POLICY": None, "KMP_BLOCKTIME": None, "OMP_NUM_THREADS": None}
