"""The JSON report of a result (schema `text2fx.result/1`, `text2fx/data/result.schema.json`): building it,
the units of its settings, writing it, and reading its settings back for `render`.

The report holds the effect settings in physical units (fx's chain dict, see `fx.chain`); `render` accepts
a whole report or the bare chain part. Reading the JSON needs no torch, so a malformed file is reported at
once; `load_chain` then builds the `fx.Chain` holding those settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from text2fx.errors import InputError

SCHEMA_ID = "text2fx.result/1"
SCHEMA_FILE = Path(__file__).parent / "data" / "result.schema.json"
LEVEL_POLICY = "never clipped: scaled down to a -1 dBFS peak when louder, never scaled up"
BYPASS_NOTE = "no settings found sounded closer to the words than the unprocessed input: kept neutral (bypass)"


def schema() -> dict:
    """The JSON Schema of the report."""
    return json.loads(SCHEMA_FILE.read_text())


def units(chain) -> list[dict[str, str]]:
    """Per effect of an `fx.Chain`, each parameter's unit ("dB", "Hz", "s", "%", "" ...)."""
    return [{s.name: s.unit for s in effect.param_specs} for effect in chain]


def from_outcome(engine, chain, outcome, recipe, preset: str, options, prompt: int, offsets_s: list[float],
                 source, audio, gain_db: float, tail_frames: int = 0):
    """The `Result` of one optimized (input, prompt) pair: settings in physical units, units, what was asked,
    how the optimization went (`outcome`: a `text2fx.optimize.Outcome`), and the output (`tail_frames` longer
    than the input, see `text2fx.rendering`)."""
    from text2fx.result import Result

    embedder = engine.embedder
    optimization = {
        "preset": preset,
        "loss_mode": recipe.loss,
        "loss": outcome.loss,
        "loss_value": outcome.loss_value,
        "steps": recipe.steps,
        "steps_run": outcome.steps_run,
        "best_step": outcome.best_step,
        "seed": options.seed,
        "lr": recipe.lr,
        "restarts": recipe.restarts,
        "init": recipe.init,
        "time_shift": recipe.time_shift,
        "excerpts_s": offsets_s,
        "precision": getattr(embedder, "precision", "float32"),
        "max_batch": engine.max_batch,
    }
    return Result(
        audio=audio, sample_rate=source.sample_rate, params=chain.to_dict(outcome.params, sample_rate=source.sample_rate), units=units(chain),
        prompt=options.goals[prompt], text=options.texts()[prompt] if options.prompts else None,
        anchor=options.anchors()[prompt] if options.prompts else None,
        history=outcome.history, similarity_before=outcome.similarity_before,
        similarity_after=outcome.similarity_after, bypassed=outcome.bypassed, output_gain_db=gain_db,
        keep_length=options.keep_length, output_frames=source.frames + int(tail_frames),
        tail_frames=int(tail_frames),
        optimization=optimization, checkpoint=getattr(embedder, "name", type(embedder).__name__),
        device=str(engine.device),
        input={"path": None if source.path is None else str(source.path), "sample_rate": source.sample_rate,
               "channels": source.channels, "frames": source.frames},
    )


def to_json(result) -> dict:
    """The JSON-ready report of a `text2fx.result.Result`."""
    from text2fx.version import __version__

    return {
        "schema": SCHEMA_ID,
        "text2fx_version": __version__,
        "created": result.created,
        "chain": result.params,
        "units": result.units,
        "prompt": result.prompt,
        "text": result.text,
        "anchor": result.anchor,
        "optimization": {**result.optimization, "history": [round(float(v), 6) for v in result.history]},
        "clap": {"checkpoint": result.checkpoint, "device": result.device},
        "similarity": {"before": result.similarity_before, "after": result.similarity_after},
        "bypassed": result.bypassed,
        "input": result.input,
        "output": output_json(result),
        # settings at amount 1 and how much of them `chain` is; the turns that led here (text2fx.turns)
        **({"amount": result.amount} if getattr(result, "amount", None) is not None else {}),
        **({"turns": result.turns} if getattr(result, "turns", None) is not None else {}),
        # the reference aimed at, the texts avoided, this candidate's rank (text2fx.targets, text2fx.candidates)
        **{key: getattr(result, attr) for key, attr in (("like", "like"), ("avoid", "avoid"), ("candidate", "choice"))
           if getattr(result, attr, None) is not None},
    }


def output_json(result) -> dict:
    """The report's `output` part: where the audio went, its level, and its length (input + tail). The length
    fields are left out for a result that does not know them (one built by hand)."""
    out = {"path": result.output_path, "gain_db": result.output_gain_db, "level_policy": LEVEL_POLICY}
    for key in ("keep_length", "frames", "tail_frames"):
        value = getattr(result, "output_frames" if key == "frames" else key, None)
        if value is not None:
            out[key] = value
    return out


def write(path: str | os.PathLike, report: dict, overwrite: bool = False) -> Path:
    """Write `report` as JSON to `path`, atomically; refuses an existing file unless `overwrite`."""
    from text2fx import audio_io

    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"refusing to overwrite existing file {path} (use --overwrite / overwrite=True)")
    with audio_io.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


def read_settings(params: Any, source: str = "params") -> dict:
    """The chain dict (fx's format) from a report, a bare chain dict, or a path to a JSON file holding
    either. Checks its outline (a chain spec, a non-empty effect list, a 64-bit seed); the values are
    checked when the chain is built (`load_chain`).

    Raises:
        InputError: unreadable or malformed JSON, or no chain settings in it.
    """
    if isinstance(params, (str, os.PathLike)):
        source = str(params)
        try:
            # utf-8-sig: editors on Windows save JSON with a byte-order mark
            params = json.loads(Path(params).read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            raise InputError(f"params file not found: {source}") from None
        except IsADirectoryError:
            raise InputError(f"params file {source} is a folder") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read params file {source}: {' '.join(str(e).split())}") from None
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
    if not params["effects"] or not isinstance(params.get("chain"), str) or not params["chain"].strip():
        raise InputError(f"{source}: the chain is empty; there are no effects to apply")
    seed = params.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**63:
        raise InputError(f"{source}: seed must be an integer that fits in 64 bits, got {seed!r}")
    return params


def canonical_spec(spec: str) -> str:
    return ",".join(n.strip() for n in str(spec).split(","))


def settings_at(chain, sample_rate: int):
    """`chain`'s stored settings as the unit vector for audio at `sample_rate` (`fx.Chain.settings_for`).

    Raises:
        InputError: the rate cannot hold a stored value (e.g. an EQ band above its Nyquist range).
    """
    try:
        return chain.settings_for(sample_rate)
    except ValueError as e:
        raise InputError(f"these settings cannot be applied at {sample_rate} Hz: {e}") from None


def load_chain(params: Any, expected_spec: str | None = None, source: str = "params"):
    """An `fx.Chain` holding the settings of a report / chain dict / JSON path.

    Raises:
        InputError: malformed settings, or (with `expected_spec`) settings for another chain.
    """
    d = read_settings(params, source)
    if expected_spec is not None and canonical_spec(d["chain"]) != canonical_spec(expected_spec):
        raise InputError(f"params are for chain '{d['chain']}', not '{expected_spec}'")
    import fx

    try:
        return fx.Chain.from_dict({**d, "chain": canonical_spec(d["chain"])})
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"params do not describe a valid chain: {e}") from None
