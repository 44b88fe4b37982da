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

from text2fx.checks import integer
from text2fx.errors import InputError, UsageError
from text2fx.recipe import PRESETS, Recipe

DEFAULT_CHAIN = "eq,reverb"
DEFAULT_TEMPLATE = "this sound is {prompt}"
# The paper's code contrasts each prompt with its negation for the directional loss.
DEFAULT_ANCHOR = "this sound is not {prompt}"
PRESET_NAMES = ("auto", *PRESETS)
PRECISIONS = ("float32", "bfloat16")
DEVICE_TYPES = ("cpu", "cuda", "mps")
DEFAULT_MAX_BATCH = 16

# fx's built-in effects, spelled out so that a typo in a chain is reported without importing torch (a test
# keeps this equal to fx's registry). Effects a script registers itself are known once fx is imported.
BUILTIN_EFFECTS = ("compressor", "distortion", "eq", "gain", "reverb")


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


def prompts_value(prompts) -> tuple[str, ...]:
    """One prompt or a sequence of them, stripped; refuses none, empty ones and non-strings."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if prompts is None or not isinstance(prompts, (list, tuple)):
        raise UsageError(f"prompt must be a string or a list of strings, got {type(prompts).__name__}")
    if not prompts:
        raise UsageError("no prompt given: describe the sound you want, e.g. \"warm and bright\"")
    out = []
    for p in prompts:
        if not isinstance(p, str):
            raise UsageError(f"prompt must be a string, got {type(p).__name__} {p!r}")
        if not p.strip():
            raise UsageError("empty prompt: describe the sound you want, e.g. \"warm and bright\"")
        out.append(p.strip())
    return tuple(out)


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
        preset: "auto", "default", "paper" or "fast" (see `text2fx.recipe.PRESETS`).
        recipe_changes: single `Recipe` fields overriding the preset's (steps, lr, loss, restarts, ...).
        seed: makes the run reproducible; also seeds the reverb's noise.
        template: how a prompt is phrased for the text encoder (`{prompt}` is replaced).
        anchor: the directional loss's contrasting text (`{prompt}` is replaced).
        keep_length: render each output with its input's length. False (the default): an output whose chain
            has a tail (a reverb) is longer than its input by that tail (until it has decayed by 60 dB,
            bounded by the effect's own maximum; see `text2fx.rendering`); its start stays sample-aligned
            with the input either way. A bypassed result has no tail.
    """

    prompts: tuple[str, ...]
    chain: str = DEFAULT_CHAIN
    preset: str = "auto"
    recipe_changes: dict = field(default_factory=dict)
    seed: int = 0
    template: str = DEFAULT_TEMPLATE
    anchor: str = DEFAULT_ANCHOR
    keep_length: bool = False

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        set_("prompts", prompts_value(self.prompts))
        set_("chain", chain_value(self.chain))
        set_("preset", choice(self.preset, "preset", PRESET_NAMES))
        set_("recipe_changes", dict(self.recipe_changes))
        _usage(self.recipe, "default")  # checks every change against the Recipe's own rules
        set_("seed", seed_value(self.seed))
        set_("template", text_value(self.template, "template", needs_prompt=True))
        set_("anchor", text_value(self.anchor, "anchor", needs_prompt=False))
        flag_value(self.keep_length, "keep_length")

    def recipe(self, preset: str) -> Recipe:
        """The recipe for a resolved preset name (not "auto"), with this job's changes."""
        return Recipe.from_preset(preset, **self.recipe_changes)

    def texts(self) -> list[str]:
        """What the text encoder reads for each prompt."""
        return [self.template.format(prompt=p) for p in self.prompts]

    def anchors(self) -> list[str]:
        return [self.anchor.format(prompt=p) for p in self.prompts]


@dataclass(frozen=True)
class EngineOptions:
    """How to load the model: files, device, precision, and the most clips optimized at once."""

    checkpoint: str | None = None
    tokenizer: str | None = None
    device: str | None = None
    precision: str | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    cuda_graphs: bool = True

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        for name in ("checkpoint", "tokenizer"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, Path)):
                raise UsageError(f"{name} must be a path, got {type(value).__name__}")
        set_("device", device_value(self.device))
        if self.precision is not None:
            choice(self.precision, "precision", PRECISIONS)
        set_("max_batch", _usage(integer, self.max_batch, "max_batch", 1))
        flag_value(self.cuda_graphs, "cuda_graphs")


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
