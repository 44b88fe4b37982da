"""LAION-CLAP as a frozen audio-text embedder.

Modules: `embedder` (`ClapEmbedder`: the model, its audio path and text encoder), `model` (the CLAP model built
straight from a checkpoint, with `htsat` and `roberta`, its two branches, and `layers`), `tokenizer` (RoBERTa's
tokenizer without transformers), `text_cache` (text embeddings kept on disk per checkpoint), `files` (finding,
downloading and safely loading checkpoints and the tokenizer), `frontend` (HTSAT's spectrogram and time stretch
in faster, equivalent forms), `resample` (differentiable band-limited resampling to CLAP's 48 kHz), `_laion`
(laion-clap's own model files as a private package: the reference the tests compare against).

Importing this package imports torch; running an embedder imports neither transformers nor laion-clap.
"""

from text2fx.devices import default_device
from text2fx.clap.embedder import (
    EMBEDDING_DIM,
    PRECISIONS,
    TEXT_MAX_TOKENS,
    ClapEmbedder,
    check_text_length,
    clap_module,
    create_clap_model,
    load_clap_model,
    roberta_base_config,
)

__all__ = [
    "EMBEDDING_DIM",
    "PRECISIONS",
    "TEXT_MAX_TOKENS",
    "ClapEmbedder",
    "check_text_length",
    "clap_module",
    "create_clap_model",
    "default_device",
    "load_clap_model",
    "roberta_base_config",
]
