"""The on-disk text embedding cache: a hit is the recomputation bit for bit, a damaged entry is never used,
keys follow the model's content; and the tokenizer that feeds it matches transformers' RoBERTa tokenizer."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
import torch

from text2fx.clap import ClapEmbedder, text_cache
from text2fx.clap.files import TOKENIZER_FILES
from text2fx.clap.text_cache import TextEmbeddingCache, file_digest, model_key

TEXTS = ["warm and bright", "a cathedral", "écho"]


@pytest.fixture(autouse=True)
def _memoise_fresh_files(request, monkeypatch) -> None:
    # The session's checkpoint is seconds old: memoise its digest anyway, or each embedder here hashes 600 MB.
    if "not_memoised" not in request.node.name:
        monkeypatch.setattr(text_cache, "_RACY_NS", 0)


def _embedder(checkpoint: Path, tokenizer: Path, cache) -> ClapEmbedder:
    return ClapEmbedder(checkpoint, tokenizer, device="cpu", text_cache=cache)


def _encodings(embedder: ClapEmbedder, monkeypatch) -> list[list[str]]:
    """A list that records each batch of texts `embedder` runs through its text encoder."""
    calls: list[list[str]] = []
    tokenizer = embedder._tokenizer

    def spy(texts, **kwargs):
        if kwargs.get("padding") == "max_length":
            calls.append(list(texts))
        return tokenizer(texts, **kwargs)

    monkeypatch.setattr(embedder, "_tokenizer", spy)
    return calls


def _entries(folder: Path) -> list[Path]:
    return sorted((folder / "text-embeddings").rglob("*.emb"))


def test_cache_hit_equals_recomputation_exactly(clap_checkpoint, clap_tokenizer_dir, tmp_path, monkeypatch) -> None:
    first = _embedder(clap_checkpoint, clap_tokenizer_dir, tmp_path)
    stored = first.embed_text(TEXTS)
    assert len(_entries(tmp_path)) == len(TEXTS)

    second = _embedder(clap_checkpoint, clap_tokenizer_dir, tmp_path)  # a new process would start like this
    calls = _encodings(second, monkeypatch)
    hit = second.embed_text(TEXTS + ["a new one"])
    assert calls == [["a new one"]]  # only the unseen text ran through the encoder
    fresh = _embedder(clap_checkpoint, clap_tokenizer_dir, False)
    alone = torch.stack([fresh.embed_text([t])[0] for t in reversed(TEXTS)]).flip(0)  # other batches, order
    assert torch.equal(hit[:3], stored) and torch.equal(hit[:3], alone)
    assert hit.dtype == torch.float32 and hit.device == second.device


@pytest.mark.parametrize("damage", ["flip a value bit", "truncate", "garbage", "another text's entry", "empty"])
def test_a_damaged_entry_is_ignored_and_rewritten(
    clap_checkpoint, clap_tokenizer_dir, tmp_path, monkeypatch, damage
) -> None:
    reference = _embedder(clap_checkpoint, clap_tokenizer_dir, tmp_path).embed_text(TEXTS[:2])
    entries = {p.name: p for p in _entries(tmp_path)}
    cache = _embedder(clap_checkpoint, clap_tokenizer_dir, tmp_path)._text_disk_cache()
    target = cache._path(cache._digest(TEXTS[0]))
    other = cache._path(cache._digest(TEXTS[1]))
    assert target.name in entries and other.name in entries
    data = target.read_bytes()
    if damage == "flip a value bit":
        broken = bytearray(data)
        broken[-3] ^= 0x10
        target.write_bytes(bytes(broken))
    elif damage == "truncate":
        target.write_bytes(data[:-4])
    elif damage == "garbage":
        target.write_bytes(os.urandom(len(data)))
    elif damage == "another text's entry":
        target.write_bytes(other.read_bytes())  # intact, but stored for another text
    else:
        target.write_bytes(b"")

    again = _embedder(clap_checkpoint, clap_tokenizer_dir, tmp_path)
    calls = _encodings(again, monkeypatch)
    result = again.embed_text(TEXTS[:2])
    assert calls == [[TEXTS[0]]]  # the damaged entry was recomputed, the intact one read
    assert torch.equal(result, reference)
    assert target.read_bytes() == data  # and rewritten whole


def test_keys_follow_the_content_of_checkpoint_and_tokenizer(tmp_path, monkeypatch) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"checkpoint one" * 1000)
    b.write_bytes(b"checkpoint two" * 1000)
    tok = tmp_path / "tok"
    tok.mkdir()
    for name in TOKENIZER_FILES:
        (tok / name).write_text(name)
    files = [tok / name for name in TOKENIZER_FILES]
    memo = tmp_path / "cache"

    key_a = model_key(a, files, "cpu", memo)
    assert model_key(b, files, "cpu", memo) != key_a  # another checkpoint
    assert model_key(a, files, "cuda", memo) != key_a  # another device type
    copy = tmp_path / "copy.pt"
    copy.write_bytes(a.read_bytes())
    assert model_key(copy, files, "cpu", memo) == key_a  # same content elsewhere: same key
    (tok / "merges.txt").write_text("other merges")
    assert model_key(a, files, "cpu", memo) != key_a  # another tokenizer


def test_a_checkpoint_changed_in_place_is_hashed_again(tmp_path) -> None:
    path, memo = tmp_path / "model.pt", tmp_path / "cache"
    path.write_bytes(b"A" * 4096)
    first = file_digest(path, memo)
    assert list((memo / "checkpoint-digests").iterdir())  # memoised
    stat = path.stat()
    time.sleep(0.05)  # past the file system's timestamp granularity
    with open(path, "r+b") as f:  # same size, same modification time, other content
        f.write(b"B")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_digest(path, memo) != first
    assert file_digest(path, memo) == file_digest(path, None)


def test_a_just_written_checkpoint_is_not_memoised(tmp_path) -> None:
    # A file modified within the last seconds may change again within one timestamp tick, unseen by its stat.
    path, memo = tmp_path / "model.pt", tmp_path / "cache"
    path.write_bytes(b"fresh")
    file_digest(path, memo)
    assert not (memo / "checkpoint-digests").exists()


def test_cache_location_and_switch(clap_checkpoint, clap_tokenizer_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TEXT2FX_TEXT_CACHE", "1")
    monkeypatch.setenv("TEXT2FX_CACHE_DIR", str(tmp_path / "env"))
    _embedder(clap_checkpoint, clap_tokenizer_dir, None).embed_text(TEXTS[:1])
    assert len(_entries(tmp_path / "env")) == 1
    monkeypatch.delenv("TEXT2FX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert text_cache.default_cache_dir() == tmp_path / "xdg" / "text2fx"
    monkeypatch.setenv("TEXT2FX_TEXT_CACHE", "off")
    _embedder(clap_checkpoint, clap_tokenizer_dir, None).embed_text(TEXTS[:1])
    assert not (tmp_path / "xdg").exists()
    _embedder(clap_checkpoint, clap_tokenizer_dir, tmp_path / "explicit").embed_text(TEXTS[:1])  # a folder wins
    assert len(_entries(tmp_path / "explicit")) == 1


def test_an_unwritable_cache_only_costs_the_recomputation(clap_checkpoint, clap_tokenizer_dir, tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    embedder = _embedder(clap_checkpoint, clap_tokenizer_dir, blocker)
    assert embedder.embed_text(TEXTS[:1]).shape == (1, 512)


def test_entries_store_their_shape_and_refuse_another(tmp_path) -> None:
    cache = TextEmbeddingCache(tmp_path, bytes(32), dim=4)
    cache.put({"x": torch.tensor([1.0, -2.0, 0.5, 3.0])})
    assert torch.equal(cache.get(["x", "y"])["x"], torch.tensor([1.0, -2.0, 0.5, 3.0]))
    assert TextEmbeddingCache(tmp_path, bytes(32), dim=8).get(["x"]) == {}  # another width: not this entry
    assert TextEmbeddingCache(tmp_path, bytes(31) + b"\1", dim=4).get(["x"]) == {}  # another model
    with pytest.raises(ValueError, match="3 values, this cache holds 4"):
        cache.put({"z": torch.zeros(3)})


def test_tokenizer_matches_transformers_roberta_tokenizer(clap_tokenizer_dir) -> None:
    from text2fx.clap.files import load_tokenizer
    from text2fx.clap.tokenizer import ClapTokenizer

    reference, ours = load_tokenizer(clap_tokenizer_dir), ClapTokenizer(clap_tokenizer_dir)
    texts = ["warm", "", " ", "  leading", "trailing  ", "écho ünïcødé 日本語 🎸", "<mask> <s></s><pad><unk> a<mask>b",
             "tab\tnew\nline", "this sound is " * 40, "MiXeD 123 4.5 -- !!", "x" * 300]
    rng = random.Random(0)
    alphabet = "abc XYZ <>/sk.,!é日\n\t0123mask"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120))) for _ in range(200)]
    assert ours(texts)["input_ids"] == reference(texts, truncation=False, padding=False)["input_ids"]
    assert ours(texts[0])["input_ids"] == reference(texts[0])["input_ids"]
    settings = dict(padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    want, got = reference(texts, **settings), ours(texts, **settings)
    assert torch.equal(got["input_ids"], want["input_ids"])
    assert torch.equal(got["attention_mask"], want["attention_mask"])
