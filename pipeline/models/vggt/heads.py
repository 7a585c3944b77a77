"""VGGT prediction heads: the iterative camera head and the DPT dense head (depth / points).

Legend: B scenes, S frames, F frames in a chunk, P tokens per frame, C channels,
h x w patch grid, H x W image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.vggt.config import CameraHeadConfig, DPTHeadConfig
from pipeline.models.vggt.layers import Block, Mlp

POSE_DIM = 9  # [t_xyz, quat_xyzw, fov_h, fov_w]


class CameraHead(nn.Module):
    """Refines a raw pose vector `num_iterations` times from the last layer's camera tokens."""

    def __init__(self, cfg: CameraHeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.dim_in
        blocks = (Block(dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.trunk_depth))
        self.trunk = nn.Sequential(*blocks)
        self.token_norm = nn.LayerNorm(dim)
        self.trunk_norm = nn.LayerNorm(dim)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_DIM))
        self.embed_pose = nn.Linear(POSE_DIM, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))  # checkpoint key
        self.adaln_norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.pose_branch = Mlp(dim, dim // 2, POSE_DIM)

    def forward(self, last_tokens_BSPC: torch.Tensor) -> list[torch.Tensor]:
        tokens_BSC = self.token_norm(last_tokens_BSPC[:, :, 0])
        num_b, num_s, _ = tokens_BSC.shape
        raw_BS9: torch.Tensor | None = None
        emitted = []
        for _ in range(self.cfg.num_iterations):
            cond = self.empty_pose_tokens.expand(num_b, num_s, -1) if raw_BS9 is None else raw_BS9
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(cond)).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(tokens_BSC) * (1 + scale) + shift) + tokens_BSC
            delta_BS9 = self.pose_branch(self.trunk_norm(self.trunk(x)))
            raw_BS9 = delta_BS9 if raw_BS9 is None else raw_BS9 + delta_BS9
            emitted.append(torch.cat((raw_BS9[..., :7], F.relu(raw_BS9[..., 7:])), dim=-1))
        return emitted


def uv_pos_embed(channels: int, grid_hw: tuple[int, int], aspect: float, device: torch.device,
                 ratio: float = 0.1, omega_0: float = 100.0) -> torch.Tensor:
    """Sin/cos embedding of a centred UV grid (extent set by the image aspect W/H): [C, h, w] float32."""
    h, w = grid_hw
    diag = math.sqrt(aspect * aspect + 1.0)
    span_x, span_y = aspect / diag, 1.0 / diag
    u_w = torch.linspace(-span_x * (w - 1) / w, span_x * (w - 1) / w, w, dtype=torch.float32, device=device)
    v_h = torch.linspace(-span_y * (h - 1) / h, span_y * (h - 1) / h, h, dtype=torch.float32, device=device)
    quarter = channels // 4
    omega = 1.0 / omega_0 ** (torch.arange(quarter, dtype=torch.float64, device=device) / quarter)
    u_hwq = (u_w.double()[None, :, None] * omega).expand(h, w, quarter)
    v_hwq = (v_h.double()[:, None, None] * omega).expand(h, w, quarter)
    emb_hwC = torch.cat((u_hwq.sin(), u_hwq.cos(), v_hwq.sin(), v_hwq.cos()), dim=-1)
    return emb_hwC.float().permute(2, 0, 1) * ratio


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The skip adds ReLU(x): the trained model used an in-place ReLU that overwrote its input.
        y = F.relu(x)
        return self.conv2(F.relu(self.conv1(y))) + y


class FusionBlock(nn.Module):
    def __init__(self, features: int, has_skip: bool) -> None:
        super().__init__()
        if has_skip:
            self.resConfUnit1 = ResidualConvUnit(features)  # checkpoint key
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        return self.out_conv(upsample(self.resConfUnit2(x), size))


class DPTScratch(nn.Module):
    """Holds the `scratch.*` modules under their checkpoint names."""

    def __init__(self, cfg: DPTHeadConfig) -> None:
        super().__init__()
        feat = cfg.features
        for k, channels in enumerate(cfg.out_channels, start=1):
            self.add_module(f"layer{k}_rn", nn.Conv2d(channels, feat, 3, padding=1, bias=False))
        for k in range(1, 5):
            self.add_module(f"refinenet{k}", FusionBlock(feat, has_skip=k != 4))
        self.output_conv1 = nn.Conv2d(feat, feat // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(feat // 2, cfg.head_features_2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(cfg.head_features_2, cfg.output_dim, 1),
        )


class DPTHead(nn.Module):
    def __init__(self, cfg: DPTHeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        oc = cfg.out_channels
        self.norm = nn.LayerNorm(cfg.dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(cfg.dim_in, c, 1) for c in oc)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
        ])
        self.scratch = DPTScratch(cfg)

    def forward_raw(self, layer_tokens: list[torch.Tensor], image_hw: tuple[int, int],
                    patch_start_idx: int) -> torch.Tensor:
        """Pre-activation output [F, output_dim, H, W] for one chunk of frames."""
        height, width = image_hw
        patch = self.cfg.patch_size
        grid_hw = (height // patch, width // patch)
        aspect = width / height
        levels = []
        for k, tokens_FPC in enumerate(layer_tokens):
            x = self.norm(tokens_FPC[:, patch_start_idx:])
            x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *grid_hw)
            x = self.projects[k](x)
            x = x + uv_pos_embed(x.shape[1], grid_hw, aspect, x.device).to(x.dtype)
            x = self.resize_layers[k](x)
            levels.append(getattr(self.scratch, f"layer{k + 1}_rn")(x))
        l1, l2, l3, l4 = levels
        s = self.scratch
        x = s.refinenet4(l4, None, l3.shape[2:])
        x = s.refinenet3(x, l3, l2.shape[2:])
        x = s.refinenet2(x, l2, l1.shape[2:])
        x = s.refinenet1(x, l1, (2 * l1.shape[2], 2 * l1.shape[3]))
        x = upsample(s.output_conv1(x), (grid_hw[0] * patch, grid_hw[1] * patch))
        x = x + uv_pos_embed(x.shape[1], (x.shape[2], x.shape[3]), aspect, x.device).to(x.dtype)
        return s.output_conv2(x)

    def forward(self, tokens_list: list[torch.Tensor], image_hw: tuple[int, int],
                patch_start_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction [B,S,H,W,output_dim-1], confidence [B,S,H,W]) from the aggregator outputs."""
        num_b, num_s = tokens_list[0].shape[:2]
        selected = [tokens_list[i] for i in self.cfg.intermediate_layer_idx]
        chunk = self.cfg.frames_chunk_size
        raw = []
        for start in range(0, num_s, chunk):  # frames are independent here: chunking only bounds memory
            layer_tokens = [t[:, start:start + chunk].flatten(0, 1) for t in selected]
            out = self.forward_raw(layer_tokens, image_hw, patch_start_idx)
            raw.append(out.unflatten(0, (num_b, -1)))
        fmap_BSHWc = torch.cat(raw, dim=1).permute(0, 1, 3, 4, 2)
        values, conf = fmap_BSHWc[..., :-1], 1 + fmap_BSHWc[..., -1].exp()
        if self.cfg.activation == "exp":
            values = values.exp()
        else:  # inv_log
            values = values.sign() * (values.abs().exp() - 1)
        return values, conf
