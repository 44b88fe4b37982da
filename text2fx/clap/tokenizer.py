"""CLAP's RoBERTa tokenizer on the `tokenizers` library alone, without importing transformers.

`ClapTokenizer(folder)` builds, from the folder's `vocab.json` and `merges.txt`, the very tokenizer that
`transformers.RobertaTokenizer(vocab=..., merges=...)` builds (byte-level BPE, RoBERTa's `<s> ... </s>` post
processing, the same special tokens), and is called the way laion-clap calls that one. Importing transformers
takes a second or more on a small CPU; `tokenizers` alone takes milliseconds. `tests/test_clap_cache.py`
compares the two on many strings.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

from text2fx.errors import InputError

_SPECIAL = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


class ClapTokenizer:
    """RoBERTa's byte-level BPE tokenizer from `folder/vocab.json` and `folder/merges.txt`.

    Call it as laion-clap calls transformers' tokenizer: `tokenizer(texts, padding="max_length",
    truncation=True, max_length=77, return_tensors="pt")` gives `{"input_ids", "attention_mask"}` as
    `(len(texts), 77)` long tensors; `tokenizer(texts)` gives the token id lists, start and end tokens included.
    """

    def __init__(self, folder: str | Path) -> None:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

        folder = Path(folder)
        vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
        try:
            bpe = models.BPE.from_file(str(vocab_path), str(merges_path), dropout=None, continuing_subword_prefix="",
                                       end_of_word_suffix="", fuse_unk=False)
        except Exception as exc:  # unreadable, not JSON, malformed merges: one message for all
            raise InputError(f"cannot read the CLAP tokenizer in {folder}: {str(exc).splitlines()[0][:200]}") from None
        tokenizer = Tokenizer(bpe)
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        # transformers adds the special tokens (those in the vocabulary keep their ids) as whole tokens that
        # match anywhere in the text, before the post-processor is set.
        tokenizer.add_special_tokens([AddedToken(t, lstrip=False, rstrip=False, normalized=False, special=True)
                                      for t in _SPECIAL])
        self.cls_token_id = tokenizer.token_to_id("<s>")
        self.sep_token_id = tokenizer.token_to_id("</s>")
        self.pad_token_id = tokenizer.token_to_id("<pad>")
        tokenizer.post_processor = processors.RobertaProcessing(("</s>", self.sep_token_id), ("<s>", self.cls_token_id),
                                                                trim_offsets=True, add_prefix_space=False)
        self._tokenizer = tokenizer
        # truncation and padding are settings of the tokenizers object: one call at a time sets and uses them
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_lock"]  # copies and pickles get a lock of their own
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __call__(self, texts: str | Sequence[str], *, padding: bool | str = False, truncation: bool = False,
                 max_length: int | None = None, return_tensors: str | None = None) -> dict:
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        with self._lock:
            ids, masks = self._encode(batch, padding, truncation, max_length)
        if return_tensors == "pt":
            import torch

            return {"input_ids": torch.tensor(ids, dtype=torch.long),
                    "attention_mask": torch.tensor(masks, dtype=torch.long)}
        if single:
            return {"input_ids": ids[0], "attention_mask": masks[0]}
        return {"input_ids": ids, "attention_mask": masks}

    def _encode(self, batch: list[str], padding: bool | str, truncation: bool,
                max_length: int | None) -> tuple[list[list[int]], list[list[int]]]:
        tokenizer = self._tokenizer
        if truncation and max_length is not None:
            tokenizer.enable_truncation(max_length=max_length)  # counts the start and end tokens, as transformers
        else:
            tokenizer.no_truncation()
        if padding:
            length = max_length if padding == "max_length" else None
            tokenizer.enable_padding(direction="right", pad_id=self.pad_token_id, pad_token="<pad>", length=length)
        else:
            tokenizer.no_padding()
        encodings = tokenizer.encode_batch(batch) if batch else []
        return [e.ids for e in encodings], [e.attention_mask for e in encodings]
