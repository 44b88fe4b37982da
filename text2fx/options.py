"""What a job asks for, checked once: the options layer shared by the command line and the Python API.

`JobOptions` (prompts, chain, recipe, seed, template, anchor, keep_length), `EngineOptions` (model files, device,
precision, batch size) and `OutputOptions` (where results are written) are frozen values whose constructors
check every field and raise `UsageError` (an `InputError`) with a one-line message. The CLI builds them from its arguments and
`Engine` from its keyword arguments, so both doors refuse the same things with the same words.

This module imports neither torch nor numpy: a usage error costs no model load and no heavy import.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from text2fx.checks import integer
from text2fx.errors import InputError, UsageError
from text2fx.recipe import PRESETS, Recipe

DEFAULT_CHAIN = "eq,reverb"
DEFAULT_TEMPLATE = "this sound is {prompt}"
# The paper's code contrasts each prompt with its negation for the directional loss.
DEFAULT_ANCHOR = "this sound is not {prompt}"
PRESET_NAMES = ("auto", *PRESETS)
PRECISIONS = ("float32", "bfloat16")
# What hears the audio: the CLAP model, or acoustic features (`text2fx.features`: reference matching only).
EMBEDDERS = ("clap", "features")
NO_TEXT_MESSAGE = ("the 'features' embedder has no text side: it cannot read a prompt or --avoid texts; give a "
                   "reference recording to match (--like REF.wav) instead, or use --embedder clap")
DEVICE_TYPES = ("cpu", "cuda", "mps")
DEFAULT_MAX_BATCH = 16
# --like / --avoid / --candidates (see README "Shape the result" and text2fx.targets / text2fx.candidates).
# A reference and a prompt pull equally by default.
DEFAULT_LIKE_WEIGHT = 0.5
# Half the prompt's pull: prompt and avoided texts share the template ("this sound is ...") and often a topic,
# so their CLAP embeddings are close; at weight 1 the push can cancel the prompt's pull and stall the search.
DEFAULT_AVOID_WEIGHT = 0.5
MAX_AVOID_WEIGHT = 10.0
# RMS difference of two candidates' unit-space settings (each parameter's range is 0..1, frequencies on a log
# scale): 0.1 is a tenth of every range on average, a change one hears; random restarts start ~0.4 apart.
DEFAULT_CANDIDATE_DISTANCE = 0.1
MAX_CANDIDATES = 8

# fx's built-in effects, spelled out so that a typo in a chain is reported without importing torch (a test
# keeps this equal to fx's registry). Effects a script registers itself are known once fx is imported.
BUILTIN_EFFECTS = ("compressor", "distortion", "eq", "gain", "reverb")


def add_model_file_arguments(parser) -> None:
    """`--clap-ckpt` and `--tokenizer`, worded alike by every command that loads CLAP (main, batch, serve)."""
    parser.add_argument("--clap-ckpt", metavar="PATH", help="CLAP checkpoint file (else $TEXT2FX_CLAP_CKPT, else "
                        "the cached/downloaded 630k-audioset-best.pt)")
    parser.add_argument("--tokenizer", metavar="DIR", help="folder with roberta-base vocab.json and merges.txt "
                        "(else $TEXT2FX_CLAP_TOKENIZER, else cached/downloaded)")


def _usage(check, *args):
    """`check(*args)`, its `InputError` raised as a `UsageError`."""
    try:
        return check(*args)
    except UsageError:
        raise
    except InputError as e:
        raise UsageError(str(e)) from None


def seed_value(value, name: str = "seed") -> int:
    """A seed: an integer that fits in 64 bits (signed)."""
    number = _usage(integer, value, name)
    if not -(2**63) <= number < 2**63:
        raise UsageError(f"{name} must fit in 64 bits, got {number}")
    return number


def sample_rate_value(value, name: str = "sample_rate") -> int:
    """A sample rate in whole Hz; 44100.0 is accepted, 44100.7 and None are not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{name} must be a whole number of Hz, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if not (math.isfinite(value) and float(value).is_integer()):
        raise UsageError(f"{name} must be a whole number of Hz, got {value!r}")
    return int(value)


def prompts_value(prompts, what: str = "prompt") -> tuple[str, ...]:
    """One prompt or a sequence of them, stripped; refuses none, empty ones and non-strings. (`what`: the
    option's name in messages, e.g. "avoid".)"""
    if isinstance(prompts, str):
        prompts = [prompts]
    if prompts is None or not isinstance(prompts, (list, tuple)):
        hint = " (or, for no prompt, a reference recording: like)" if what == "prompt" and prompts is None else ""
        raise UsageError(f"{what} must be a string or a list of strings, got {type(prompts).__name__}{hint}")
    if not prompts:
        raise UsageError(f"no {what} given: describe the sound you want, e.g. \"warm and bright\"")
    out = []
    for p in prompts:
        if not isinstance(p, str):
            raise UsageError(f"{what} must be a string, got {type(p).__name__} {p!r}")
        if not p.strip():
            hint = "describe the sound you want, e.g. \"warm and bright\"" if what == "prompt" else "give a text"
            raise UsageError(f"empty {what}: {hint}")
        out.append(p.strip())
    return tuple(out)


def weight_value(value, name: str, maximum: float, open_top: bool = False) -> float:
    """A positive finite number up to `maximum` (below it, with `open_top`)."""
    from text2fx.checks import real

    number = _usage(real, value, name)
    if number <= 0 or number > maximum or (open_top and number == maximum):
        top = f"below {maximum:g}" if open_top else f"at most {maximum:g}"
        raise UsageError(f"{name} must be above 0 and {top}, got {number:g}")
    return number


def check_like(like) -> None:
    """The outline of a reference (`like`): a path, or `(audio, sample_rate)`; the audio itself is read and
    checked when a job is built (`text2fx.targets.Like`)."""
    if isinstance(like, (str, Path)):
        if not str(like):
            raise UsageError("like is empty: give a reference audio file")
        return
    if isinstance(like, tuple) and len(like) == 2 and hasattr(like[0], "shape"):
        sample_rate_value(like[1], "like: sample_rate")
        return
    raise UsageError(f"like must be an audio file's path or (audio, sample_rate), got {type(like).__name__}")


def known_effects() -> list[str]:
    fx = sys.modules.get("fx")
    return sorted(set(BUILTIN_EFFECTS) | set(fx.available_effects() if fx is not None else ()))


def chain_value(spec) -> str:
    """A chain spec, canonical ("eq, reverb" -> "eq,reverb"); names must be known effects."""
    if not isinstance(spec, str):
        raise UsageError(f"chain must be a string such as 'eq,reverb', got {type(spec).__name__}")
    names = [n.strip() for n in spec.split(",")]
    if not all(names):
        raise UsageError(f"chain {spec!r}: name effects separated by commas, e.g. eq,reverb")
    known = known_effects()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown effect {unknown[0]!r} in chain {spec!r}; available: {', '.join(known)}")
    return ",".join(names)


def text_value(text, what: str, needs_prompt: bool) -> str:
    """A template or anchor: a string whose only placeholder is {prompt}."""
    if not isinstance(text, str):
        raise UsageError(f"{what} must be a string, got {type(text).__name__}")
    try:
        text.format(prompt="x")
    except (KeyError, IndexError, ValueError):
        raise UsageError(f"{what} {text!r}: the only placeholder allowed is {{prompt}}") from None
    if needs_prompt and "{prompt}" not in text:
        raise UsageError(f"{what} {text!r} must contain {{prompt}}, where the prompt goes")
    if not text.format(prompt="x").strip():
        raise UsageError(f"{what} {text!r} is empty")
    return text


def device_value(device) -> str | None:
    """A device name: cpu, cuda, cuda:N or mps (None: the best available). Availability is checked by
    `text2fx.devices.resolve`, which needs torch."""
    if device is None:
        return None
    name = str(device) if type(device).__name__ == "device" else device
    if not isinstance(name, str):
        raise UsageError(f"device must be a string such as 'cuda', got {type(device).__name__}")
    kind, _, index = name.partition(":")
    if kind not in DEVICE_TYPES or (index and not (kind == "cuda" and index.isdigit())):
        raise UsageError(f"unknown device {name!r}; choose cpu, cuda, cuda:N or mps")
    return name


def flag_value(value, name: str) -> bool:
    """A True/False option; 1, "yes" and None are refused (a typo must not silently pick a behaviour)."""
    if not isinstance(value, bool):
        raise UsageError(f"{name} must be True or False, got {value!r}")
    return value


def choice(value, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UsageError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class JobOptions:
    """What to optimize toward and how.

    Attributes:
        prompts: the words; every input is paired with every prompt.
        chain: effect chain spec, e.g. "eq", "reverb", "eq,reverb", "eq,compressor,reverb".
        preset: "auto", "default", "paper", "fast" or "random" (see `text2fx.recipe.PRESETS`).
        recipe_changes: single `Recipe` fields overriding the preset's (steps, lr, loss, restarts, ...).
        seed: makes the run reproducible; also seeds the reverb's noise.
        template: how a prompt is phrased for the text encoder (`{prompt}` is replaced).
        anchor: the directional loss's contrasting text (`{prompt}` is replaced).
        keep_length: render each output with its input's length. False (the default): an output whose chain
            has a tail (a reverb) is longer than its input by that tail (until it has decayed by 60 dB,
            bounded by the effect's own maximum; see `text2fx.rendering`); its start stays sample-aligned
            with the input either way. A bypassed result has no tail.
        amount: how much of the found effect to apply, -2 to 2 (`text2fx.amount`): 1 the found settings, 0
            the input unchanged (bit-exact), between: each "move" parameter moved from neutral toward the
            found value; negative values invert gains (EQ, gain chains only).
        previous: refine in turns (`text2fx.turns`): the settings a previous turn left (a report or chain
            dict, a JSON path or a `Result`), read and checked here; the optimizer starts from them and
            hears them as the "before". None: start from scratch. With it, `chain` None means the previous
            settings' chain; a longer chain is allowed, whose extra effects start neutral.
        avoid: texts to avoid (template applied, like prompts): the loss also pushes away from them (see
            `text2fx.targets`). avoid_weight: that push's weight (None: `DEFAULT_AVOID_WEIGHT`).
        like: a reference recording as the target (`text2fx.targets.Like`): an audio file's path or
            `(audio, sample_rate)`; read and checked when the job is built. With `like`, prompts may be empty.
            like_weight: the reference's weight against a prompt's, in (0, 1) (None: `DEFAULT_LIKE_WEIGHT`).
        candidates: how many distinct results to give per input and goal (`text2fx.candidates`), at most
            `MAX_CANDIDATES`. candidate_distance: how far apart (RMS difference of the unit-space settings)
            two candidates must be (None: `DEFAULT_CANDIDATE_DISTANCE`).
    """

    prompts: tuple[str, ...]
    chain: str | None = DEFAULT_CHAIN
    preset: str = "auto"
    recipe_changes: dict = field(default_factory=dict)
    seed: int = 0
    template: str = DEFAULT_TEMPLATE
    anchor: str = DEFAULT_ANCHOR
    keep_length: bool = False
    amount: float = 1.0
    previous: Any = None
    avoid: tuple[str, ...] = ()
    avoid_weight: float | None = None
    like: Any = field(default=None, compare=False)
    like_weight: float | None = None
    candidates: int = 1
    candidate_distance: float | None = None

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        no_prompt = self.like is not None and (self.prompts is None or self.prompts in ((), []))
        set_("prompts", () if no_prompt else prompts_value(self.prompts))
        set_("candidates", _usage(integer, self.candidates, "candidates", 1))  # before self.recipe uses it
        from text2fx import amount as amount_, turns

        set_("amount", amount_.amount_value(self.amount))
        set_("previous", turns.previous_value(self.previous))
        if self.chain is None and self.previous is not None:
            set_("chain", self.previous.chain)
        set_("chain", chain_value(self.chain))
        if self.previous is not None:
            turns.check_chain(self.previous, self.chain)
        set_("preset", choice(self.preset, "preset", PRESET_NAMES))
        set_("recipe_changes", dict(self.recipe_changes))
        _usage(self.recipe, "default")  # checks every change against the Recipe's own rules
        set_("seed", seed_value(self.seed))
        set_("template", text_value(self.template, "template", needs_prompt=True))
        set_("anchor", text_value(self.anchor, "anchor", needs_prompt=False))
        flag_value(self.keep_length, "keep_length")
        self._check_shaping(set_)

    def _check_shaping(self, set_) -> None:
        """avoid, like and candidates, with their weights and distance."""
        avoid = self.avoid
        if avoid is None:
            avoid = ()
        set_("avoid", () if isinstance(avoid, (list, tuple)) and not avoid else prompts_value(avoid, "avoid"))
        if self.avoid_weight is not None:
            if not self.avoid:
                raise UsageError("avoid_weight is set but there is nothing to avoid: give avoid texts (--avoid TEXT)")
            set_("avoid_weight", weight_value(self.avoid_weight, "avoid_weight", MAX_AVOID_WEIGHT))
        if self.like is not None:
            check_like(self.like)
        if self.like_weight is not None:
            if self.like is None:
                raise UsageError("like_weight is set but there is no reference: give one with --like REF.wav")
            if not self.prompts:
                raise UsageError("like_weight weighs the reference against a prompt; without a prompt the "
                                 "reference is the whole target: give a prompt or drop like_weight")
            set_("like_weight", weight_value(self.like_weight, "like_weight", 1.0, open_top=True))
        if self.candidates > MAX_CANDIDATES:
            raise UsageError(f"candidates must be at most {MAX_CANDIDATES}, got {self.candidates}")
        restarts = self.recipe_changes.get("restarts")
        if restarts is not None and self.candidates > restarts:
            raise UsageError(f"candidates {self.candidates} needs at least as many restarts, got restarts {restarts} "
                             f"(leave restarts unset and it is raised to {2 * self.candidates})")
        if self.candidate_distance is not None:
            if self.candidates == 1:
                raise UsageError("candidate_distance is set but only one result is asked: give candidates >= 2")
            set_("candidate_distance", weight_value(self.candidate_distance, "candidate_distance", 1.0))

    def recipe(self, preset: str) -> Recipe:
        """The recipe for a resolved preset name (not "auto"), with this job's changes. With candidates and
        no restarts given, restarts are raised to at least twice the candidates asked (near-duplicates are
        dropped, so more restarts than candidates are needed to find that many distinct ones)."""
        changes = dict(self.recipe_changes)
        if self.candidates > 1 and "restarts" not in changes:
            changes["restarts"] = max(Recipe.from_preset(preset).restarts, 2 * self.candidates)
        return Recipe.from_preset(preset, **changes)

    @property
    def goals(self) -> tuple[str | None, ...]:
        """What each result aims at: the prompts, or `(None,)` for a reference (`like`) without a prompt."""
        return self.prompts if self.prompts else (None,)

    def avoid_texts(self) -> list[str]:
        """What the text encoder reads for each text to avoid (the template applied, as to prompts)."""
        return [self.template.format(prompt=a) for a in self.avoid]

    def like_weight_value(self) -> float:
        """The reference's weight in the loss: 0 without `like`, 1 without a prompt, else `like_weight`."""
        if self.like is None:
            return 0.0
        if not self.prompts:
            return 1.0
        return DEFAULT_LIKE_WEIGHT if self.like_weight is None else self.like_weight

    def avoid_weight_value(self) -> float:
        """The avoid penalty's weight: 0 without `avoid`, else `avoid_weight`."""
        if not self.avoid:
            return 0.0
        return DEFAULT_AVOID_WEIGHT if self.avoid_weight is None else self.avoid_weight

    def candidate_distance_value(self) -> float:
        return DEFAULT_CANDIDATE_DISTANCE if self.candidate_distance is None else self.candidate_distance

    def texts(self) -> list[str]:
        """What the text encoder reads for each prompt."""
        return [self.template.format(prompt=p) for p in self.prompts]

    def anchors(self) -> list[str]:
        return [self.anchor.format(prompt=p) for p in self.prompts]

    @property
    def chain_seed(self) -> int:
        """The seed of the chain's noise (the reverb's): `seed`, or with `previous` the previous settings'
        own, so the sound a refinement starts from is exactly the one the previous turn left."""
        return self.seed if self.previous is None else self.previous.seed


@dataclass(frozen=True)
class EngineOptions:
    """How to load the model: which embedder, files, device, precision, and the most clips optimized at once.

    `embedder`: "clap" (the default: the CLAP model, words and audio) or "features" (`text2fx.features`:
    acoustic features, audio only, for matching a reference recording; it has no model files, so
    `checkpoint`, `tokenizer` and `precision` do not apply to it).
    """

    checkpoint: str | None = None
    tokenizer: str | None = None
    device: str | None = None
    precision: str | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    cuda_graphs: bool = True
    embedder: str = "clap"

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        choice(self.embedder, "embedder", EMBEDDERS)
        if self.embedder == "features":
            given = [n for n in ("checkpoint", "tokenizer") if getattr(self, n) is not None]
            if self.precision not in (None, "float32"):
                given.append("precision")
            if given:
                raise UsageError(f"{given[0]} applies to the CLAP model; the 'features' embedder has no model files")
        for name in ("checkpoint", "tokenizer"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, Path)):
                raise UsageError(f"{name} must be a path, got {type(value).__name__}")
        set_("device", device_value(self.device))
        if self.precision is not None:
            choice(self.precision, "precision", PRECISIONS)
        set_("max_batch", _usage(integer, self.max_batch, "max_batch", 1))
        flag_value(self.cuda_graphs, "cuda_graphs")


def check_text_side(job: JobOptions, engine: EngineOptions) -> None:
    """Words (prompts, texts to avoid) need an embedder that reads text: refused for "features"."""
    if engine.embedder == "features" and (job.prompts or job.avoid):
        raise UsageError(NO_TEXT_MESSAGE)


@dataclass(frozen=True)
class OutputOptions:
    """Where a file job writes.

    Attributes:
        output: an audio file (one input and one prompt), or a folder (an existing one, or a path ending in
            '/'); None: beside each input.
        params: the settings file, for one input and one prompt (default: the audio path with .json).
        subtype: sample format of the audio, e.g. PCM_16, PCM_24, FLOAT (default: the input's).
        overwrite: replace existing files.
        html: also write the report page (`text2fx.page`): True for the default place (one result: the
            audio path with .html; several: `text2fx-report.html` in the output folder, or beside the first
            input), or a path ending in .html. None/False: no page.
    """

    output: str | None = None
    params: str | None = None
    subtype: str | None = None
    overwrite: bool = False
    html: str | bool | None = None

    def __post_init__(self) -> None:
        if self.html is not None and not isinstance(self.html, (bool, str, Path)):
            raise UsageError(f"html must be True or a path ending in .html, got {type(self.html).__name__}")
        if isinstance(self.html, (str, Path)) and Path(self.html).suffix.lower() not in (".html", ".htm"):
            raise UsageError(f"html {str(self.html)!r}: the page's name must end in .html")
        for name in ("output", "params", "subtype"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, Path)):
                raise UsageError(f"{name} must be a path, got {type(value).__name__}")
            if value is not None and not str(value):
                raise UsageError(f"{name} is empty")
        flag_value(self.overwrite, "overwrite")


def replace(options, **changes):
    """A copy of an options value with `changes`, checked again."""
    return dataclasses.replace(options, **changes)
