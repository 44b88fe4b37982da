"""What a run returns, and its JSON report (schema `text2fx.result/1`, in `text2fx/data/result.schema.json`).

The report holds the effect settings in physical units; `text2fx render` and `text2fx.render` read it back
(they also accept the bare `chain` part on its own).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from text2fx.errors import InputError

SCHEMA_ID = "text2fx.result/1"
LEVEL_POLICY = "never clipped: scaled down to a -1 dBFS peak when louder, never scaled up"


def schema() -> dict:
    """The JSON Schema of the report."""
    return json.loads((Path(__file__).parent / "data" / "result.schema.json").read_text())


@dataclass
class Result:
    """One input processed toward one prompt.

    Attributes:
        audio: `(channels, samples)` float32, at `sample_rate`, the whole input processed.
        sample_rate: Hz, the input's.
        params: the chain and its settings in physical units (`fx.Chain.to_dict` format).
        units: per effect, each parameter's unit.
        prompt: the words asked for; `text` is what the text encoder saw; `anchor` the directional anchor.
        history: loss at each optimization step.
        similarity_before, similarity_after: cosine similarity of input / output audio to `text`.
        output_gain_db: gain the level policy applied (0 or negative).
        optimization: loss, steps, seed, learning rate... (see the report schema).
    """

    audio: np.ndarray
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
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def report(self) -> dict:
        """The JSON-ready report (schema `text2fx.result/1`)."""
        from text2fx import __version__

        return {
            "schema": SCHEMA_ID,
            "text2fx_version": __version__,
            "created": self.created,
            "chain": self.params,
            "units": self.units,
            "prompt": self.prompt,
            "text": self.text,
            "anchor": self.anchor,
            "optimization": {**self.optimization, "history": [round(float(v), 6) for v in self.history]},
            "clap": {"checkpoint": self.checkpoint, "device": self.device},
            "similarity": {"before": self.similarity_before, "after": self.similarity_after},
            "input": self.input,
            "output": {"path": self.output_path, "gain_db": self.output_gain_db, "level_policy": LEVEL_POLICY},
        }

    def save_report(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the report as JSON, atomically."""
        return write_json(Path(path), self.report(), overwrite=overwrite)


def write_json(path: Path, data: dict, overwrite: bool = False) -> Path:
    from text2fx import audio_io

    if path.exists() and not overwrite:
        raise InputError(f"refusing to overwrite existing file {path} (pass overwrite / --overwrite)")
    with audio_io.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return path


def chain_params(params: Any, source: str = "params") -> dict:
    """The chain dict from a report, a bare chain dict, or a path to a JSON file holding either.

    Raises:
        InputError: unreadable or malformed JSON, or no chain settings in it.
    """
    if isinstance(params, (str, os.PathLike)):
        source = str(params)
        try:
            params = json.loads(Path(params).read_text())
        except FileNotFoundError:
            raise InputError(f"params file not found: {source}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read params file {source}: {e}") from None
        except json.JSONDecodeError as e:
            raise InputError(f"params file {source} is not valid JSON: {e}") from None
    if not isinstance(params, dict):
        raise InputError(f"{source}: expected a JSON object with effect settings")
    if "schema" in params:
        if params["schema"] != SCHEMA_ID:
            raise InputError(f"{source}: unsupported report schema {params['schema']!r} (this version reads {SCHEMA_ID})")
        params = params.get("chain")
    if not isinstance(params, dict) or not isinstance(params.get("effects"), list):
        raise InputError(f"{source}: no effect settings found (expected a report or a {{\"chain\", \"effects\"}} object)")
    return params
