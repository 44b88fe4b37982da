"""What a run returns: the processed audio (or where it was written), the settings and how they were found.

Its JSON report is built, written and read back by `text2fx.report`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from text2fx import report as report_
from text2fx.errors import InputError


@dataclass
class Result:
    """One input processed toward one prompt.

    Attributes:
        audio: `(channels, samples)` float32 at `sample_rate`, the whole input processed; None when the job
            wrote it to a file (`output_path`).
        sample_rate: Hz, the input's.
        params: the chain and its settings in physical units (`fx.Chain.to_dict` format).
        units: per effect, each parameter's unit.
        prompt: the words asked for; `text` is what the text encoder saw; `anchor` the directional anchor. All
            three None for a reference (`like`) without a prompt.
        history: loss at each optimization step of the kept candidate.
        similarity_before, similarity_after: cosine similarity of input / output audio to `text`;
            `similarity_after >= similarity_before` always (see `bypassed`).
        bypassed: no settings found beat the unprocessed input, so the settings are neutral and the output
            is the input (with the level policy applied).
        output_gain_db: gain the level policy applied (0 or negative).
        optimization: loss, steps, seed, learning rate... (see the report schema).
        checkpoint, device: the embedder's weights and where it ran.
        input: path (None for arrays), sample_rate, channels, frames of the input.
        output_path: where the audio was written, if it was.
        keep_length: whether the output was cut to the input's length (`JobOptions.keep_length`).
        output_frames: the output's length in frames: the input's plus `tail_frames`.
        tail_frames: frames the output rings on after the input ends (an effect's tail, e.g. a reverb's
            until it has decayed by 60 dB); 0 with `keep_length`, for a bypassed result, or a chain without
            a tail. The output's start is sample-aligned with the input's either way.
        histories: the loss at each step of every candidate (restart) of the optimization; `candidate` is
            the kept one's index and `candidate_kinds` each one's loss.
        embeddings: what the report page's map draws, recorded when asked (`--html`, `record=True`): CLAP
            embeddings of the prompt and anchor texts, the paper's prompts, the input and output audio, and
            the audio every few steps of the optimization (`path`, at `path_steps`). Not in the JSON report.
        source_audio: the input audio, kept when recording for a page (in-memory results).
        seconds: wall time of the run that made this result (all its results together).
        amount: the amount applied (`text2fx.amount`): `{"value", "found": settings at amount 1, "clamped"}`;
            `params` are the settings at that amount. None for a result built by hand.
        turns: the history of turns that led here (`text2fx.turns`), this one last; None for a result built
            by hand.
        like: the reference recording aimed at (`like`): path, rate, channels, frames, windows heard
            (`windows_s`), weight, and the similarity of the input and output to it (`{"before", "after"}`).
        avoid: the texts avoided: weight, and per text what was asked (`avoid`), what the text encoder read
            (`text`) and the similarity of the input and output to it.
        choice: with several candidates (`candidates=K`), this one's rank among them (1: the best), how many
            were found and asked, the least distance asked, its restart, and its distances to the others.
        candidates: with `candidates=K`, on the best result: all the distinct results found (itself first),
            each a `Result` with its own settings, audio and report (see `text2fx.candidates`).
    """

    audio: np.ndarray | None
    sample_rate: int
    params: dict
    units: list[dict]
    prompt: str
    text: str
    anchor: str | None
    history: list[float]
    similarity_before: float
    similarity_after: float
    output_gain_db: float
    optimization: dict
    checkpoint: str
    device: str
    input: dict | None = None
    output_path: str | None = None
    bypassed: bool = False
    keep_length: bool | None = None
    output_frames: int | None = None
    tail_frames: int | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    histories: list[list[float]] | None = field(default=None, repr=False)
    candidate: int | None = None
    candidate_kinds: list[str] | None = field(default=None, repr=False)
    embeddings: dict | None = field(default=None, repr=False)
    source_audio: np.ndarray | None = field(default=None, repr=False)
    seconds: float | None = None
    amount: dict | None = None
    turns: list[dict] | None = None
    like: dict | None = None
    avoid: dict | None = None
    choice: dict | None = None
    candidates: list["Result"] | None = field(default=None, repr=False, compare=False)  # holds self

    def save_html(self, path: str | os.PathLike, overwrite: bool = False, projection: str = "pca",
                  embed_audio: bool | None = None) -> Path:
        """Write the listening report page (see `text2fx.page.write_html`; for several results call that with
        a list): players with an A/B switch, spectrograms, the settings drawn, the optimization and the map of
        CLAP's space (when recorded: `record=True`)."""
        from text2fx.page import write_html

        return write_html([self], path, overwrite=overwrite, projection=projection, embed_audio=embed_audio)

    def plot(self, sample_rate: int | None = None):
        """A matplotlib figure of every effect's settings (EQ curve, reverb decay, ...), e.g. for a notebook."""
        from text2fx.plots import settings_figure

        return settings_figure(self.params, sample_rate or self.sample_rate, title=f"\u201c{self.prompt}\u201d")

    def report(self) -> dict:
        """The JSON-ready report (schema `text2fx.result/1`)."""
        return report_.to_json(self)

    def export(self, to: str, path: str | os.PathLike | None = None, **options):
        """These settings for other tools, as `text2fx export` writes them (see `text2fx.export.export`):
        ``to`` is ``"eqapo"``, ``"ir"``, ``"pedalboard"`` or ``"sos"``; with `path` the file is written (and
        its `Path` returned), without it the export is returned (text, impulse response, `pedalboard.Pedalboard`
        or dict). Options: ``sample_rate`` (default this result's, for sos 44100 and 48000), ``channels``,
        ``skip``, ``overwrite``."""
        from text2fx.export import export

        if to != "sos":
            options.setdefault("sample_rate", self.sample_rate)
        return export(self.params, to, path, **options)

    def save_report(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the report as JSON, atomically; an existing file only with `overwrite`."""
        from text2fx import outputs

        path = Path(path)
        outputs.check_target(path, [], overwrite)
        outputs.check_writable(path)
        return report_.write(path, self.report(), overwrite=overwrite)

    def save(self, path: str | os.PathLike, params: str | os.PathLike | None = None, *, subtype: str | None = None,
             overwrite: bool = False) -> tuple[Path, Path]:
        """Write the audio to `path` (format from its extension, e.g. .wav, .flac) and the report beside it
        (`params`, default `path` with .json), both atomically, as the command does. Every check runs before
        anything is written. Returns (audio path, report path)."""
        from text2fx import audio_io, outputs

        if self.audio is None:
            raise InputError("this result's audio was written to a file already "
                             f"({self.output_path}); it holds no audio to save")
        path = Path(path)
        params_path = Path(params) if params is not None else path.with_suffix(".json")
        inputs = [Path(self.input["path"])] if self.input and self.input.get("path") else []
        if path.suffix.lower() == ".json" or path.absolute() == params_path.absolute():
            raise InputError(f"output {path}: give an audio file name (e.g. .wav) distinct from the settings file")
        like = audio_io.AudioInfo(path, self.sample_rate, self.audio.shape[0], self.audio.shape[1], "", "FLOAT")
        for p in (path, params_path):
            outputs.check_target(p, inputs, overwrite)
        fmt, sub = audio_io.output_format(path, like, subtype)
        outputs.check_writable(path, like, fmt, sub)
        outputs.check_writable(params_path)
        try:
            audio_io.write(path, self.audio, self.sample_rate, fmt, sub)
        except (OSError, RuntimeError) as e:
            from text2fx.errors import OutputError

            raise OutputError(f"cannot write {path}: {audio_io.os_error_text(e, path)}") from None
        self.output_path = str(path)
        report_.write(params_path, self.report(), overwrite=True)
        return path, params_path
