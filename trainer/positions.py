"""3D position embeddings of the proxies (paper eq. 4): RoPE on height, Fourier features on (x, y).

Height through Qwen2.5-VL's multimodal RoPE
-------------------------------------------
Qwen2.5-VL rotates queries and keys with position ids of shape 3 x B x L: one row per frequency
section (temporal, height, width; `mrope_section` splits head_dim/2 frequencies between them, in
that order from the highest frequency: [16, 24, 24] in the 7B checkpoint). Text tokens carry the
same running index on all three rows.

The paper says only that RoPE is applied "to the vertical position indices" and that the
sequence follows the BFS order; which rows carry what, and what the text after the scene
continues at, it does not say. `train.rope_positions` chooses. For a scene of K proxies in BFS
order that starts at text position `s`, proxy k at height bin z_k (0 .. height_bins-1):

    "height" (default; our reading: the scene is one video frame whose grid is the vertical axis)
        temporal row = s                 the whole scene is one time step
        height row   = s + z_k
        width row    = s + z_k           the height again, at the width section's frequencies
        text after   = s + height_bins + i  on all rows, whatever the scene

    "bfs" (the BFS order kept in the rotary positions)
        temporal row = s + k             the proxy's BFS index
        height row   = s + z_k
        width row    = s + z_k
        text after   = s + max(K, height_bins) + i

Under "height" all proxies share the temporal id and proxies in the same height bin share all
three, so attention cannot tell two of them apart by position: the BFS order acts only through the
causal mask (a proxy sees the ones before it). Under "bfs" the highest-frequency section carries
the order, as it carries the token order of text, and height keeps the other two sections.
measured: docs/RESULTS.md#rope-positions

Horizontal position enters additively in both: learnable Fourier features of (x, y) (Li et al.,
2021) through a small MLP, added to the proxy embedding.

Legend: B batch, K proxies per scene, L sequence length, H hidden size, F Fourier features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from schemas.config_train import FOURIER_FREQUENCIES, ROPE_POSITIONS, FourierFrequencies, RopePositions


def quantize_height(z_BK: torch.Tensor, height_range: tuple[float, float], height_bins: int) -> torch.Tensor:
    """Vertical coordinate (metres) -> integer bin in [0, height_bins - 1]; NaN goes to bin 0."""
    lo, hi = height_range
    frac = (torch.nan_to_num(z_BK.float(), nan=lo) - lo) / (hi - lo)
    return (frac * height_bins).floor().clamp(0, height_bins - 1).long()


def rope_position_ids(scene_start: int, z_bin_K: torch.Tensor, num_text_after: int,
                      height_bins: int, variant: RopePositions = "height") -> torch.Tensor:
    """3 x L position ids of one sequence `text_before | scene | text_after` (see module docstring).

    `scene_start` = number of text tokens before the scene; `z_bin_K` the proxies' height bins in
    sequence (BFS) order; returns int64 of length scene_start + K + num_text_after.
    """
    num_scene = len(z_bin_K)
    before_L = torch.arange(scene_start).expand(3, -1)
    height_K = scene_start + z_bin_K.long()
    if variant == "height":
        temporal_K, scene_span = torch.full_like(height_K, scene_start), height_bins
    elif variant == "bfs":
        temporal_K, scene_span = scene_start + torch.arange(num_scene), max(num_scene, height_bins)
    else:
        raise ValueError(f"rope_positions must be one of {ROPE_POSITIONS}, got {variant!r}")
    scene_3K = torch.stack([temporal_K, height_K, height_K])
    after_L = (scene_start + scene_span + torch.arange(num_text_after)).expand(3, -1)
    return torch.cat([before_L, scene_3K, after_L], dim=1).long()


# The frequencies of `fourier_frequencies: axis_ladder` (cycles per metre): log-spaced from a period
# longer than a room to one of 1 m, whose phase is a position's tenths digit.
AXIS_LADDER_CYCLES_PER_M = (0.05, 1.0)


class FourierXY(nn.Module):
    """Learnable Fourier features of (x, y) -> MLP -> hidden size (Li et al., NeurIPS 2021).

    `frequencies` sets the initial frequencies: "gaussian", 2D frequencies of spread `sigma` (Li et
    al.'s initialisation); "axis_ladder", half along x and half along y, each half the log-spaced
    ladder AXIS_LADDER_CYCLES_PER_M, the same for every seed. From the Gaussian draw the toy's small
    model read one floor axis only in 3 seeds of 6, from the ladder in 1; what it then learns of
    relations is no better. measured: docs/RESULTS.md#fourier-ladder"""

    def __init__(self, hidden_size: int, fourier_dim: int = 64, mlp_dim: int = 256, sigma: float = 1.0,
                 out_scale: float = 0.02, frequencies: FourierFrequencies = "gaussian"):
        super().__init__()
        if fourier_dim % 2:
            raise ValueError(f"fourier_dim must be even, got {fourier_dim}")
        self.freq = nn.Linear(2, fourier_dim // 2, bias=False)
        if frequencies == "gaussian":
            nn.init.normal_(self.freq.weight, std=sigma)
        elif frequencies == "axis_ladder":
            if fourier_dim % 4:
                raise ValueError(f"axis_ladder needs fourier_dim divisible by 4 (as many frequencies along "
                                 f"x as along y), got {fourier_dim}")
            per_axis = fourier_dim // 4
            low, high = AXIS_LADDER_CYCLES_PER_M
            ladder = torch.logspace(math.log10(low), math.log10(high), per_axis)
            with torch.no_grad():
                self.freq.weight.zero_()
                self.freq.weight[:per_axis, 0] = ladder
                self.freq.weight[per_axis:, 1] = ladder
        else:
            raise ValueError(f"fourier_frequencies must be one of {FOURIER_FREQUENCIES}, got {frequencies!r}")
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
