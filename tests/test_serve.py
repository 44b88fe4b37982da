"""`text2fx serve`: a real server process (random-weight CLAP from tests/conftest.py: plumbing, not meaning),
real HTTP requests, the stdlib client and `text2fx --server`."""

from __future__ import annotations

import array
import base64
import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile as sf

import text2fx.clap
from text2fx.cli import main
from text2fx.client import Client, ServerError, ServerUnavailable
from text2fx.errors import UsageError
from text2fx.report import schema

# Tests of a real server process (model loads, whole jobs); the unit tests at the end need neither.
slow = pytest.mark.slow

QUICK = {"steps": 2, "restarts": 1, "excerpts": 1}
QUICK_ARGS = ["--steps", "2", "--restarts", "1", "--excerpts", "1"]
# A job that runs until it is cancelled (progress is reported every 10 steps).
ENDLESS = {"steps": 100000, "restarts": 1, "excerpts": 1, "patience": None}


def tone(sr=16000, seconds=1.0, channels=1, amp=0.3):
    t = np.arange(int(sr * seconds)) / sr
    return np.stack([amp * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)]).astype(np.float32)


def write_tone(path, sr=16000, seconds=1.0, channels=1, subtype="FLOAT"):
    sf.write(path, tone(sr, seconds, channels).T, sr, subtype=subtype)
    return path


class ServerProcess:
    """`python -m text2fx serve` in a subprocess, ready once its server file exists."""

    def __init__(self, folder: Path, checkpoint: Path, tokenizer: Path, *extra: str):
        self.folder, self.file = folder, folder / "server.json"
        self.log = open(folder / "serve.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "text2fx", "serve", "--port", "0", "--token-file", str(self.file), "--device",
             "cpu", "--clap-ckpt", str(checkpoint), "--tokenizer", str(tokenizer), *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "TEXT2FX_THREADS": "1"})
        while not self.file.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}): {self.output()}")
            time.sleep(0.2)
        self.info = json.loads(self.file.read_text())

    def output(self) -> str:
        self.log.flush()
        return (self.folder / "serve.log").read_text()

    def client(self) -> Client:
        return Client(server_file=self.file)

    def connection(self, source: str | None = None) -> http.client.HTTPConnection:
        host, port = self.info["url"].rsplit("/", 1)[-1].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), source_address=(source, 0) if source else None)
        return conn

    def request(self, method, path, body=None, token=True, headers=None, source=None):
        """(status, JSON answer) of one raw request."""
        conn = self.connection(source)
        h = dict(headers or {})
        if token is True:
            h["Authorization"] = f"Bearer {self.info['token']}"
        elif token:
            h["Authorization"] = f"Bearer {token}"
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        conn.request(method, path, body=body, headers=h)
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
        return response.status, answer

    def wait_status(self, **want) -> dict:
        while True:
            status = self.client().status()
            if all(status[k] == v for k, v in want.items()):
                return status
            assert self.proc.poll() is None, self.output()
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait()
        self.log.close()
        return code


@pytest.fixture(scope="module")
def server(tmp_path_factory, clap_checkpoint, clap_tokenizer_dir):
    """One server for the module: a queue of one waiting job and a 0.25 MB request limit."""
    s = ServerProcess(tmp_path_factory.mktemp("serve"), clap_checkpoint, clap_tokenizer_dir, "--queue", "1",
                      "--max-request-mb", "0.25")
    yield s
    assert s.stop() == 0, s.output()
    assert not s.file.exists()


@pytest.fixture
def shared_clap(monkeypatch, clap_embedder, clap_checkpoint, clap_tokenizer_dir):
    """The command run in this process on the session's loaded CLAP (as in test_cli.py)."""
    monkeypatch.setenv("TEXT2FX_CLAP_CKPT", str(clap_checkpoint))
    monkeypatch.setenv("TEXT2FX_CLAP_TOKENIZER", str(clap_tokenizer_dir))
    monkeypatch.setattr(text2fx.clap, "ClapEmbedder", lambda *a, **k: clap_embedder)


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "Traceback" not in message


# -- starting ----------------------------------------------------------------------------------------------------

@slow
def test_server_file_is_private_and_names_a_free_port(server):
    assert stat.S_IMODE(server.file.stat().st_mode) == 0o600
    assert server.info["pid"] == server.proc.pid and server.info["url"].startswith("http://127.0.0.1:")
    assert not server.info["url"].endswith(":0") and f"listening on {server.info['url']}" in server.output()
    status = server.client().status()
    assert status["device"] == "cpu" and status["queue"] == 1 and status["pid"] == server.proc.pid


@slow
def test_a_second_server_on_the_same_file_is_refused_before_loading(server, tmp_path):
    done = subprocess.run([sys.executable, "-m", "text2fx", "serve", "--token-file", str(server.file), "--clap-ckpt",
                           str(tmp_path / "never-loaded.pt")], capture_output=True, text=True)
    assert done.returncode == 1 and "already running" in done.stderr and one_line(done.stderr.strip()), done.stderr
    assert json.loads(server.file.read_text())["token"] == server.info["token"]


# -- jobs --------------------------------------------------------------------------------------------------------

@slow
def test_path_job_writes_what_the_command_writes(server, tmp_path, shared_clap, capsys):
    src = write_tone(tmp_path / "in.wav", channels=2)
    results = server.client().apply(src, "warm and bright", chain="eq,reverb", output=tmp_path / "served.wav",
                                    seed=3, **QUICK)
    (result,) = results
    assert result["audio_path"] == str(tmp_path / "served.wav")
    assert result["params_path"] == str(tmp_path / "served.json")
    report = json.loads((tmp_path / "served.json").read_text())
    assert report == result["report"]
    jsonschema.validate(report, schema())
    served, sr = sf.read(tmp_path / "served.wav", dtype="float32", always_2d=True)
    assert sr == 16000 and served.shape == (report["output"]["frames"], 2)

    # the command in this process, same options and CLAP weights: the same audio and settings (up to float
    # rounding: the server may use another thread count)
    assert main([str(src), "warm and bright", "--chain", "eq,reverb", "-o", str(tmp_path / "local.wav"), "--seed",
                 "3", *QUICK_ARGS, "--quiet"]) == 0
    local, _ = sf.read(tmp_path / "local.wav", dtype="float32", always_2d=True)
    np.testing.assert_allclose(served, local, atol=1e-4)
    local_report = json.loads((tmp_path / "local.json").read_text())
    assert local_report["optimization"]["seed"] == report["optimization"]["seed"] == 3
    for a, b in zip(local_report["chain"]["effects"], report["chain"]["effects"]):
        assert a["type"] == b["type"]
        np.testing.assert_allclose(list(a["params"].values()), list(b["params"].values()), rtol=1e-3, atol=1e-3)


@slow
def test_audio_in_the_request_comes_back_as_the_file_job_would_write_it(server, tmp_path):
    x = tone(channels=2)
    src = write_tone(tmp_path / "take.wav", channels=2)
    client = server.client()
    (by_path,) = client.apply(src, "airy", chain="eq", **QUICK)
    written, _ = sf.read(by_path["audio_path"], dtype="float32", always_2d=True)

    (samples,) = client.apply_audio(array.array("f", x.T.ravel()), "airy", chain="eq", sample_rate=16000,
                                    channels=2, **QUICK)
    assert (samples["sample_rate"], samples["channels"]) == (16000, 2)
    got = np.frombuffer(samples["audio"].tobytes(), dtype=np.float32).reshape(-1, 2)
    np.testing.assert_allclose(got, written, atol=1e-6)
    assert samples["report"]["input"]["path"] is None and samples["report"]["chain"] == by_path["report"]["chain"]

    (as_file,) = client.apply_audio(src.read_bytes(), "airy", chain="eq", name="take.wav", **QUICK)
    assert as_file["name"] == "take.airy.wav" and as_file["report"]["input"]["path"] == "take.wav"
    (tmp_path / "back.wav").write_bytes(as_file["audio"])
    back, _ = sf.read(tmp_path / "back.wav", dtype="float32", always_2d=True)
    assert sf.info(tmp_path / "back.wav").subtype == "FLOAT"
    np.testing.assert_array_equal(back, written)
    jsonschema.validate(as_file["report"], schema())


# -- refusals ----------------------------------------------------------------------------------------------------

@slow
def test_requests_without_the_right_token_are_refused(server, tmp_path):
    src = str(write_tone(tmp_path / "in.wav"))
    for token, words in ((None, "no token"), ("not-the-token", "wrong token")):
        for method, path, body in (("GET", "/status", None), ("POST", "/jobs", {"inputs": [src], "prompt": "x"})):
            status, answer = server.request(method, path, body, token=token)
            assert status == 401 and answer["kind"] == "auth" and words in answer["error"], answer
            assert one_line(answer["error"])
    assert list(tmp_path.iterdir()) == [tmp_path / "in.wav"]


@slow
def test_requests_from_other_hosts_are_refused(server):
    """The server listens on the loopback interface; a connection from another address of this machine (the
    closest a test can come to another host) is refused even with the token."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface's address
        other = probe.getsockname()[0]
    except OSError:
        other = None
    finally:
        probe.close()
    if other is None or other.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address")
    status, answer = server.request("GET", "/status", source=other)
    assert status == 403 and answer["kind"] == "forbidden" and other in answer["error"], answer


@slow
def test_unreadable_paths_get_the_commands_message(server, tmp_path, capsys):
    missing = tmp_path / "missing.wav"
    (tmp_path / "notes.txt").write_text("hello")
    for path in (missing, tmp_path / "notes.txt", tmp_path):
        status, answer = server.request("POST", "/jobs", {"inputs": [str(path)], "prompt": "dark"})
        assert status == 400 and answer["kind"] == "input", answer
        assert main([str(path), "dark", "--quiet"]) == 1
        assert capsys.readouterr().err.strip() == f"text2fx: error: {answer['error']}"
    status, answer = server.request("POST", "/jobs", {"inputs": ["relative.wav"], "prompt": "dark"})
    assert status == 400 and "must be absolute" in answer["error"] and one_line(answer["error"])


@slow
def test_bad_requests_are_refused_in_one_line(server, tmp_path):
    src = str(write_tone(tmp_path / "in.wav"))
    cases = [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        ({"inputs": [src], "prompt": "dark", "stpes": 3}, 400, "unknown field 'stpes'"),
        ({"inputs": [src], "prompt": "dark", "chain": "eq,flanger"}, 400, "unknown effect 'flanger'"),
        ({"inputs": [src], "prompt": "dark", "steps": 0}, 400, "steps must be at least 1"),
        ({"prompt": "dark"}, 400, "give either inputs"),
        ({"audio": {"format": "float32", "data": "@@@", "sample_rate": 16000}, "prompt": "dark"}, 400, "base64"),
        ({"audio": {"format": "float32", "data": base64.b64encode(b"123456").decode(), "sample_rate": 16000},
          "prompt": "dark"}, 400, "whole frames"),
        ({"audio": {"format": "file", "data": base64.b64encode(b"RIFFjunk" * 10).decode()}, "prompt": "dark"}, 400,
         "cannot read"),
        ({"inputs": [src], "prompt": "dark", "device": "cuda:7"}, 400, "cuda:7"),
        ({"inputs": [src], "prompt": "dark", "precision": "bfloat16"}, 400, "this server runs float32"),
    ]
    for body, code, words in cases:
        status, answer = server.request("POST", "/jobs", body)
        assert status == code and words in answer["error"] and one_line(answer["error"]), (body, answer)
    status, answer = server.request("GET", "/nowhere")
    assert status == 404 and one_line(answer["error"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


@slow
def test_a_request_over_the_size_limit_is_refused(server):
    body = json.dumps({"audio": {"format": "float32", "data": "A" * 400_000, "sample_rate": 16000},
                       "prompt": "dark"}).encode()
    status, answer = server.request("POST", "/jobs", body)
    assert status == 413 and answer["kind"] == "too_large" and "--max-request-mb" in answer["error"], answer
    with pytest.raises(ServerError) as e:  # the client too reads the refusal
        server.client().apply_audio(array.array("f", [0.1] * 100_000), "dark", sample_rate=16000)
    assert e.value.status == 413


@slow
def test_full_queue_and_a_client_that_goes_away(server, tmp_path):
    """One job runs (its client later disconnects), one waits, a third is refused (503); the disconnect cancels
    the running job, which writes nothing, and the waiting one then succeeds."""
    src = write_tone(tmp_path / "in.wav")
    body = json.dumps({"inputs": [str(src)], "prompt": "dark", "chain": "eq", "output": str(tmp_path / "a.wav"),
                       **ENDLESS}).encode()
    host, port = server.info["url"].rsplit("/", 1)[-1].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"POST /jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {server.info['token']}\r\n"
                 f"Accept: application/x-ndjson\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    answer = sock.makefile("rb")
    assert answer.readline().split()[1] == b"200"
    while answer.readline().strip():  # the headers
        pass
    while json.loads(answer.readline())["event"] != "progress":  # running
        pass

    waiting: dict = {}
    thread = threading.Thread(target=lambda: waiting.update(r=server.client().apply(
        src, "bright", chain="eq", output=tmp_path / "b.wav", **QUICK)))
    thread.start()
    server.wait_status(running=True, queued=1)
    with pytest.raises(ServerError) as e:
        server.client().apply(src, "airy", chain="eq", output=tmp_path / "c.wav", **QUICK)
    assert e.value.status == 503 and e.value.kind == "busy" and one_line(str(e.value))

    sock.shutdown(socket.SHUT_RDWR)  # the client goes away mid-job
    answer.close()
    sock.close()
    thread.join()
    assert waiting["r"][0]["audio_path"] == str(tmp_path / "b.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.wav", "in.wav"]
    assert "cancelled" in server.output()
    status = server.wait_status(running=False, queued=0)
    assert server.proc.poll() is None and status["jobs_done"] >= 2


# -- the command and the client ----------------------------------------------------------------------------------

@slow
def test_the_command_with_server_prints_and_writes_as_a_local_run(server, tmp_path, shared_clap, capsys,
                                                                  monkeypatch):
    write_tone(tmp_path / "in.wav")
    args = ["in.wav", "-p", "dark", "-p", "airy", "--chain", "eq", *QUICK_ARGS, "-o"]
    env = {**os.environ, "TEXT2FX_SERVER_FILE": str(server.file)}
    done = subprocess.run([sys.executable, "-m", "text2fx", *args, "out/", "--server"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    names = ["in.airy.json", "in.airy.wav", "in.dark.json", "in.dark.wav"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names

    monkeypatch.chdir(tmp_path)
    assert main([*args, "local/"]) == 0  # the same job run here, on the same (random) CLAP weights
    local_out = capsys.readouterr().out
    for name in names[1::2]:
        served, _ = sf.read(tmp_path / "out" / name, dtype="float32")
        local, _ = sf.read(tmp_path / "local" / name, dtype="float32")
        np.testing.assert_allclose(served, local, atol=1e-4)  # the server may use another thread count
    lines = lambda text: [line.replace("local/", "out/") for line in text.splitlines()  # noqa: E731
                          if not line.startswith("done in")]
    assert lines(done.stdout) == lines(local_out) and "CLAP similarity" in done.stdout
    assert "(server http://127.0.0.1:" in done.stdout.splitlines()[-1]


@slow
def test_the_command_with_server_keeps_its_exit_codes(server, tmp_path):
    src = write_tone(tmp_path / "in.wav")
    env = {**os.environ, "TEXT2FX_SERVER_FILE": str(server.file)}
    run = lambda *a, **e: subprocess.run([sys.executable, "-m", "text2fx", *map(str, a)], cwd=tmp_path,  # noqa: E731
                                         env={**env, **e}, capture_output=True, text=True)
    cases = [
        (run(src, "dark", "--server", "--device", "cuda:7"), 2, "cuda:7"),  # the server refuses another device
        (run(tmp_path / "missing.wav", "dark", "--server"), 1, "input file not found"),
        (run(src, "dark", "--server", TEXT2FX_SERVER_FILE=str(tmp_path / "none.json")), 1, "no text2fx server"),
        (run(src, "dark", TEXT2FX_SERVER="1", TEXT2FX_SERVER_FILE=str(tmp_path / "none.json")), 1, "text2fx serve"),
    ]
    for done, code, words in cases:
        err = done.stderr.strip()
        assert done.returncode == code and words in err and one_line(err) and err.startswith("text2fx: error:"), err
    done = run(src, "dark", "--chain", "eq", "--quiet", *QUICK_ARGS, TEXT2FX_SERVER="1")
    assert done.returncode == 0 and done.stdout == "" and (tmp_path / "in.dark.wav").exists(), done.stderr


@slow
def test_the_client_imports_only_the_standard_library(server, tmp_path):
    src = write_tone(tmp_path / "in.wav")
    code = f"""
import sys
from text2fx.client import Client
results = Client(server_file={str(server.file)!r}).apply({str(src)!r}, "warm", chain="eq", steps=1, restarts=1)
print(results[0]["audio_path"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numpy", "soundfile", "transformers")
               or (m.startswith("text2fx.") and m not in ("text2fx.client", "text2fx.version")))
assert not heavy, heavy
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "in.warm.wav") and (tmp_path / "in.warm.wav").exists()


def test_no_server_is_one_clear_error(tmp_path):
    with pytest.raises(ServerUnavailable, match="no text2fx server is running"):
        Client(server_file=tmp_path / "none.json")
    (tmp_path / "stale.json").write_text(json.dumps({"url": "http://127.0.0.1:9", "token": "t", "pid": 1}))
    with pytest.raises(ServerUnavailable, match="no text2fx server answers"):
        Client(server_file=tmp_path / "stale.json").status()


# -- stopping ----------------------------------------------------------------------------------------------------

@slow
def test_ctrl_c_cancels_the_running_job_and_removes_the_server_file(tmp_path, clap_checkpoint, clap_tokenizer_dir):
    s = ServerProcess(tmp_path, clap_checkpoint, clap_tokenizer_dir, "--no-warmup")
    src = write_tone(tmp_path / "in.wav")
    events: list = []
    failed: dict = {}

    def submit():
        try:
            s.client().apply(src, "dark", chain="eq,reverb", output=tmp_path / "never.wav",
                             progress=lambda *a: events.append(a), **ENDLESS)
        except ServerError as e:
            failed["e"] = e

    thread = threading.Thread(target=submit)
    thread.start()
    while len(events) < 2:
        assert thread.is_alive() and s.proc.poll() is None, s.output()
        time.sleep(0.05)
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait() == 0, s.output()
    thread.join()
    assert failed["e"].status == 503 and failed["e"].kind == "stopping", failed
    assert "stopped" in s.output() and not s.file.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "serve.log"]


# -- units: no server, no model --------------------------------------------------------------------------------

@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("::ffff:127.0.0.1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.7", False), ("::ffff:192.0.2.7", False), ("example.org", False),
])
def test_loopback_addresses(host, loopback):
    from text2fx.server.app import is_loopback

    assert is_loopback(host) is loopback


def test_the_server_file_is_written_for_this_user_only_and_removed_only_if_ours(tmp_path):
    from text2fx.server.cli import remove_server_file, write_server_file

    path = tmp_path / "new" / "server.json"
    write_server_file(path, {"url": "http://127.0.0.1:1", "token": "mine", "pid": os.getpid()})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["server.json"]  # no temporary file left
    remove_server_file(path, "another server's")
    assert path.exists()
    remove_server_file(path, "mine")
    assert not path.exists()


@pytest.mark.parametrize("flag, env, expected", [
    (False, None, None),
    (False, "0", None),
    (True, None, (None, "default", False)),
    (False, "1", (None, "default", False)),
    (False, "auto", (None, "default", True)),
    (True, "auto", (None, "default", False)),  # an explicit --server never falls back
    (False, "http://127.0.0.1:5000", ("http://127.0.0.1:5000", "default", False)),
    (False, "/x/server.json", (None, "/x/server.json", False)),
])
def test_where_the_command_sends_its_job(monkeypatch, tmp_path, flag, env, expected):
    from text2fx.server.cli import server_target

    monkeypatch.setenv("TEXT2FX_SERVER_FILE", str(tmp_path / "default.json"))
    if env is None:
        monkeypatch.delenv("TEXT2FX_SERVER", raising=False)
    else:
        monkeypatch.setenv("TEXT2FX_SERVER", env)
    got = server_target(flag)
    if expected is None:
        assert got is None
    else:
        url, file, fallback = expected
        assert got == (url, tmp_path / "default.json" if file == "default" else Path(file), fallback)


def test_requests_build_the_commands_options(tmp_path):
    from text2fx.options import JobOptions
    from text2fx.server import protocol

    src = str(write_tone(tmp_path / "in.wav"))
    request = protocol.parse({"inputs": [src], "prompts": ["dark", "airy"], "chain": "eq", "steps": 7,
                              "patience": None, "seed": 5, "output": str(tmp_path) + "/out/", "max_batch": 4})
    assert request.kind == "paths" and request.engine == {"max_batch": 4}
    assert request.job.options == JobOptions(prompts=("dark", "airy"), chain="eq", seed=5,
                                             recipe_changes={"steps": 7, "patience": None})
    assert [p.audio for p in request.job.plans] == [tmp_path / "out" / "in.dark.wav", tmp_path / "out" / "in.airy.wav"]

    x = tone(channels=2)
    sent = protocol.parse({"audio": {"format": "float32", "sample_rate": 16000, "channels": 2,
                                     "data": base64.b64encode(x.T.astype("<f4").tobytes()).decode()},
                           "prompt": "dark"})
    assert sent.kind == "float32" and sent.job.plans is None
    np.testing.assert_array_equal(sent.job.sources[0].audio, x)

    for body, words in [
        ({"inputs": [src], "prompt": "dark", "prompts": ["x"]}, "not both"),
        ({"inputs": [src], "audio": {}, "prompt": "dark"}, "either inputs"),
        ({"audio": {"format": "float32", "data": "", "sample_rate": 16000}, "prompt": "dark", "output": "/x.wav"},
         "only for inputs given as paths"),
        ({"audio": {"format": "mp3", "data": ""}, "prompt": "dark"}, "format must be one of"),
        ({"audio": {"format": "float32", "data": "", "sample_rate": 16000, "rate": 1}, "prompt": "dark"},
         "unknown field 'rate'"),
        ({"inputs": [src], "prompt": "dark", "html": "page.html"}, "must be absolute"),
        ({"inputs": [src], "prompt": "   "}, "empty prompt"),
    ]:
        with pytest.raises(UsageError, match=words):
            protocol.parse(body)
