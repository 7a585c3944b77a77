"""VGGT aggregator: patch embedding (DINOv2 or a plain conv), special tokens, alternating attention.

Legend: B scenes, S frames per scene, F = B*S frames, P tokens per frame (5 special + N patches),
C width, h x w patch grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.vggt.config import AggregatorConfig
from pipeline.models.vggt.layers import Block, RotaryEmbedding2D

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PATCH_START_IDX = 5  # camera token + 4 registers


class ConvPatchEmbed(nn.Module):
    """Stride-p conv, flattened row-major; the `patch_embed="conv"` option."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images_F3HW: torch.Tensor) -> torch.Tensor:
        return self.proj(images_F3HW).flatten(2).transpose(1, 2)


def resize_pos_embed(pos_embed_1TC: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """cls entry + the square pos-embed grid resized to `grid_hw` (antialiased bicubic, float32).

    The table is returned unchanged only for a square grid of its own size, as DINOv2 does.
    """
    num_grid = pos_embed_1TC.shape[1] - 1
    side = round(num_grid ** 0.5)
    assert side * side == num_grid, "pos_embed grid must be square"
    h, w = grid_hw
    if h == w == side:
        return pos_embed_1TC
    cls_11C, grid_1NC = pos_embed_1TC[:, :1], pos_embed_1TC[:, 1:]
    dim = grid_1NC.shape[-1]
    grid_1Css = grid_1NC.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    resized = F.interpolate(grid_1Css, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    resized_1NC = resized.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos_embed_1TC.dtype)
    return torch.cat((cls_11C, resized_1NC), dim=1)


class DinoV2PatchEmbed(nn.Module):
    """DINOv2 ViT with registers, used as VGGT's patch embedder; returns final-normed patch tokens."""

    def __init__(self, embed_dim: int, num_heads: int, num_blocks: int, patch_size: int = 14,
                 img_size: int = 518, num_register_tokens: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        grid = img_size // patch_size
        self.patch_embed = ConvPatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # training only; kept for the keys
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, norm_eps=1e-6) for _ in range(num_blocks)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_register_tokens = num_register_tokens
        self.patch_size = patch_size

    def forward(self, images_F3HW: torch.Tensor) -> torch.Tensor:
        num_f, _, height, width = images_F3HW.shape
        grid_hw = (height // self.patch_size, width // self.patch_size)
        patches_FNC = self.patch_embed(images_F3HW)
        x = torch.cat((self.cls_token.expand(num_f, -1, -1), patches_FNC), dim=1)
        x = x + resize_pos_embed(self.pos_embed, grid_hw).to(x.dtype)
        # registers go in after the position add: they carry no position
        x = torch.cat((x[:, :1], self.register_tokens.expand(num_f, -1, -1), x[:, 1:]), dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens:]


def patch_positions(grid_hw: tuple[int, int], num_special: int, device: torch.device) -> torch.Tensor:
    """(row+1, col+1) per patch, row-major, after `num_special` tokens at (0, 0): [P, 2] int64."""
    h, w = grid_hw
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    patch_N2 = torch.stack((rows, cols), dim=-1) + 1
    return torch.cat((torch.zeros(num_special, 2, dtype=torch.long, device=device), patch_N2))


class Aggregator(nn.Module):
    def __init__(self, cfg: AggregatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        if cfg.patch_embed == "conv":
            self.patch_embed: nn.Module = ConvPatchEmbed(cfg.patch_size, dim)
        else:
            self.patch_embed = DinoV2PatchEmbed(
                dim, cfg.dino_num_heads, cfg.dino_num_blocks, cfg.patch_size, cfg.img_size,
                cfg.num_register_tokens,
            )
        self.rope = RotaryEmbedding2D(cfg.rope_freq)
        # slot 0 for the first frame of a scene, slot 1 for every other frame
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, cfg.num_register_tokens, dim))

        def make_blocks() -> nn.ModuleList:
            return nn.ModuleList(
                Block(dim, cfg.num_heads, cfg.mlp_ratio, norm_eps=1e-5, qk_norm=cfg.qk_norm, rope=self.rope)
                for _ in range(cfg.depth)
            )

        self.frame_blocks = make_blocks()
        self.global_blocks = make_blocks()

    def _special_tokens(self, token_12KC: torch.Tensor, num_b: int, num_s: int) -> torch.Tensor:
        first = token_12KC[:, :1].expand(num_b, 1, -1, -1)
        rest = token_12KC[:, 1:].expand(num_b, num_s - 1, -1, -1)
        return torch.cat((first, rest), dim=1).reshape(num_b * num_s, *token_12KC.shape[2:])

    def embed(self, images_BS3HW: torch.Tensor) -> torch.Tensor:
        """Tokens before the first block: [F, P, C]."""
        num_b, num_s, _, height, width = images_BS3HW.shape
        mean = torch.tensor(IMAGENET_MEAN, device=images_BS3HW.device, dtype=images_BS3HW.dtype)
        std = torch.tensor(IMAGENET_STD, device=images_BS3HW.device, dtype=images_BS3HW.dtype)
        normed = (images_BS3HW - mean[:, None, None]) / std[:, None, None]
        dtype = self.camera_token.dtype
        patches_FNC = self.patch_embed(normed.reshape(num_b * num_s, 3, height, width).to(dtype))
        camera_F1C = self._special_tokens(self.camera_token, num_b, num_s)
        register_FRC = self._special_tokens(self.register_token, num_b, num_s)
        return torch.cat((camera_F1C, register_FRC, patches_FNC), dim=1)

    def forward(self, images_BS3HW: torch.Tensor) -> list[torch.Tensor]:
        """All `depth` outputs, each concat(frame_i, global_i): [B, S, P, 2C]."""
        num_b, num_s, _, height, width = images_BS3HW.shape
        patch = self.cfg.patch_size
        if height % patch or width % patch:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {patch}")
        tokens_FPC = self.embed(images_BS3HW)
        num_p, dim = tokens_FPC.shape[1:]
        pos_P2 = patch_positions((height // patch, width // patch), PATCH_START_IDX, tokens_FPC.device)
        frame_pos = pos_P2.expand(num_b * num_s, -1, -1)
        global_pos = pos_P2.repeat(num_s, 1).expand(num_b, -1, -1)
        outputs = []
        for frame_block, global_block in zip(self.frame_blocks, self.global_blocks, strict=True):
            tokens_FPC = frame_block(tokens_FPC, frame_pos)
            frame_out = tokens_FPC.view(num_b, num_s, num_p, dim)
            tokens_BTC = global_block(tokens_FPC.view(num_b, num_s * num_p, dim), global_pos)
            global_out = tokens_BTC.view(num_b, num_s, num_p, dim)
            outputs.append(torch.cat((frame_out, global_out), dim=-1))
            tokens_FPC = tokens_BTC.view(num_b * num_s, num_p, dim)
        return outputs
