"""The VGGT container: aggregator + camera, depth and point heads (no track head).

Attribute names match the official `VGGT` class, so the official state dict loads key for key.
The aggregator may run in bf16/fp16; the heads always run in float32, as in the official forward.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.vggt.aggregator import PATCH_START_IDX, Aggregator
from pipeline.models.vggt.config import VGGTConfig
from pipeline.models.vggt.heads import CameraHead, DPTHead


class VGGT(nn.Module):
    def __init__(self, cfg: VGGTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.aggregator = Aggregator(cfg.aggregator)
        self.camera_head = CameraHead(cfg.camera_head)
        self.depth_head = DPTHead(cfg.depth_head)
        self.point_head = DPTHead(cfg.point_head)

    def forward(self, images: torch.Tensor, return_tokens: bool = False) -> dict[str, torch.Tensor]:
        """images [B,S,3,H,W] (or [S,3,H,W]) in [0,1]; H and W multiples of the patch size.

        Returns pose_enc [B,S,9], pose_enc_list [iters,B,S,9], depth [B,S,H,W,1], depth_conf,
        world_points [B,S,H,W,3], world_points_conf; `aggregated_tokens` too when asked.
        """
        if images.dim() == 4:
            images = images[None]
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be [B,S,3,H,W] or [S,3,H,W], got {tuple(images.shape)}")
        image_hw = (images.shape[-2], images.shape[-1])
        tokens = self.aggregator(images.float())
        head_tokens = [t.float() for t in tokens]
        pose_list = self.camera_head(head_tokens[-1])
        depth, depth_conf = self.depth_head(head_tokens, image_hw, PATCH_START_IDX)
        points, points_conf = self.point_head(head_tokens, image_hw, PATCH_START_IDX)
        out = {
            "pose_enc": pose_list[-1],
            "pose_enc_list": torch.stack(pose_list),
            "depth": depth,
            "depth_conf": depth_conf,
            "world_points": points,
            "world_points_conf": points_conf,
        }
        if return_tokens:
            out["aggregated_tokens"] = torch.stack(tokens)
        return out
