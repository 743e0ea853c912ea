"""A pre-norm transformer encoder written for export: batch-first throughout.

`nn.TransformerEncoderLayer` traces into a graph that transposes every layer's input to
sequence-first and back (~15% of onnxruntime's time on this model). This encoder computes the same
function with explicit batch-first matmuls, so the graph has no sequence-first transposes. Attention
is written out too (scores, an additive padding mask built once, softmax): the exporter expands
`F.scaled_dot_product_attention` with a boolean mask into about 14 small ops per layer, which cost a
single route ~10% more time in onnxruntime (bench/graph.py). Its parameters carry
`nn.TransformerEncoder`'s names and shapes (`layers.N.self_attn.in_proj_weight`, `linear1`, `norm1`,
...), so checkpoints trained with either load into it unchanged; tests hold it to
`nn.TransformerEncoder` output for output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameters (packed q/k/v projection)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)  # nn.MultiheadAttention's initialisation
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, L, D]; mask [B, 1, 1, L] float, added to the scores (0 for a token, very negative for padding)."""
        batch, length, width = x.shape
        heads = self.n_heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(batch, length, 3, heads, width // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, D/H]
        scores = (q * (width // heads) ** -0.5) @ k.transpose(-1, -2) + mask
        weights = F.dropout(scores.softmax(dim=-1), p=self.dropout, training=self.training)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(batch, length, width))


class EncoderLayer(nn.Module):
    """Pre-norm block: x + attention(norm1(x)), then x + feed-forward(norm2(x)) with GELU."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = SelfAttention(d_model, n_heads, dropout)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)  # inside the feed-forward
        self.dropout1 = nn.Dropout(dropout)  # on the attention's residual
        self.dropout2 = nn.Dropout(dropout)  # on the feed-forward's residual

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout1(self.self_attn(self.norm1(x), mask))
        return x + self.dropout2(self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(x))))))


class Encoder(nn.Module):
    """`n_layers` EncoderLayers and a final LayerNorm, masking padding out of every attention."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """x [B, L, D]; padding_mask [B, L] bool (True = padding) -> [B, L, D]."""
        padding = padding_mask[:, None, None, :]
        mask = torch.zeros(padding.shape, dtype=x.dtype, device=x.device).masked_fill(padding, torch.finfo(x.dtype).min)
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)
