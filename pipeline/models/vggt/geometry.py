"""VGGT camera maths: pose encoding -> OpenCV cameras, depth unprojection, scale from sensor depth.

Legend: S frames, H x W pixels. Extrinsics are camera-from-world [R|t] (OpenCV axes: x right,
y down, z forward); poses are their inverse, camera-to-world 4x4. Pure numpy.
"""

from __future__ import annotations

import numpy as np


def quaternion_xyzw_to_matrix(quat_S4: np.ndarray) -> np.ndarray:
    """Rotation matrices of scalar-last quaternions; non-unit ones are valid (divided by |q|^2)."""
    i, j, k, r = (quat_S4[..., n] for n in range(4))
    s = 2.0 / (quat_S4 * quat_S4).sum(-1)
    rot = np.stack([
        1 - s * (j * j + k * k), s * (i * j - k * r), s * (i * k + j * r),
        s * (i * j + k * r), 1 - s * (i * i + k * k), s * (j * k - i * r),
        s * (i * k - j * r), s * (j * k + i * r), 1 - s * (i * i + j * j),
    ], axis=-1)
    return rot.reshape(*quat_S4.shape[:-1], 3, 3)


def pose_encoding_to_cameras(
    pose_enc_S9: np.ndarray, image_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(extrinsics [...,3,4] camera-from-world, intrinsics [...,3,3]) for images of size (H, W)."""
    pose = np.asarray(pose_enc_S9, dtype=np.float32)
    if pose.shape[-1] != 9:
        raise ValueError(f"pose encoding must end in 9 values, got shape {pose.shape}")
    height, width = image_hw
    rot = quaternion_xyzw_to_matrix(pose[..., 3:7])
    extrinsics = np.concatenate((rot, pose[..., :3, None]), axis=-1).astype(np.float32)
    intrinsics = np.zeros((*pose.shape[:-1], 3, 3), dtype=np.float32)
    intrinsics[..., 0, 0] = (width / 2) / np.tan(pose[..., 8] / 2)
    intrinsics[..., 1, 1] = (height / 2) / np.tan(pose[..., 7] / 2)
    intrinsics[..., 0, 2] = width / 2
    intrinsics[..., 1, 2] = height / 2
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def extrinsics_to_pose(extrinsics_S34: np.ndarray) -> np.ndarray:
    """Camera-to-world 4x4 from camera-from-world [R|t] (closed-form inverse), float64."""
    ext = np.asarray(extrinsics_S34, dtype=np.float64)
    rot_t = np.swapaxes(ext[..., :3, :3], -1, -2)
    pose = np.zeros((*ext.shape[:-2], 4, 4))
    pose[..., :3, :3] = rot_t
    pose[..., :3, 3] = -(rot_t @ ext[..., :3, 3:4])[..., 0]
    pose[..., 3, 3] = 1.0
    return pose


def unproject_depth(
    depth_SHW: np.ndarray, extrinsics_S34: np.ndarray, intrinsics_S33: np.ndarray
) -> np.ndarray:
    """World points [S,H,W,3] float64 of a depth map; pixel (u, v) is column u, row v, no +0.5."""
    depth = np.asarray(depth_SHW)
    if depth.ndim == 4 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 3:
        raise ValueError(f"depth must be [S,H,W] or [S,H,W,1], got {depth.shape}")
    num_s, height, width = depth.shape
    if extrinsics_S34.shape != (num_s, 3, 4) or intrinsics_S33.shape != (num_s, 3, 3):
        raise ValueError("extrinsics/intrinsics do not match the depth's frame count")
    v_HW, u_HW = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    k = np.asarray(intrinsics_S33, dtype=np.float64)
    fx, fy, cx, cy = (k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2])
    d = depth.astype(np.float64)
    cam_SHW3 = np.stack((
        (u_HW[None] - cx[:, None, None]) * d / fx[:, None, None],
        (v_HW[None] - cy[:, None, None]) * d / fy[:, None, None],
        d,
    ), axis=-1).astype(np.float32)
    pose_S44 = extrinsics_to_pose(extrinsics_S34)
    world = np.einsum("sij,shwj->shwi", pose_S44[:, :3, :3], cam_SHW3.astype(np.float64))
    return world + pose_S44[:, None, None, :3, 3]


def estimate_scale(
    pred_depth_FHW: np.ndarray, sensor_depth_FHW: np.ndarray, valid: np.ndarray | None = None
) -> float:
    """Metres per predicted unit: the median of sensor / predicted depth over usable pixels.

    A pixel is usable where `valid` holds (all pixels when None) and both depths are finite and > 0.
    """
    pred = np.asarray(pred_depth_FHW, dtype=np.float64)
    sensor = np.asarray(sensor_depth_FHW, dtype=np.float64)
    if pred.shape != sensor.shape:
        raise ValueError(
            f"predicted depth {pred.shape} and sensor depth {sensor.shape} differ in shape; resize first"
        )
    usable = np.isfinite(pred) & np.isfinite(sensor) & (pred > 0) & (sensor > 0)
    if valid is not None:
        if np.shape(valid) != pred.shape:
            raise ValueError(f"valid mask {np.shape(valid)} does not match depth {pred.shape}")
        usable &= np.asarray(valid, dtype=bool)
    if not usable.any():
        raise ValueError("no pixel has both a valid predicted and a valid sensor depth")
    return float(np.median(sensor[usable] / pred[usable]))
