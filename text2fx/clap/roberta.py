"""CLAP's text encoder: RoBERTa-base, as inference code that imports nothing beyond torch.

The same layers, parameter names and computation as `transformers.RobertaModel` with the `roberta-base`
configuration and its default (SDPA) attention, for a bidirectional encoder with no cache. Importing
transformers' model code costs seconds (it pulls in torch._dynamo, torch.distributed and sympy) for a
twelve-layer encoder that a hundred lines describe; `tests/test_clap_equivalence.py` compares the embeddings
with laion-clap's, which run transformers' RobertaModel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from text2fx.clap import layers


@dataclass(frozen=True)
class RobertaConfig:
    """`roberta-base`'s shape (what `RobertaModel.from_pretrained('roberta-base')` builds in laion-clap)."""

    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1


class RobertaEmbeddings(nn.Module):
    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.word_embeddings = layers.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = layers.Embedding(config.max_position_embeddings, config.hidden_size,
                                                padding_idx=config.pad_token_id)
        self.token_type_embeddings = layers.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = layers.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Positions count non-padding tokens from padding_idx + 1; padding keeps padding_idx (fairseq's rule).
        mask = input_ids.ne(self.padding_idx).int()
        positions = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + self.padding_idx
        token_types = torch.zeros_like(input_ids)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_types)
        embeddings = embeddings + self.position_embeddings(positions)
        return self.LayerNorm(embeddings)


class RobertaSelfAttention(nn.Module):
    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.scaling = self.attention_head_size**-0.5
        self.query = layers.Linear(config.hidden_size, config.hidden_size)
        self.key = layers.Linear(config.hidden_size, config.hidden_size)
        self.value = layers.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        shape = (*hidden.shape[:-1], -1, self.attention_head_size)
        q = self.query(hidden).view(shape).transpose(1, 2)
        k = self.key(hidden).view(shape).transpose(1, 2)
        v = self.value(hidden).view(shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=self.scaling,
                                             is_causal=False)
        return out.transpose(1, 2).contiguous().reshape(*hidden.shape[:-1], -1).contiguous()


class RobertaSelfOutput(nn.Module):
    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.dense = layers.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = layers.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class RobertaAttention(nn.Module):
    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.self = RobertaSelfAttention(config)
        self.output = RobertaSelfOutput(config)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(hidden, mask), hidden)


class RobertaIntermediate(nn.Module):
    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.dense = layers.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden))  # transformers' "gelu": the exact (erf) form


class RobertaOutput(RobertaSelfOutput):
    def __init__(self, config: RobertaConfig) -> None:
        nn.Module.__init__(self)
        self.dense = layers.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = layers.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class RobertaLayer(nn.Module):
    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.attention = RobertaAttention(config)
        self.intermediate = RobertaIntermediate(config)
        self.output = RobertaOutput(config)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        attention = self.attention(hidden, mask)
        return self.output(self.intermediate(attention), attention)


class RobertaEncoder(nn.Module):
    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([RobertaLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden, mask)
        return hidden


class RobertaPooler(nn.Module):
    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.dense = layers.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class RobertaModel(nn.Module):
    """RoBERTa encoder with pooler: token ids `(batch, tokens)` -> `{"last_hidden_state": (batch, tokens, 768),
    "pooler_output": (batch, 768)}`, as `transformers.RobertaModel(...)(input_ids, attention_mask)` in eval mode
    (dropout is left out: the model is only ever evaluated)."""

    def __init__(self, config: RobertaConfig | None = None) -> None:
        super().__init__()
        self.config = config or RobertaConfig()
        self.embeddings = RobertaEmbeddings(self.config)
        self.encoder = RobertaEncoder(self.config)
        self.pooler = RobertaPooler(self.config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        hidden = self.embeddings(input_ids)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            # What transformers hands SDPA: a boolean (batch, 1, query, key) mask, True where a key is attended;
            # none at all when nothing is padded.
            batch, length = input_ids.shape
            mask = attention_mask.bool()[:, None, None, :].expand(batch, 1, length, length)
        hidden = self.encoder(hidden, mask)
        return {"last_hidden_state": hidden, "pooler_output": self.pooler(hidden)}

