"""Geometry backend `sim_vggt`: VGGT's output contract made from sensor depth, poses and intrinsics.

For the toy world, which has no real network to run: the output is what VGGT gives after our
wrapper (pipeline/models/geometry_vggt.py), with the errors such a network makes, so the world
alignment downstream must recover the scene's frame and metres exactly as it must for VGGT:
  - frame "camera0": the reference camera (the first with a finite sensor pose) is the identity;
    nothing of the sensor's world frame is passed through;
  - an unknown unit: everything is multiplied by `units` geometry units per metre, drawn
    log-uniformly from `unit_range` with a seed mixed from `sim_seed` and the scene id;
  - pose noise: each camera's rotation is perturbed by a random axis-angle (sd `rotation_noise_deg`
    per axis) and its centre by `translation_noise_m` (sd per axis, metres, before the unit);
  - depth noise: relative, per pixel (sd `depth_noise`); `invalid_rate` of the pixels get no point;
  - confidence as VGGT's (1 + exp(x) >= 1), lower where the depth error drawn was larger;
  - intrinsics as VGGT predicts them: the principal point at the image centre (pixel-centre
    convention, (W-1)/2, (H-1)/2), the focal lengths from the true field of view; where the
    sensor's principal point is off-centre (ScanNet) the rays differ slightly from the sensor's.
Points are unprojected from the noisy depth with the returned (noisy) cameras, so `xyz`, `pose`
and `intrinsics` agree exactly, as in our VGGT wrapper. Frames whose sensor pose is not finite have
no prediction (NaN pose and points).

Legend: F frames, H x W pixels.
"""

from __future__ import annotations

import zlib

import numpy as np

from pipeline.models.protocols import GeometryOutput, SensorFrames
from pipeline.models.vggt.geometry import unproject_depth
from schemas.config_features import GeometryConfig
from schemas.store import ModelRef


def scene_rng(seed: int, scene_id: str) -> np.random.Generator:
    """A generator fixed by (seed, scene id), stable across processes (no Python hash salt)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(scene_id.encode())])


def _axis_angle_33(rotvec_3: np.ndarray) -> np.ndarray:
    """Rodrigues' formula."""
    angle = float(np.linalg.norm(rotvec_3))
    if angle < 1e-12:
        return np.eye(3)
    k = rotvec_3 / angle
    k_33 = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * k_33 + (1 - np.cos(angle)) * k_33 @ k_33


def vggt_intrinsics(intrinsics_F33: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """VGGT's camera model: principal point at the image centre, focal lengths keeping the field of view."""
    height, width = image_hw
    k = np.asarray(intrinsics_F33, dtype=np.float64)
    out_F33 = np.zeros_like(k)
    out_F33[:, 0, 0] = k[:, 0, 0]
    out_F33[:, 1, 1] = k[:, 1, 1]
    out_F33[:, 0, 2] = (width - 1) / 2
    out_F33[:, 1, 2] = (height - 1) / 2
    out_F33[:, 2, 2] = 1.0
    return out_F33


class SimVGGT:
    """`config` is the workflow's `geometry` section: its noise levels, unit range and seed."""

    def __init__(self, config: GeometryConfig):
        self.depth_noise, self.rotation_noise_deg = config.depth_noise, config.rotation_noise_deg
        self.translation_noise_m, self.invalid_rate = config.translation_noise_m, config.invalid_rate
        self.unit_range, self.seed = tuple(config.unit_range), config.sim_seed
        self.ref = ModelRef(kind="sim_vggt", model=None, revision=None, trained=False)

    def units_for(self, scene_id: str) -> float:
        """Geometry units per metre of this scene (the first draw of its generator)."""
        low, high = self.unit_range
        return float(np.exp(scene_rng(self.seed, scene_id).uniform(np.log(low), np.log(high))))

    def predict(self, images_FHW3: np.ndarray, sensor: SensorFrames) -> GeometryOutput:
        missing = [n for n in ("depth_FHW", "poses_F44", "intrinsics_F33") if getattr(sensor, n) is None]
        if missing:
            raise ValueError(f"scene {sensor.scene_id}: geometry 'sim_vggt' simulates VGGT from sensor data "
                             f"and needs {', '.join(missing)}")
        depth_FHW = np.asarray(sensor.depth_FHW, dtype=np.float64)
        num_frames, height, width = depth_FHW.shape
        if images_FHW3.shape[:3] != depth_FHW.shape:
            raise ValueError(f"scene {sensor.scene_id}: depth {depth_FHW.shape} does not match the frames "
                             f"{images_FHW3.shape[:3]}")
        rng = scene_rng(self.seed, sensor.scene_id)
        low, high = self.unit_range
        units = float(np.exp(rng.uniform(np.log(low), np.log(high))))  # == units_for(scene_id)

        world_F44 = np.asarray(sensor.poses_F44, dtype=np.float64)
        posed_F = np.isfinite(world_F44).all(axis=(1, 2))
        if not posed_F.any():
            raise ValueError(f"scene {sensor.scene_id}: no frame has a finite sensor pose to simulate from")
        noisy_F44 = np.tile(np.eye(4), (num_frames, 1, 1))
        for f in range(num_frames):
            rotvec_3 = rng.normal(0.0, np.radians(self.rotation_noise_deg), 3)
            shift_3 = rng.normal(0.0, self.translation_noise_m, 3)
            if posed_F[f]:
                noisy_F44[f, :3, :3] = _axis_angle_33(rotvec_3) @ world_F44[f, :3, :3]
                noisy_F44[f, :3, 3] = world_F44[f, :3, 3] + shift_3
        ref = int(np.argmax(posed_F))
        pose_F44 = np.linalg.inv(noisy_F44[ref]) @ noisy_F44  # the reference camera is the identity
        pose_F44[:, :3, 3] *= units
        pose_F44[~posed_F] = np.nan

        error_FHW = rng.normal(0.0, 1.0, depth_FHW.shape)
        pred_depth_FHW = depth_FHW * (1.0 + self.depth_noise * error_FHW) * units
        valid_FHW = (np.isfinite(depth_FHW) & (depth_FHW > 0) & posed_F[:, None, None]
                     & (rng.random(depth_FHW.shape) >= self.invalid_rate))
        intrinsics_F33 = vggt_intrinsics(sensor.intrinsics_F33, (height, width))
        extrinsics_F34 = np.linalg.inv(np.where(posed_F[:, None, None], pose_F44, np.eye(4)))[:, :3, :]
        with np.errstate(invalid="ignore"):
            xyz_FHW3 = unproject_depth(np.where(valid_FHW, pred_depth_FHW, np.nan), extrinsics_F34,
                                       intrinsics_F33).astype(np.float32)
        xyz_FHW3[~valid_FHW] = np.nan
        conf_FHW = np.where(valid_FHW, 1.0 + 4.0 * np.exp(-0.5 * error_FHW ** 2), 0.0)
        return GeometryOutput(xyz_FHW3=xyz_FHW3, conf_FHW=conf_FHW.astype(np.float32),
                              pose_F44=pose_F44.astype(np.float32),
                              intrinsics_F33=intrinsics_F33.astype(np.float32), frame="camera0")


def load_geometry(config: GeometryConfig, data_root, device: str = "cpu") -> SimVGGT:
    """Factory for the registry."""
    return SimVGGT(config)
