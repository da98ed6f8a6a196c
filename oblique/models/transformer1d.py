"""A small 1-D transformer classifier for MNIST-1D (``transformer1d``; inputs ``(B, 1, 40)``).

It exists so that a study can compare every method on attention and MLP weight matrices (not only
convolutions) with nothing downloaded: MNIST-1D is generated locally and a 15-epoch run takes seconds on
CPU (on 2 cores about 1.5× the training time of the default ``resnet1d`` run: 4.5–6 s against 3–4 s).

Shapes, with the defaults (``patch=4``, ``dim=32``):

- patch embedding ``nn.Conv1d(in_channels, dim, kernel_size=patch, stride=patch)``:
  ``(B, 1, 40) -> (B, 32, 10)``, transposed to 10 tokens ``(B, 10, 32)``;
- plus a learned positional embedding (an ``nn.Parameter`` of shape ``(1, 10, 32)``, no ``nn.Embedding``);
- ``depth=2`` pre-LN blocks, each ``x + attn(LN(x))`` then ``x + mlp(LN(x))``, where ``attn`` is an
  ``nn.MultiheadAttention(dim, heads=4, batch_first=True)`` (its packed ``in_proj_weight`` ``(3·dim, dim)``
  and its ``out_proj`` ``nn.Linear(dim, dim)`` are left as PyTorch builds them) and ``mlp`` is
  ``nn.Linear(dim, 2·dim) -> GELU -> nn.Linear(2·dim, dim)``;
- a final ``nn.LayerNorm``, *mean pooling* over the tokens (no CLS token) ``(B, 10, 32) -> (B, 32)``,
  and the classifier ``nn.Linear(dim, num_classes)``: ``(B, num_classes)``.

No dropout. About 18 k parameters with the defaults.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Transformer1D"]


class _Block(nn.Module):
    """One pre-LN transformer block: self-attention, then a two-layer GELU MLP, each residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class Transformer1D(nn.Module):
    """A small pre-LN transformer for 1-D sequences (``transformer1d``).

    Args:
        num_classes: output classes.
        in_channels: input channels (1 for MNIST-1D).
        length: input length (40 for MNIST-1D); must be a multiple of ``patch``.
        patch: patch size of the patch embedding (tokens = ``length // patch``).
        dim: token width.
        depth: transformer blocks.
        heads: attention heads (must divide ``dim``).
        mlp_ratio: hidden width of each MLP, as a multiple of ``dim``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        length: int = 40,
        patch: int = 4,
        dim: int = 32,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 2,
    ):
        super().__init__()
        if length % patch:
            raise ValueError(f"length {length} is not a multiple of patch {patch}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.embed = nn.Conv1d(in_channels, dim, kernel_size=patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, length // patch, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*(_Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.ln = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).transpose(1, 2) + self.pos  # (B, C, L) -> (B, tokens, dim)
        x = self.ln(self.blocks(x))
        return self.fc(x.mean(dim=1))  # mean over the tokens: (B, dim) -> (B, classes)
