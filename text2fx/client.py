"""Talk to a running `text2fx serve` from any Python, with the standard library only.

    from text2fx.client import Client
    results = Client().apply("in.wav", "warm", chain="eq,reverb")      # files on this machine
    results[0]["audio_path"], results[0]["report"]["similarity"]

    # audio held in memory (e.g. a DAW's buffer): interleaved float32 frames, or the bytes of an audio file
    out = Client().apply_audio(array("f", samples), "airy", sample_rate=48000, channels=2, chain="eq")
    out[0]["audio"]      # array("f"), interleaved, the whole input processed (plus the reverb's tail)

This module imports nothing outside the standard library (no numpy, no torch, nothing else from text2fx), so
a DAW's embedded Python can use it: install text2fx there, or copy this single file next to the script
(`import client` then works the same). The server is found through the file `text2fx serve` writes (its URL,
token and process id; readable by this user only): `server_file=`, else `$TEXT2FX_SERVER_FILE`, else
`$XDG_RUNTIME_DIR/text2fx/server.json`, else `~/.cache/text2fx/server.json`.

Wire format (HTTP + JSON, for clients in other languages): every request carries `Authorization: Bearer
TOKEN`. `GET /status` describes the server. `POST /jobs` takes a JSON object with the command's options
(`prompts` or `prompt`, `chain`, `preset`, `seed`, `loss`, `steps`, `lr`, `restarts`, `init`, `excerpts`,
`template`, `anchor`, `keep_length`, `max_batch`, any other `text2fx.recipe.Recipe` field; for path jobs also
`output`, `params`, `subtype`, `overwrite`, `html`; paths absolute; `embedder`, `device`, `precision`,
`checkpoint`, `tokenizer` must match the server's) and either `inputs` (absolute paths on the server's machine) or `audio` (one object or a
list): `{"format": "file", "data": BASE64 of an audio file's bytes, "name": "take.wav"}` or
`{"format": "float32", "data": BASE64 of little-endian float32 interleaved frames, "sample_rate": 48000,
"channels": 2}`. The answer: `{"results": [{"report": {...}, "audio_path": ..., "params_path": ...}],
"html": ..., "seconds": ..., "device": ...}`; for audio sent in the request each result holds `"audio"` in
the format it came in (a file of the same format, or float32 frames). With `Accept: application/x-ndjson` the
answer streams one JSON object a line: `{"event": "queued"|"started"|"progress", ...}`, then
`{"event": "done", "response": {...}}` or `{"event": "error", ...}`. Refusals are `{"error": "one line",
"kind": ...}` with status 400 (bad JSON, option or input: the command's message), 401 (token), 403 (another
host), 404, 411, 413 (body over the server's `--max-request-mb`), 503 (queue full, shutting down).
"""

from __future__ import annotations

import array
import base64
import http.client
import json
import math
import os
import sys
import urllib.parse
from pathlib import Path
from typing import Callable, Sequence

SERVER_FILE_ENV = "TEXT2FX_SERVER_FILE"
STREAM_TYPE = "application/x-ndjson"
# Keys whose values are paths on the server's machine: sent absolute, since the server has another working folder.
PATH_OPTIONS = ("output", "params", "checkpoint", "tokenizer", "like", "previous")

ProgressFn = Callable[[int, int, float, float], None]


class ServerError(Exception):
    """The server refused or failed a request. `status` is the HTTP status (0: no answer); `kind` is the
    server's class of error: "usage" (a bad option: the command exits 2), "input" (bad audio or paths),
    "auth", "forbidden", "too_large", "busy", "stopping", "runtime", "internal", or "unavailable" (no server)."""

    def __init__(self, message: str, status: int = 0, kind: str = "runtime"):
        super().__init__(message)
        self.status, self.kind = status, kind


class ServerUnavailable(ServerError):
    """No server is running (no server file, or nothing answers at its URL)."""

    def __init__(self, message: str):
        super().__init__(message, 0, "unavailable")


def default_server_file() -> Path:
    """Where `text2fx serve` writes its URL and token, and where clients look for it."""
    if os.environ.get(SERVER_FILE_ENV):
        return Path(os.environ[SERVER_FILE_ENV]).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "text2fx" / "server.json"
    return Path.home() / ".cache" / "text2fx" / "server.json"


def read_server_file(path: str | os.PathLike | None = None) -> dict:
    """The server file's contents (`url`, `token`, `pid`, ...); `ServerUnavailable` when there is none."""
    path = Path(path) if path is not None else default_server_file()
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ServerUnavailable(f"no text2fx server is running (no server file {path}); start one with "
                                f"`text2fx serve`") from None
    except (OSError, ValueError) as e:
        raise ServerUnavailable(f"cannot read the server file {path}: {e}") from None
    if not isinstance(info, dict) or not isinstance(info.get("url"), str) or not isinstance(info.get("token"), str):
        raise ServerUnavailable(f"the server file {path} holds no url and token")
    return info


class Client:
    """A connection to a running `text2fx serve` (each call is one HTTP request; a Client is cheap).

    Args:
        url: the server's URL, e.g. "http://127.0.0.1:8765"; default: the server file's.
        token: the server's token; default: the server file's.
        server_file: where to find the URL and token (see the module's docstring for the default).
        timeout: seconds to wait for the server to accept a connection and between answers; None: wait as
            long as a job takes (a job can take minutes).
    """

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 server_file: str | os.PathLike | None = None, timeout: float | None = None):
        self.server_file = Path(server_file) if server_file is not None else default_server_file()
        if url is None or token is None:
            info = read_server_file(self.server_file)
            url = url or info["url"]
            token = token or info["token"]
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ServerError(f"server url {url!r}: expected http://HOST:PORT", kind="usage")
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self._host, self._port = parts.hostname, parts.port or 80

    # -- the API ---------------------------------------------------------------------------------------------

    def status(self) -> dict:
        """The server's state: version, pid, device, checkpoint, running and queued jobs, limits."""
        return self._request("GET", "/status")

    def apply(self, inputs: str | os.PathLike | Sequence[str | os.PathLike], prompt: str | Sequence[str],
              chain: str | None = "eq,reverb", *, progress: ProgressFn | None = None, **options) -> list[dict]:
        """Process audio files on this machine as `text2fx` (and `Engine.apply_files`) does: the server reads
        them and writes each result's audio and JSON report (beside the input, or at `output`).

        Args:
            inputs: a path or a list of paths (relative ones are taken from this process's working folder).
            prompt: the words, or a list of prompts (every input with every prompt).
            chain: effects in order, e.g. "eq,reverb".
            progress: called as `progress(step, steps, loss, best_loss)` while the job runs.
            **options: the command's options by their Python names: output, params, subtype, overwrite, html,
                preset, seed, loss, steps, lr, restarts, init, excerpts, template, anchor, keep_length,
                max_batch (and any `Recipe` field).

        Returns:
            One dict per (input, prompt), input-major: `report` (the JSON report), `audio_path`, `params_path`.
        """
        paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        request = {"inputs": [os.path.abspath(p) for p in paths], **self._job_fields(prompt, chain, options)}
        return self.submit(request, progress)["results"]

    def apply_audio(self, audio, prompt: str | Sequence[str], chain: str | None = "eq,reverb", *,
                    sample_rate: int | None = None, channels: int = 1, name: str | None = None,
                    progress: ProgressFn | None = None, **options) -> list[dict]:
        """Process audio sent in the request; the results come back in the same form.

        Args:
            audio: with `sample_rate`: samples as interleaved float32 frames (`array("f")`, a sequence of
                floats, or little-endian float32 bytes; for a numpy `(channels, samples)` array pass
                `x.T.astype("<f4").tobytes()`). Without `sample_rate`: the bytes of an audio file (WAV, FLAC,
                ...); `name` (e.g. "take.flac") names it in the report.
            sample_rate: Hz, for samples.
            channels: channel count of interleaved samples.
            **options: as `apply`, except the output paths (subtype applies to a file's format).

        Returns:
            One dict per prompt: `report`, and `audio`: interleaved `array("f")` with `sample_rate` and
            `channels` for samples, or the processed file's `bytes` (same format as the input unless
            `subtype` says otherwise) and its `name`.
        """
        item = _audio_item(audio, sample_rate, channels, name)
        request = {"audio": item, **self._job_fields(prompt, chain, options)}
        results = self.submit(request, progress)["results"]
        for r in results:
            a = r["audio"]
            data = base64.b64decode(a["data"])
            if a["format"] == "float32":
                samples = array.array("f")
                samples.frombytes(data)
                if sys.byteorder != "little":
                    samples.byteswap()
                r.update(audio=samples, sample_rate=a["sample_rate"], channels=a["channels"])
            else:
                r.update(audio=data, name=a.get("name"))
        return results

    def submit(self, request: dict, progress: ProgressFn | None = None) -> dict:
        """Send one job (the wire format in the module's docstring) and return the server's answer; with
        `progress`, the answer streams and `progress(step, steps, loss, best)` is called as the job runs."""
        if progress is None:
            return self._request("POST", "/jobs", request)
        return self._request("POST", "/jobs", request, on_event=lambda e: _progress_event(e, progress))

    # -- plumbing --------------------------------------------------------------------------------------------

    @staticmethod
    def _job_fields(prompt, chain, options: dict) -> dict:
        fields = {"chain": chain}
        if prompt is not None:  # None: no prompt (e.g. only a reference to match, like=...)
            fields["prompts"] = [prompt] if isinstance(prompt, str) else list(prompt)
        for key, value in options.items():
            if key in PATH_OPTIONS and isinstance(value, (str, os.PathLike)):
                value = _absolute(value)
            elif key == "html" and isinstance(value, (str, os.PathLike)) and not isinstance(value, bool):
                value = _absolute(value)
            fields[key] = value
        return fields

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _request(self, method: str, path: str, body: dict | None = None, on_event=None) -> dict:
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if on_event is not None:
            headers["Accept"] = STREAM_TYPE
        conn = self._connection()
        try:
            try:
                conn.request(method, path, body=data, headers=headers)
            except ConnectionRefusedError:
                raise ServerUnavailable(f"no text2fx server answers at {self.url} (is `text2fx serve` running? "
                                        f"server file: {self.server_file})") from None
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server refused the body before reading it all (e.g. too large): its answer says why
            except OSError as e:
                raise ServerUnavailable(f"cannot reach the text2fx server at {self.url}: {e}") from None
            try:
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                size = f" ({len(data) / 2**20:.1f} MB sent)" if data else ""
                raise ServerError(f"the text2fx server at {self.url} closed the connection without an answer"
                                  f"{size}: {e or type(e).__name__}", kind="runtime") from None
            if response.getheader("Content-Type", "").startswith(STREAM_TYPE):
                return _read_stream(response, on_event)
            payload = response.read()
            try:
                answer = json.loads(payload.decode("utf-8"))
            except ValueError:
                raise ServerError(f"the server at {self.url} answered {response.status} with no JSON",
                                  response.status, "internal") from None
            if response.status != 200:
                raise ServerError(answer.get("error", f"HTTP {response.status}"), response.status,
                                  answer.get("kind", "runtime"))
            return answer
        finally:
            conn.close()


def _read_stream(response, on_event) -> dict:
    """Read a streamed answer (one JSON event a line) up to its "done" or "error" event."""
    while True:
        line = response.readline()
        if not line:
            raise ServerError("the text2fx server closed the connection before the job finished", 0, "runtime")
        event = json.loads(line.decode("utf-8"))
        kind = event.get("event")
        if kind == "done":
            return event["response"]
        if kind == "error":
            raise ServerError(event.get("error", "error"), event.get("status", 500), event.get("kind", "runtime"))
        on_event(event)


def _progress_event(event: dict, progress: ProgressFn) -> None:
    if event.get("event") == "progress":
        nan = math.nan
        loss, best = event.get("loss"), event.get("best")
        progress(event["step"], event["steps"], nan if loss is None else loss, nan if best is None else best)


def _absolute(path) -> str:
    text = os.fspath(path)
    # a folder's trailing separator means "a folder"; abspath would drop it
    return os.path.abspath(text) + (os.sep if text.endswith(("/", os.sep)) else "")


def _audio_item(audio, sample_rate, channels, name) -> dict:
    if sample_rate is None:
        if not isinstance(audio, (bytes, bytearray, memoryview)):
            raise ServerError("audio: without sample_rate, give the bytes of an audio file (WAV, FLAC, ...)",
                              kind="usage")
        item = {"format": "file", "data": base64.b64encode(bytes(audio)).decode("ascii")}
        if name is not None:
            item["name"] = os.path.basename(os.fspath(name))
        return item
    if isinstance(audio, (bytes, bytearray, memoryview)):
        raw = bytes(audio)
    else:
        samples = audio if isinstance(audio, array.array) and audio.typecode == "f" else array.array("f", audio)
        if sys.byteorder != "little":
            samples = array.array("f", samples)
            samples.byteswap()
        raw = samples.tobytes()
    return {"format": "float32", "data": base64.b64encode(raw).decode("ascii"), "sample_rate": sample_rate,
            "channels": channels}
