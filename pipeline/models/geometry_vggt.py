"""Geometry backend on our VGGT: cameras, depth and world points for a scene's frames.

Frames go through VGGT at "long side 518" (nothing cropped or padded, so every input pixel keeps
its prediction), and come back at the frames' own size: depth and confidence are resized bilinearly,
intrinsics rescaled (pixel centres stay pixel centres), and points unprojected from the resized
depth with the returned cameras, so `xyz`, `pose` and `intrinsics` agree exactly. VGGT's world is
the first camera's frame and its unit is arbitrary; `estimate_scale` gives metres per unit where
sensor depth exists.

Legend: F frames, H x W input pixels, h x w VGGT input pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.models.vggt.geometry import (
    estimate_scale,
    extrinsics_to_pose,
    pose_encoding_to_cameras,
    unproject_depth,
)
from pipeline.models.vggt.preprocess import fit_size, resize_frames
from schemas.store import ModelRef

__all__ = ["VGGTGeometry", "estimate_scale", "rescale_intrinsics"]

# Depth confidence is 1 + exp(x) >= 1; below this the network itself says "no idea".
DEFAULT_MIN_CONF = 1.05


def rescale_intrinsics(
    intrinsics_F33: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]
) -> np.ndarray:
    """Intrinsics after resizing an image from src_hw to dst_hw (pixel-centre convention)."""
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    out = np.array(intrinsics_F33, dtype=np.float64, copy=True)
    out[:, 0, 0] *= sx
    out[:, 1, 1] *= sy
    out[:, 0, 2] = (out[:, 0, 2] + 0.5) * sx - 0.5
    out[:, 1, 2] = (out[:, 1, 2] + 0.5) * sy - 0.5
    return out.astype(np.float32)


def _is_toy(model: str) -> bool:
    config = Path(model) / "config.json"
    if not config.is_file():
        return False
    try:
        return bool(json.loads(config.read_text()).get("toy", False))
    except (OSError, json.JSONDecodeError):
        return False


class VGGTGeometry:
    """`predict(images_FHW3)` -> cameras, depth and world points of one scene (all frames at once)."""

    def __init__(self, model: str, device: str = "cpu", dtype: str = "auto",
                 min_conf: float = DEFAULT_MIN_CONF, long_side: int = 518) -> None:
        from pipeline.models.vggt.loader import load_vggt

        self.device = device
        self.net = load_vggt(model, device=device, dtype=dtype)
        self.min_conf = min_conf
        self.long_side = long_side
        self.ref = ModelRef(kind="vggt", model=str(model), revision=None, trained=not _is_toy(str(model)))

    def run_network(self, images_FHW3: np.ndarray) -> dict[str, np.ndarray]:
        """Raw VGGT outputs at its own input size h x w (pose_enc, depth, depth_conf)."""
        import torch

        height, width = images_FHW3.shape[1:3]
        size_hw = fit_size(height, width, self.long_side)
        frames_F3hw = resize_frames(images_FHW3, size_hw)
        batch = torch.from_numpy(frames_F3hw).to(self.device).float().div_(255.0)[None]
        with torch.inference_mode():
            out = self.net(batch)
        return {
            "pose_enc_F9": out["pose_enc"][0].float().cpu().numpy(),
            "depth_Fhw": out["depth"][0, ..., 0].float().cpu().numpy(),
            "conf_Fhw": out["depth_conf"][0].float().cpu().numpy(),
        }

    def predict(self, images_FHW3: np.ndarray) -> dict[str, np.ndarray]:
        """xyz_FHW3 (NaN where invalid), conf_FHW, depth_FHW, extrinsics_F34 (camera-from-world),
        pose_F44 (camera-to-world) and intrinsics_F33, all float32 at the input size."""
        import torch
        import torch.nn.functional as F

        images = np.asarray(images_FHW3)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
            raise ValueError(f"VGGT needs uint8 frames F x H x W x 3, got {images.dtype} {images.shape}")
        height, width = images.shape[1:3]
        raw = self.run_network(images)
        small_hw = raw["depth_Fhw"].shape[1:]
        extrinsics_F34, intrinsics_small = pose_encoding_to_cameras(raw["pose_enc_F9"], small_hw)
        maps = torch.from_numpy(np.stack((raw["depth_Fhw"], raw["conf_Fhw"]), axis=1))
        maps = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False).numpy()
        depth_FHW, conf_FHW = maps[:, 0], maps[:, 1]
        intrinsics_F33 = rescale_intrinsics(intrinsics_small, small_hw, (height, width))
        with np.errstate(invalid="ignore", over="ignore"):
            xyz_FHW3 = unproject_depth(depth_FHW, extrinsics_F34, intrinsics_F33).astype(np.float32)
        invalid = ~np.isfinite(xyz_FHW3).all(-1) | ~np.isfinite(conf_FHW) | (conf_FHW < self.min_conf)
        invalid |= ~(depth_FHW > 0)
        xyz_FHW3[invalid] = np.nan
        return {
            "xyz_FHW3": xyz_FHW3,
            "conf_FHW": np.where(np.isfinite(conf_FHW), conf_FHW, 0).astype(np.float32),
            "depth_FHW": depth_FHW.astype(np.float32),
            "extrinsics_F34": extrinsics_F34.astype(np.float32),
            "pose_F44": extrinsics_to_pose(extrinsics_F34).astype(np.float32),
            "intrinsics_F33": intrinsics_F33,
        }
