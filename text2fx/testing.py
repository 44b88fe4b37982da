"""Stand-ins for the downloadable CLAP model files, for tests and benchmarks on machines without network.

`make_random_clap_checkpoint` writes a randomly initialised CLAP model in laion-clap's released checkpoint
format; `make_test_tokenizer` writes a small byte-level BPE tokenizer (`vocab.json` + `merges.txt`) that
RoBERTa's tokenizer class loads and that tokenizes any text. Embeddings from these files are meaningless
but have exactly the shapes, code paths and cost of the real model.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from pathlib import Path

import torch

# Short-name -> laion-clap model config name.
_AUDIO_ARCHS = {"tiny": "HTSAT-tiny", "base": "HTSAT-base"}
_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, as in roberta-base
_MASK_TOKEN = "<mask>"
# Text the test tokenizer's merges are learned from, so common words become single tokens.
_BPE_CORPUS = (
    "make it sound warm and bright with a little reverb. a dark muddy bass, crisp airy vocals, "
    "punchy drums, a distant telephone voice, underwater, metallic, wide stereo, lo-fi radio, "
    "the sound of a small room, a large cathedral hall, echo, delay, distortion, compression, "
    "equalizer, boost the highs, cut the lows, thin, thick, smooth, harsh, soft, loud, quiet. "
    "this is a recording of a guitar, a piano, a violin, a singer, speech and music."
)


def make_random_clap_checkpoint(path: str | Path, audio_arch: str = "tiny", seed: int = 0) -> Path:
    """Write a randomly initialised CLAP checkpoint in laion-clap's released format and return its path.

    The file holds `{"state_dict": {"module.<name>": tensor, ...}, "epoch": 1}` including
    `text_branch.embeddings.position_ids`, like `630k-audioset-best.pt` (`audio_arch="tiny"`) or the music
    checkpoints (`audio_arch="base"`). About 600 MB (mostly RoBERTa); takes a few seconds on a laptop CPU.
    Deterministic for a given `seed`; the global RNG state is left untouched.
    """
    from text2fx.clap import create_clap_model

    if audio_arch not in _AUDIO_ARCHS:
        raise ValueError(f"audio_arch must be one of {sorted(_AUDIO_ARCHS)}, got {audio_arch!r}")
    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_clap_model(_AUDIO_ARCHS[audio_arch])
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    # Saved by the transformers version laion-clap trained with, where position_ids was a persistent buffer.
    state["module.text_branch.embeddings.position_ids"] = torch.arange(514).expand((1, -1)).clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "epoch": 1}, path)
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / RoBERTa byte-level alphabet: each of the 256 bytes as a printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def random_clap_files(workdir: str | Path) -> tuple[Path, Path]:
    """`(checkpoint, tokenizer_dir)` of a random HTSAT-tiny CLAP in `workdir`, made on first use and reused
    after (the benchmarks share one folder, so each run does not rebuild the ~600 MB checkpoint)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = workdir / "random-tiny.pt"
    if not checkpoint.exists():
        make_random_clap_checkpoint(checkpoint, "tiny", seed=0)
    return checkpoint, make_test_tokenizer(workdir / "tokenizer")


def make_test_tokenizer(folder: str | Path, num_merges: int = 200) -> Path:
    """Write a small byte-level BPE tokenizer (`vocab.json`, `merges.txt`) into `folder` and return it.

    Ids: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, then the 256 byte symbols (so any text tokenizes), the
    learned merges, and `<mask>` last; all ids are below roberta-base's vocabulary size (50265).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    byte_chars = _bytes_to_unicode()
    # Pre-tokenize like the byte-level BPE does: a word keeps its leading space (shown as "Ġ").
    words = Counter(
        tuple(byte_chars[b] for b in piece.encode("utf-8"))
        for piece in re.findall(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+", _BPE_CORPUS)
    )
    vocab = {token: i for i, token in enumerate(_SPECIAL_TOKENS)}
    for b in range(256):
        vocab[byte_chars[b]] = len(vocab)
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        # Ties broken by the pair itself so the files are identical on every run.
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        vocab.setdefault(best[0] + best[1], len(vocab))
        merged: Counter[tuple[str, ...]] = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    vocab[_MASK_TOKEN] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def laion_reference_module(checkpoint: str | Path, tokenizer_dir: str | Path, device: str = "cpu",
                           amodel: str = "HTSAT-tiny"):
    """laion-clap's own `CLAP_Module` (non-fusion) after `load_ckpt(checkpoint)`, built with no network.

    The reference that `ClapEmbedder` is tested and benchmarked against. `import laion_clap` loads three
    tokenizers from the Hugging Face hub at import time and `CLAP_Module` downloads `roberta-base` weights;
    those look-ups are answered with local objects (the tokenizer in `tokenizer_dir`, a RoBERTa built from its
    configuration) while the module is imported and constructed.
    """
    from unittest import mock

    import transformers

    from text2fx.clap import roberta_base_config
    from text2fx.clap.files import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    patches = [
        mock.patch.object(cls, "from_pretrained", lambda *a, **k: tokenizer)
        for cls in (transformers.BertTokenizer, transformers.RobertaTokenizer, transformers.BartTokenizer)
    ]
    patches.append(mock.patch.object(
        transformers.RobertaModel, "from_pretrained", lambda *a, **k: transformers.RobertaModel(roberta_base_config())
    ))
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        import laion_clap

        module = laion_clap.CLAP_Module(enable_fusion=False, device=str(device), amodel=amodel)
    module.load_ckpt(str(checkpoint), verbose=False)
    return module
