"""Transformer pieces shared by DINOv2, the aggregator and the camera head, plus 2D RoPE.

Legend: B batch (frames or scenes), N tokens, C width, Hd heads, D head dim.
One `Block` serves all three users; they differ only in LayerNorm eps, qk-norm and RoPE.
Key names (`norm1`, `attn.qkv`, `attn.q_norm`, `ls1.gamma`, `mlp.fc1`, ...) are the official ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RotaryEmbedding2D(nn.Module):
    """2D RoPE: first half of each head rotated by the row, second half by the column.

    Rotate-half pairing (dim j with j + d/2 inside each half), frequencies base^(-2j/d) in float32.
    """

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        self.base = base

    def _rotate(self, x_BHND: torch.Tensor, pos_BN: torch.Tensor) -> torch.Tensor:
        half = x_BHND.shape[-1]
        inv_freq = 1.0 / (self.base ** (torch.arange(0, half, 2, device=x_BHND.device).float() / half))
        angle_BNf = pos_BN.float()[..., None] * inv_freq
        angle_BND = torch.cat((angle_BNf, angle_BNf), dim=-1)[:, None]
        cos, sin = angle_BND.cos().to(x_BHND.dtype), angle_BND.sin().to(x_BHND.dtype)
        lo, hi = x_BHND[..., : half // 2], x_BHND[..., half // 2:]
        return x_BHND * cos + torch.cat((-hi, lo), dim=-1) * sin

    def forward(self, x_BHND: torch.Tensor, pos_BN2: torch.Tensor) -> torch.Tensor:
        half = x_BHND.shape[-1] // 2
        y_part = self._rotate(x_BHND[..., :half], pos_BN2[..., 0])
        x_part = self._rotate(x_BHND[..., half:], pos_BN2[..., 1])
        return torch.cat((y_part, x_part), dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, norm_eps: float = 1e-5,
                 rope: RotaryEmbedding2D | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x_BNC: torch.Tensor, pos_BN2: torch.Tensor | None = None) -> torch.Tensor:
        num_b, num_n, dim = x_BNC.shape
        qkv = self.qkv(x_BNC).reshape(num_b, num_n, 3, self.num_heads, dim // self.num_heads)
        q_BHND, k_BHND, v_BHND = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q_BHND, k_BHND = self.q_norm(q_BHND), self.k_norm(k_BHND)
        if self.rope is not None and pos_BN2 is not None:
            q_BHND, k_BHND = self.rope(q_BHND, pos_BN2), self.rope(k_BHND, pos_BN2)
        out_BHND = F.scaled_dot_product_attention(q_BHND, k_BHND, v_BHND)
        return self.proj(out_BHND.transpose(1, 2).reshape(num_b, num_n, dim))


class Mlp(nn.Module):
    def __init__(self, dim_in: int, hidden: int, dim_out: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.fc2 = nn.Linear(hidden, dim_out or dim_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact erf GELU, as trained


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm ViT block with LayerScale; optional qk-norm and 2D RoPE."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, norm_eps: float = 1e-5,
                 qk_norm: bool = False, rope: RotaryEmbedding2D | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, norm_eps=norm_eps, rope=rope)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x_BNC: torch.Tensor, pos_BN2: torch.Tensor | None = None) -> torch.Tensor:
        x_BNC = x_BNC + self.ls1(self.attn(self.norm1(x_BNC), pos_BN2))
        return x_BNC + self.ls2(self.mlp(self.norm2(x_BNC)))
