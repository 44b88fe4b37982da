"""Finding and reading CLAP model files: resolution order, offline failures, unsafe and odd checkpoints."""

from __future__ import annotations

import os
import pickle
import random
import socket
import time
import warnings
from pathlib import Path

import pytest
import torch

from text2fx.clap import ClapEmbedder, load_clap_model
from text2fx.errors import InputError, ModelUnavailableError
from text2fx.clap.files import (
    CHECKPOINT_ENV,
    TOKENIZER_ENV,
    ModelFiles,
    detect_audio_arch,
    load_clap_state_dict,
    resolve_checkpoint,
    resolve_model_files,
    resolve_tokenizer,
)
from text2fx.testing import make_random_clap_checkpoint, make_test_tokenizer


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face home, and no model paths in the environment."""
    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", CHECKPOINT_ENV, TOKENIZER_ENV):
        monkeypatch.delenv(var, raising=False)
    return home / "hub"


def _timed_error(call, match: str) -> tuple[str, float]:
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match=match) as info:
        call()
    return str(info.value), time.perf_counter() - start


def _assert_helpful(message: str, *names: str) -> None:
    assert "\n" not in message and "Traceback" not in message
    for name in names:
        assert name in message


def test_offline_and_uncached_fails_fast_with_one_clear_message(empty_hf_cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message, seconds = _timed_error(lambda: ClapEmbedder(device="cpu"), match="630k-audioset-best.pt not found")
    assert seconds < 2.0
    _assert_helpful(message, "630k-audioset-best.pt", str(empty_hf_cache), "HF_HUB_OFFLINE", CHECKPOINT_ENV, "--clap-ckpt")


def test_offline_first_run_names_every_missing_file_at_once(empty_hf_cache: Path, monkeypatch) -> None:
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("network used although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for call in (resolve_model_files, lambda: ClapEmbedder(device="cpu")):
        message, seconds = _timed_error(call, match="2 CLAP model files are missing")
        assert seconds < 2.0
        _assert_helpful(
            message, "630k-audioset-best.pt", "--clap-ckpt", CHECKPOINT_ENV,  # the checkpoint and how to get it
            "vocab.json", "roberta-base", "--tokenizer", TOKENIZER_ENV,  # the tokenizer and how to get it
            str(empty_hf_cache), "HF_HUB_OFFLINE",
        )


def test_unreachable_hub_fails_fast_without_retrying(empty_hf_cache: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    # A port nothing listens on: the connection is refused at once, like on a machine without network.
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}"
    )
    message, seconds = _timed_error(
        lambda: resolve_checkpoint("music_audioset_epoch_15_esc_90.14.pt"),
        match="downloading it from huggingface.co failed",
    )
    assert seconds < 2.0
    _assert_helpful(message, "music_audioset_epoch_15_esc_90.14.pt", str(empty_hf_cache), "downloading", CHECKPOINT_ENV)


def _hub_resolves() -> bool:
    try:
        socket.getaddrinfo("huggingface.co", 443)
    except OSError:
        return False
    return True


@pytest.mark.skipif(_hub_resolves(), reason="huggingface.co is reachable here; this would start a real download")
def test_no_network_without_offline_flag_fails_fast(empty_hf_cache: Path) -> None:
    message, seconds = _timed_error(lambda: ClapEmbedder(device="cpu"), match="2 CLAP model files are missing")
    assert seconds < 2.0
    _assert_helpful(message, "630k-audioset-best.pt", str(empty_hf_cache), CHECKPOINT_ENV)


def test_missing_tokenizer_is_reported_before_loading_the_model(empty_hf_cache: Path, clap_checkpoint, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message, seconds = _timed_error(lambda: ClapEmbedder(clap_checkpoint, device="cpu"), match="^RoBERTa tokenizer")
    assert seconds < 2.0
    _assert_helpful(message, "vocab.json", "roberta-base", TOKENIZER_ENV)
    assert "checkpoint" not in message  # the checkpoint was found: only the tokenizer is named


def test_missing_explicit_paths_are_named(empty_hf_cache: Path, tmp_path: Path, monkeypatch) -> None:
    missing = tmp_path / "nowhere" / "clap.pt"
    message, _ = _timed_error(lambda: resolve_checkpoint(missing), match="CLAP checkpoint not found")
    _assert_helpful(message, str(missing), "--clap-ckpt", CHECKPOINT_ENV)
    monkeypatch.setenv(CHECKPOINT_ENV, str(missing))
    message, _ = _timed_error(lambda: resolve_checkpoint(), match="CLAP checkpoint not found")
    _assert_helpful(message, f"{CHECKPOINT_ENV}={missing}")
    message, _ = _timed_error(lambda: resolve_tokenizer(tmp_path), match="CLAP tokenizer not found")
    _assert_helpful(message, str(tmp_path), "vocab.json", "merges.txt", TOKENIZER_ENV)


def test_resolution_order_argument_then_environment(
    empty_hf_cache: Path, clap_checkpoint: Path, clap_tokenizer_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Nothing is cached, so every file found below comes from the argument or the environment.
    monkeypatch.setenv(CHECKPOINT_ENV, str(clap_checkpoint))
    monkeypatch.setenv(TOKENIZER_ENV, str(clap_tokenizer_dir))
    assert resolve_model_files() == ModelFiles(clap_checkpoint, clap_tokenizer_dir)
    other_checkpoint = tmp_path / "other.pt"
    other_checkpoint.write_bytes(b"")
    other_tokenizer = make_test_tokenizer(tmp_path / "other_tokenizer")
    # An argument wins over the environment, for each file on its own.
    assert resolve_model_files(other_checkpoint, other_tokenizer) == ModelFiles(other_checkpoint, other_tokenizer)
    assert resolve_model_files(other_checkpoint) == ModelFiles(other_checkpoint, clap_tokenizer_dir)
    assert resolve_model_files(tokenizer=other_tokenizer) == ModelFiles(clap_checkpoint, other_tokenizer)


def test_cached_files_are_found_without_network(
    empty_hf_cache: Path, clap_checkpoint: Path, clap_tokenizer_dir: Path, monkeypatch
) -> None:
    import huggingface_hub

    commit = "0" * 40
    for repo, files in [
        ("models--lukewys--laion_clap", {"630k-audioset-best.pt": clap_checkpoint}),
        ("models--roberta-base", {f: clap_tokenizer_dir / f for f in ("vocab.json", "merges.txt")}),
    ]:
        snapshot = empty_hf_cache / repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        (empty_hf_cache / repo / "refs").mkdir()
        (empty_hf_cache / repo / "refs" / "main").write_text(commit)
        for name, target in files.items():
            (snapshot / name).symlink_to(target)

    def no_network(*args, **kwargs):
        raise AssertionError("network used although the files are cached")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", no_network)
    files = resolve_model_files()
    assert files.checkpoint == empty_hf_cache / "models--lukewys--laion_clap" / "snapshots" / commit / "630k-audioset-best.pt"
    assert files.tokenizer_dir == empty_hf_cache / "models--roberta-base" / "snapshots" / commit


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _load_quietly(path: Path) -> dict[str, torch.Tensor]:
    """load_clap_state_dict(path), failing the test if any warning reaches the caller."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_clap_state_dict(path)


def _assert_one_clean_line(message: str) -> None:
    # Nothing of torch's advice to turn the safe loader off, and one line.
    assert "\n" not in message and "weights_only" not in message and "Weights only" not in message


def test_checkpoint_that_would_run_code_is_refused(tmp_path: Path, clap_tokenizer_dir: Path) -> None:
    payload = _RunsCode()
    payload.marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"module.x": torch.zeros(1)}, "hook": payload}, evil)
    evil_legacy = tmp_path / "evil-legacy-format.pt"
    torch.save({"state_dict": {"module.x": torch.zeros(1)}, "hook": payload}, evil_legacy,
               _use_new_zipfile_serialization=False)
    plain = tmp_path / "evil-plain-pickle.pt"
    plain.write_bytes(pickle.dumps(payload))  # protocol 4+: torch's safe unpickler warns about it
    for path in (evil, evil_legacy, plain):
        carries_code = r"refusing to load .*: it carries code.*references (posix|nt)\.system"
        with pytest.raises(InputError, match=carries_code) as info:
            _load_quietly(path)
        _assert_one_clean_line(str(info.value))
        with pytest.raises(InputError, match="refusing to load"):
            ClapEmbedder(path, clap_tokenizer_dir, device="cpu")
    assert not payload.marker.exists()


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a checkpoint",
        random.Random(0).randbytes(4096),
        b"\x80\x02" + random.Random(1).randbytes(4096),  # a pickle header, then garbage
        b"",
    ],
    ids=["text", "random", "random-after-pickle-header", "empty"],
)
def test_file_that_is_no_checkpoint_is_named_as_such(tmp_path: Path, content: bytes) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(content)
    with pytest.raises(InputError, match="cannot read CLAP checkpoint .*: not a PyTorch checkpoint") as info:
        _load_quietly(garbage)
    _assert_one_clean_line(str(info.value))
    assert "carries code" not in str(info.value)


def test_truncated_checkpoint_is_named_as_such(tmp_path: Path) -> None:
    for legacy in (False, True):
        whole, cut = tmp_path / "whole.pt", tmp_path / "cut.pt"
        torch.save({"state_dict": {"module.x": torch.ones(64, 64)}}, whole, _use_new_zipfile_serialization=not legacy)
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        with pytest.raises(InputError, match="not a PyTorch checkpoint .*truncated") as info:
            _load_quietly(cut)
        _assert_one_clean_line(str(info.value))


def test_legacy_format_checkpoint_loads_like_a_zip_one_without_warnings(tmp_path: Path) -> None:
    state = {"module.audio_projection.0.weight": torch.randn(3, 2), "module.logit_scale_a": torch.tensor(2.5)}
    zipped, legacy = tmp_path / "zip.pt", tmp_path / "legacy.pt"
    torch.save({"state_dict": state, "epoch": 3}, zipped)
    torch.save({"state_dict": state, "epoch": 3}, legacy, _use_new_zipfile_serialization=False)
    want, got = _load_quietly(zipped), _load_quietly(legacy)
    assert list(got) == list(want) == ["audio_projection.0.weight", "logit_scale_a"]
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_pickles_torch_cannot_read_safely_are_one_clear_line(tmp_path: Path) -> None:
    state = {"state_dict": {"module.x": torch.ones(2)}}
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps(state))  # pickle.dump, not torch.save: torch.load cannot read it at all
    with pytest.raises(InputError, match="plain Python pickle, not a torch.save file") as info:
        _load_quietly(plain)
    _assert_one_clean_line(str(info.value))
    protocol4 = tmp_path / "legacy-protocol-4.pt"
    torch.save(state, protocol4, _use_new_zipfile_serialization=False, pickle_protocol=4)
    with pytest.raises(InputError, match="legacy-format torch.save file written with pickle protocol 4") as info:
        _load_quietly(protocol4)
    _assert_one_clean_line(str(info.value))


@pytest.mark.parametrize("wrapped", [True, False], ids=["state_dict", "bare"])
@pytest.mark.parametrize("prefix", ["module.", ""], ids=["module", "plain"])
def test_released_checkpoint_layouts_are_accepted(tmp_path: Path, wrapped: bool, prefix: str) -> None:
    weights = {"audio_projection.0.weight": torch.ones(2, 2), "text_branch.embeddings.position_ids": torch.arange(4)}
    state = {prefix + k: v for k, v in weights.items()}
    path = tmp_path / "ckpt.pt"
    extras = {"epoch": 45, "optimizer": {"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 1e-4}]}}
    torch.save({"state_dict": state, **extras} if wrapped else state, path)
    assert list(load_clap_state_dict(path)) == ["audio_projection.0.weight"]


@pytest.fixture(scope="module")
def clap_base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_clap_checkpoint(tmp_path_factory.mktemp("clap_base") / "random-base.pt", "base", seed=1)


def test_audio_architecture_comes_from_the_weights(
    clap_base_checkpoint: Path, clap_checkpoint: Path, clap_tokenizer_dir: Path
) -> None:
    base = ClapEmbedder(clap_base_checkpoint, clap_tokenizer_dir, device="cpu")
    assert base.audio_arch == "HTSAT-base"
    with torch.no_grad():
        assert base.embed_audio(torch.zeros(1, 1, 48000), 48000).shape == (1, 512)
    assert detect_audio_arch(load_clap_state_dict(clap_checkpoint)) == "HTSAT-tiny"
    # Even if told the wrong architecture, the weights do not load silently into it.
    with pytest.raises(InputError, match="does not fit a HTSAT-base"):
        load_clap_model(load_clap_state_dict(clap_checkpoint), "HTSAT-base", torch.device("cpu"))


def test_fusion_and_foreign_checkpoints_are_refused() -> None:
    with pytest.raises(InputError, match="fusion"):
        detect_audio_arch({"audio_branch.fusion_model.local_att.0.weight": torch.zeros(1)})
    with pytest.raises(InputError, match="not a LAION-CLAP HTSAT"):
        detect_audio_arch({"conv.weight": torch.zeros(1)})
