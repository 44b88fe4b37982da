"""The CLAP model built straight from a checkpoint: laion-clap's shapes, the checkpoint's own tensors, and none
of laion-clap's heavy imports. (Its outputs are compared with laion-clap's in tests/test_clap_equivalence.py.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from text2fx.clap.files import load_clap_state_dict
from text2fx.clap.htsat import HTSAT_VARIANTS
from text2fx.clap.model import AudioConfig, ClapModel, build_clap_model

HEAVY = ("transformers", "laion_clap", "text2fx.clap._laion", "timm", "torchvision", "librosa", "torchlibrosa",
         "torch._dynamo", "sympy", "scipy")


@pytest.mark.parametrize("arch", ["HTSAT-tiny", "HTSAT-base", "HTSAT-large"])
def test_configuration_is_laion_claps(arch: str) -> None:
    from text2fx.clap import clap_module

    config = json.loads((clap_module().config_dir / f"{arch}.json").read_text())
    audio = AudioConfig(model_name=config["audio_cfg"]["model_name"])
    assert {k: getattr(audio, k) for k in config["audio_cfg"]} == config["audio_cfg"]
    assert HTSAT_VARIANTS[audio.model_name].num_features == config["embed_dim"]


def test_model_adopts_the_checkpoints_tensors(clap_checkpoint) -> None:
    state = load_clap_state_dict(clap_checkpoint)
    model = build_clap_model(state, "HTSAT-tiny")
    own = dict(model.state_dict(keep_vars=True))
    assert own.keys() == state.keys()
    for name, tensor in state.items():  # the same memory, not a copy
        assert own[name].data_ptr() == tensor.data_ptr(), name


def test_a_state_that_does_not_fit_is_refused(clap_checkpoint) -> None:
    state = load_clap_state_dict(clap_checkpoint)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        build_clap_model({**state, "audio_branch.extra": torch.zeros(1)}, "HTSAT-tiny")
    state.pop("text_projection.0.bias")
    with pytest.raises(RuntimeError, match="Missing key"):
        build_clap_model(state, "HTSAT-tiny")
    with pytest.raises(ValueError, match="unknown CLAP audio architecture"):
        ClapModel("PANN-14")


def test_embedding_imports_only_what_it_runs(clap_checkpoint, clap_tokenizer_dir) -> None:
    code = (
        "import sys, torch; from text2fx.clap import ClapEmbedder; "
        f"e = ClapEmbedder({str(clap_checkpoint)!r}, {str(clap_tokenizer_dir)!r}, device='cpu', text_cache=False); "
        "e.check_texts(['warm']); e.embed_text(['warm']); e.embed_audio(torch.zeros(1, 1, 4800), 48000); "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
