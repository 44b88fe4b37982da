"""Text2FX: text-guided audio effects.

    import text2fx
    engine = text2fx.Engine()                       # loads CLAP once; keep it around
    result = engine.apply(audio, 48000, "warm and bright", chain="eq,reverb")
    result.save("vocal.warm.wav")                   # audio + its settings (vocal.warm.json), as the command writes
    again = text2fx.render(other_audio, 44100, result.report())
    engine.apply_files(["a.wav", "b.wav"], ["dark", "airy"], output="out/")   # the command's file job

Importing this package is cheap: torch and the models load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from text2fx.version import __version__

__all__ = ["Engine", "Result", "Recipe", "PRESETS", "apply", "render", "Text2FXError", "InputError", "UsageError",
           "__version__"]

if TYPE_CHECKING:
    from text2fx.engine import Engine, render
    from text2fx.errors import InputError, Text2FXError, UsageError
    from text2fx.recipe import PRESETS, Recipe
    from text2fx.result import Result

_LAZY = {
    "Engine": "text2fx.engine",
    "render": "text2fx.engine",
    "Result": "text2fx.result",
    "Recipe": "text2fx.recipe",
    "PRESETS": "text2fx.recipe",
    "Text2FXError": "text2fx.errors",
    "InputError": "text2fx.errors",
    "UsageError": "text2fx.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'text2fx' has no attribute {name!r}")


def apply(audio, sample_rate, prompt, chain: str | None = None, *, checkpoint=None, tokenizer=None, device=None,
          **kwargs):
    """One-line convenience: load CLAP, process `audio` toward `prompt`, return a `Result`.

    Loads the model on every call; a script processing several things should keep an `Engine` instead.
    Keyword arguments are those of `Engine.apply`.
    """
    from text2fx.engine import Engine

    return Engine(checkpoint=checkpoint, tokenizer=tokenizer, device=device).apply(
        audio, sample_rate, prompt, chain, **kwargs
    )
