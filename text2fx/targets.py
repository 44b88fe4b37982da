"""What the optimizer pulls each result toward and pushes it away from: the seam between the options
(prompts, `like`, `avoid`) and the objective (`text2fx.optimize.layout.Objective`).

A goal is a prompt (its text embedding and anchor), a reference recording (`like`: an audio embedding of it),
or both, plus words to avoid (`avoid`: text embeddings). Every embedding comes from the job's `Embedder`
(`embed_text`, `embed_audio`), so the reference target works with any embedder, CLAP or not.

- Text and reference combine in the loss with weights `1 - like_weight` and `like_weight`:
  cosine `1 - [(1 - w) cos(a, t) + w cos(a, r)]`, directional
  `1 - [(1 - w) cos(a - x, t - n) + w cos(a - x, r - x)]` (`a`: processed audio, `x`: input audio, `t`: prompt,
  `n`: anchor, `r`: reference). Without a prompt the reference alone (`w = 1`); without `like` the text alone.
- Words to avoid add `avoid_weight * mean_i cos(a, v_i)` to either loss: a penalty on where the audio lands (not
  on which way it moved). With the cosine loss at weight 1 this is `1 - cos(a, t) + cos(a, v)`, the
  positive-minus-negative prompt score of guided search (FxSearcher's negative prompt).
- The reference's embedding is the L2-normalized mean of the embeddings of up to `REFERENCE_WINDOWS` windows of
  the embedder's length (10 s for CLAP): the loudest non-overlapping ones, chosen as the input's are
  (`text2fx.excerpts`); a reference shorter than one window is one window (the embedder pads it, CLAP by
  repetition). Any sample rate and channel count: the embedder resamples and mixes down as it does the input.

Imports numpy (through `inputs`), not torch, at module level: a job is checked without torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from text2fx import audio_io
from text2fx import inputs as inputs_
from text2fx.errors import InputError

if TYPE_CHECKING:
    import torch

# A long reference is heard through at most this many windows (the loudest, non-overlapping): enough to cover
# a song's verse, chorus and bridge at 10 s each, and one forward pass per window once per job.
REFERENCE_WINDOWS = 8


class Like:
    """A reference recording (`like`): a file or an array, checked when made, cut into windows on demand.

    Args:
        like: a path to an audio file, or `(audio, sample_rate)` with `audio` a `(channels, samples)` or
            `(samples,)` array (numpy or torch). Any rate in 8-192 kHz, any channel count, at least 0.1 s.

    Raises:
        InputError: a missing, unreadable, corrupt, too short array or file, with "reference" in the message.
    """

    def __init__(self, like):
        try:
            if isinstance(like, (str, os.PathLike)):
                self.source: inputs_.Source = inputs_.FileSource(audio_io.probe(Path(like)))
            else:
                audio, sample_rate = like
                self.source = inputs_.ArraySource(inputs_.as_audio(audio, sample_rate, "like"), int(sample_rate))
        except InputError as e:  # said of the reference, not of "input"
            text = str(e).replace("input file ", "file ").replace("input is ", "it is ")
            raise InputError(f"reference (like): {text}") from None
        self._prepared: dict[float, inputs_.Prepared] = {}

    @property
    def path(self) -> Path | None:
        return self.source.path

    @property
    def name(self) -> str:
        """What output names and messages call it: the file's stem, or "reference" for an array."""
        return self.path.stem if self.path is not None else "reference"

    def prepare(self, window_s: float = inputs_.CLAP_WINDOW_S) -> inputs_.Prepared:
        """The windows the reference is heard through (NaN/Inf and silence refused), once per window length."""
        if window_s not in self._prepared:
            what = f"reference {self.path}" if self.path is not None else "reference (like)"
            self._prepared[window_s] = inputs_.prepare(self.source, REFERENCE_WINDOWS, window_s, what=what)
        return self._prepared[window_s]

    def describe(self, window_s: float) -> dict:
        """The report's description of the reference (no similarity): path, rate, channels, frames, windows."""
        prep = self.prepare(window_s)
        sr = self.source.sample_rate
        return {"path": None if self.path is None else str(self.path), "sample_rate": sr,
                "channels": self.source.channels, "frames": self.source.frames,
                "windows_s": [o / sr for o in prep.offsets]}


def reference_embedding(embedder, like: Like) -> "torch.Tensor":
    """`(D,)` the embedder's view of the reference: the L2-normalized mean of its windows' audio embeddings.

    The windows are `like.prepare(window)` at the embedder's window length, embedded at the reference's own
    sample rate (`embed_audio` resamples and mixes down), on the embedder's device, without gradient.
    """
    import torch
    import torch.nn.functional as F

    prep = like.prepare(embedder.window_samples / embedder.sample_rate)
    clips = torch.from_numpy(prep.excerpts).to(embedder.device)
    with torch.no_grad():
        emb = embedder.embed_audio(clips, like.source.sample_rate)
    return F.normalize(emb.float().mean(0), dim=-1)


@dataclass(frozen=True)
class Targets:
    """What each of `N` targets (an input paired with a goal) optimizes toward. Embeddings are L2-normalized.

    Attributes:
        text: `(N, D)` prompt embeddings (template applied), or None when the goal has no prompt.
        anchor: `(N, D)` the directional loss's anchor texts, None exactly when `text` is.
        reference: `(N, D)` the reference recording's embedding (`like`), or None.
        like_weight: the reference term's weight in [0, 1]; the text term's is `1 - like_weight`. 1 without a
            prompt, 0 without a reference.
        avoid: `(A, D)` embeddings of the texts to avoid (shared by all targets), or None.
        avoid_weight: the avoid penalty's weight (0 without `avoid`).
    """

    text: "torch.Tensor | None" = None
    anchor: "torch.Tensor | None" = None
    reference: "torch.Tensor | None" = None
    like_weight: float = 0.0
    avoid: "torch.Tensor | None" = None
    avoid_weight: float = 0.0

    def __post_init__(self) -> None:
        if (self.text is None) != (self.anchor is None):
            raise ValueError("Targets: text and anchor go together")
        if self.text is None and self.reference is None:
            raise ValueError("Targets: a prompt (text) or a reference is needed")
        if self.reference is None:
            object.__setattr__(self, "like_weight", 0.0)
        elif self.text is None:
            object.__setattr__(self, "like_weight", 1.0)
        if self.avoid is None:
            object.__setattr__(self, "avoid_weight", 0.0)

    @property
    def text_weight(self) -> float:
        return 1.0 - self.like_weight

    def to(self, device) -> "Targets":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Targets(move(self.text), move(self.anchor), move(self.reference), self.like_weight, move(self.avoid),
                       self.avoid_weight)


@dataclass
class Goals:
    """A job's goals, embedded once: what `Targets` rows are taken from, and what reports measure against.

    Attributes:
        text, anchor: `(G, D)` per goal (prompt), or None when the job has no prompt (a `like` alone).
        reference: `(D,)` or None.
        avoid: `(A, D)` or None; `avoid_texts` what the text encoder read for each.
    """

    text: "torch.Tensor | None"
    anchor: "torch.Tensor | None"
    reference: "torch.Tensor | None"
    avoid: "torch.Tensor | None"
    avoid_texts: list[str] = field(default_factory=list)
    like_weight: float = 0.0
    avoid_weight: float = 0.0

    def targets(self, goal_index: Sequence[int]) -> Targets:
        """`Targets` for pairs whose goals are `goal_index`."""
        index = list(goal_index)
        ref = None if self.reference is None else self.reference[None].expand(len(index), -1)
        return Targets(
            None if self.text is None else self.text[index], None if self.anchor is None else self.anchor[index],
            ref, self.like_weight, self.avoid, self.avoid_weight,
        )

    @property
    def measured(self) -> bool:
        """Whether reports get similarities beyond the main one (to the reference, to each avoided text)."""
        return self.reference is not None or self.avoid is not None


def embed_goals(embedder, options, like: Like | None) -> Goals:
    """Embed a job's prompts (template applied), anchors, reference and avoided texts (template applied) with
    `embedder`. Texts too long for the embedder are refused (`check_texts`, when it has one)."""
    texts, anchors = options.texts(), options.anchors()
    avoid_texts = options.avoid_texts()
    every = texts + anchors + avoid_texts
    if hasattr(embedder, "check_texts") and every:
        embedder.check_texts(every)
    emb = embedder.embed_text(every) if every else None
    n = len(texts)
    text = emb[:n] if n else None
    anchor = emb[n : 2 * n] if n else None
    avoid = emb[2 * n :] if avoid_texts else None
    reference = reference_embedding(embedder, like) if like is not None else None
    return Goals(text, anchor, reference, avoid, avoid_texts, options.like_weight_value(), options.avoid_weight_value())


def measure(embedder, chain, clips: "torch.Tensor", sample_rate: int, units: Sequence["torch.Tensor | None"],
            goals: Goals, start: "torch.Tensor | None" = None) -> list[dict]:
    """Similarities to the reference and to each avoided text, of the input and of each setting in `units`.

    Args:
        clips: `(E, channels, samples)` the windows the optimizer heard, on the embedder's device.
        units: `(P,)` unit settings per result, or None for a result that leaves the input unchanged (bypass).
        start: `(P,)` unit settings the "before" is heard with (refining a previous turn), or None: the input.

    Returns:
        Per entry of `units`: {"like": {"before", "after"} or None, "avoid": [{"before", "after"}, ...] or None},
        each the cosine similarity averaged over the windows.
    """
    import torch
    import torch.nn.functional as F

    def sims(emb: torch.Tensor) -> tuple[float | None, list[float] | None]:
        ref = None if goals.reference is None else float(
            F.cosine_similarity(emb, goals.reference.to(emb)[None], dim=-1).mean())
        avoid = None if goals.avoid is None else F.cosine_similarity(
            emb[:, None, :], goals.avoid.to(emb)[None], dim=-1).mean(0).tolist()
        return ref, avoid

    mono = {"mono": True} if getattr(embedder, "mixes_to_mono", False) else {}

    def processed(u: torch.Tensor) -> torch.Tensor:
        batch = u.to(clips.device, clips.dtype)[None].expand(clips.shape[0], -1)
        return chain.process(clips, sample_rate, batch, **mono)

    out = []
    with torch.no_grad():
        before = sims(embedder.embed_audio(clips if start is None else processed(start), sample_rate).float())
        for u in units:
            after = before if u is None else sims(embedder.embed_audio(processed(u), sample_rate).float())
            out.append({
                "like": None if before[0] is None else {"before": before[0], "after": after[0]},
                "avoid": None if before[1] is None else [{"before": b, "after": a} for b, a in zip(before[1], after[1])],
            })
    return out


def like_of(options, page: bool = False) -> Like | None:
    """The job's reference (`options.like`) read and checked, or None. `page`: a report page is asked, which
    draws each result's prompt: refused for a reference without a prompt (the page has no such view yet)."""
    if options.like is None:
        return None
    if page and not options.prompts:
        from text2fx.errors import UsageError

        raise UsageError("the report page (--html) draws the prompt; with --like alone there is none: "
                         "add a prompt or leave out --html")
    like = Like(options.like)
    like.prepare()  # a silent or NaN reference is refused now, before any model work
    return like


def annotate(result, like: Like | None, options, window_s: float, measured: dict | None,
             choice: dict | None) -> None:
    """Record on `result` (a `text2fx.result.Result`) the reference, the avoided texts (with their measured
    similarities) and, with candidates, this one's rank: the report's `like`, `avoid` and `candidate` parts."""
    if like is not None:
        result.like = {**like.describe(window_s), "weight": options.like_weight_value(),
                       "similarity": None if measured is None else measured["like"]}
    if options.avoid:
        sims = [None] * len(options.avoid) if measured is None else measured["avoid"]
        result.avoid = {"weight": options.avoid_weight_value(), "texts": [
            {"avoid": a, "text": t, "similarity": s} for a, t, s in zip(options.avoid, options.avoid_texts(), sims)]}
    result.choice = choice
