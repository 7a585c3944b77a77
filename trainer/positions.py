"""3D position embeddings of the proxies (paper eq. 4): RoPE on height, Fourier features on (x, y).

Height through Qwen2.5-VL's multimodal RoPE
-------------------------------------------
Qwen2.5-VL rotates queries and keys with position ids of shape 3 x B x L: one row per frequency
section (temporal, height, width; `mrope_section` splits head_dim/2 frequencies between them). Text
tokens carry the same running index on all three rows. We place a scene of K proxy tokens that starts
at text position `s` like one video frame whose grid is the vertical axis:

    temporal row  = s                 (the whole scene is one time step)
    height row    = s + z_bin         (quantized vertical coordinate, 0 .. height_bins-1)
    width row     = s + z_bin         (the height again: it gets the width section's frequencies too)

and the text after the scene continues at `s + height_bins` on all three rows, a fixed offset that
does not depend on the scene. So raising a scene changes only the rotary ids of its proxies, never
those of the text, and two proxies at the same height differ only by their content. Horizontal
position enters additively instead: learnable Fourier features of (x, y) (Li et al., 2021) through a
small MLP, added to the proxy embedding.

Legend: B batch, K proxies per scene, L sequence length, H hidden size, F Fourier features.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def quantize_height(z_BK: torch.Tensor, height_range: tuple[float, float], height_bins: int) -> torch.Tensor:
    """Vertical coordinate (metres) -> integer bin in [0, height_bins - 1]; NaN goes to bin 0."""
    lo, hi = height_range
    frac = (torch.nan_to_num(z_BK.float(), nan=lo) - lo) / (hi - lo)
    return (frac * height_bins).floor().clamp(0, height_bins - 1).long()


def rope_position_ids(scene_start: int, z_bin_K: torch.Tensor, num_text_after: int,
                      height_bins: int) -> torch.Tensor:
    """3 x L position ids of one sequence `text_before | scene | text_after` (see module docstring).

    `scene_start` = number of text tokens before the scene; returns int64 of length
    scene_start + K + num_text_after.
    """
    before_L = torch.arange(scene_start).expand(3, -1)
    scene_3K = torch.stack([torch.full_like(z_bin_K, scene_start), scene_start + z_bin_K, scene_start + z_bin_K])
    after_L = (scene_start + height_bins + torch.arange(num_text_after)).expand(3, -1)
    return torch.cat([before_L, scene_3K, after_L], dim=1).long()


class FourierXY(nn.Module):
    """Learnable Fourier features of (x, y) -> MLP -> hidden size (Li et al., NeurIPS 2021)."""

    def __init__(self, hidden_size: int, fourier_dim: int = 64, mlp_dim: int = 256, sigma: float = 1.0,
                 out_scale: float = 0.02):
        super().__init__()
        if fourier_dim % 2:
            raise ValueError(f"fourier_dim must be even, got {fourier_dim}")
        self.freq = nn.Linear(2, fourier_dim // 2, bias=False)
        nn.init.normal_(self.freq.weight, std=sigma)
        self.mlp = nn.Sequential(nn.Linear(fourier_dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, hidden_size))
        # Small output so that a pretrained language model first sees nearly unchanged proxies,
        # but not zero: the term must carry (x, y) from the first step.
        nn.init.normal_(self.mlp[2].weight, std=out_scale / math.sqrt(mlp_dim))
        nn.init.zeros_(self.mlp[2].bias)
        self.scale = 1.0 / math.sqrt(fourier_dim)

    def forward(self, xy_BK2: torch.Tensor) -> torch.Tensor:
        proj_BKF = 2 * math.pi * self.freq(torch.nan_to_num(xy_BK2.float()).to(self.freq.weight.dtype))
        feat_BKF = torch.cat([proj_BKF.cos(), proj_BKF.sin()], dim=-1) * self.scale
        return self.mlp(feat_BKF)
