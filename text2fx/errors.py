"""Errors the engine raises on purpose.

Every error a user can cause (bad input, missing model files) is a `Text2FXError` whose message is one
readable line; the CLI prints that line and exits non-zero instead of showing a traceback.
"""


class Text2FXError(Exception):
    """An error with a message meant for the user (one line, no traceback needed)."""


class InputError(Text2FXError, ValueError):
    """The caller gave something unusable: a bad file, bad audio, a bad parameter file."""


class OutputError(Text2FXError):
    """An output file could not be written (disk full, folder not writable, format refusing the data)."""


class ModelUnavailableError(Text2FXError):
    """A model file (CLAP checkpoint, tokenizer) is missing and cannot be downloaded."""


class UsageError(InputError):
    """A bad option, chain, prompt or output path: the call itself is wrong (the command exits 2)."""
