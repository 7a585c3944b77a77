"""Geometry backend `rgbd`: metric world points from sensor depth, camera pose and intrinsics.

Used for scenes that come with depth (ScanNet, the toy world). Pixel (u, v) is the pixel centre in
OpenCV's convention (integer coordinates at centres), matching `scale_intrinsics`.

Legend: F frames, H x W pixels.
"""

from __future__ import annotations

import numpy as np

from pipeline.models.protocols import GeometryOutput, SensorFrames
from schemas.store import ModelRef


def scale_intrinsics(intrinsics_F33: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """Intrinsics of an image resized from src_hw to dst_hw (pixel centres stay pixel centres)."""
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    out_F33 = np.array(intrinsics_F33, dtype=np.float64, copy=True)
    out_F33[:, 0, 0] *= sx
    out_F33[:, 1, 1] *= sy
    out_F33[:, 0, 1] *= sx
    out_F33[:, 0, 2] = (out_F33[:, 0, 2] + 0.5) * sx - 0.5
    out_F33[:, 1, 2] = (out_F33[:, 1, 2] + 0.5) * sy - 0.5
    return out_F33.astype(np.float32)


def unproject_depth(depth_FHW: np.ndarray, intrinsics_F33: np.ndarray, poses_F44: np.ndarray) -> np.ndarray:
    """World points (float32 F x H x W x 3); NaN where depth is 0 / not finite or the pose is invalid."""
    num_frames, height, width = depth_FHW.shape
    v_HW, u_HW = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                             indexing="ij")
    pix_3N = np.stack([u_HW.ravel(), v_HW.ravel(), np.ones(height * width)])
    xyz_FHW3 = np.full((num_frames, height, width, 3), np.nan, dtype=np.float32)
    for f in range(num_frames):
        pose_44 = poses_F44[f].astype(np.float64)
        if not np.all(np.isfinite(pose_44)):
            continue  # ScanNet marks lost tracking with -inf poses
        depth_N = depth_FHW[f].astype(np.float64).ravel()
        valid_N = np.isfinite(depth_N) & (depth_N > 0)
        rays_3N = np.linalg.solve(intrinsics_F33[f].astype(np.float64), pix_3N)
        cam_3N = rays_3N * depth_N
        world_N3 = (pose_44[:3, :3] @ cam_3N).T + pose_44[:3, 3]
        world_N3[~valid_N] = np.nan
        xyz_FHW3[f] = world_N3.reshape(height, width, 3)
    return xyz_FHW3


class RGBDGeometry:
    """Metric points straight from the sensor; confidence is 1 where depth is valid."""

    def __init__(self) -> None:
        self.ref = ModelRef(kind="rgbd", model=None, revision=None, trained=True)

    def predict(self, images_FHW3: np.ndarray, sensor: SensorFrames) -> GeometryOutput:
        missing = [n for n in ("depth_FHW", "poses_F44", "intrinsics_F33") if getattr(sensor, n) is None]
        if missing:
            raise ValueError(f"scene {sensor.scene_id}: geometry 'rgbd' needs {', '.join(missing)}; "
                             "use geometry kind 'vggt' for scenes without depth")
        depth_intrinsics_F33 = (sensor.depth_intrinsics_F33 if sensor.depth_intrinsics_F33 is not None
                                else sensor.intrinsics_F33)
        xyz_FHW3 = unproject_depth(sensor.depth_FHW, depth_intrinsics_F33, sensor.poses_F44)
        conf_FHW = np.isfinite(xyz_FHW3[..., 0]).astype(np.float32)
        return GeometryOutput(xyz_FHW3=xyz_FHW3, conf_FHW=conf_FHW,
                              pose_F44=sensor.poses_F44.astype(np.float32),
                              intrinsics_F33=sensor.intrinsics_F33.astype(np.float32), frame="world")


def load_geometry(config, data_root, device) -> RGBDGeometry:
    return RGBDGeometry()
