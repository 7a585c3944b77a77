"""Geometry backend `vggt`: our VGGT (pipeline.models.vggt) plus metric scale.

VGGT's points are up to scale. With sensor depth, the scene's factor is the median ratio of sensor
to predicted depth over pixels where both are valid ("median_depth_ratio"); without it, the
workflow's `scale_prior` (metres per VGGT unit, "prior"). The factor multiplies points and camera
translations, and the store records it with its method.

Legend: F frames, H x W pixels.
"""

from __future__ import annotations

import numpy as np

from pipeline.models.protocols import GeometryOutput, SensorFrames


def scale_for(pred_depth_FHW: np.ndarray, pred_valid_FHW: np.ndarray, sensor_depth_FHW: np.ndarray | None,
              prior: float, scene_id: str) -> tuple[float, str]:
    from pipeline.models.vggt.geometry import estimate_scale

    if sensor_depth_FHW is None:
        return float(prior), "prior"
    try:
        return estimate_scale(pred_depth_FHW, sensor_depth_FHW, pred_valid_FHW), "median_depth_ratio"
    except ValueError as e:
        raise ValueError(f"scene {scene_id}: cannot estimate VGGT scale from sensor depth: {e}") from e


class ScaledVGGT:
    def __init__(self, vggt, scale_prior: float = 1.0, model_id: str | None = None):
        self.vggt = vggt
        self.scale_prior = scale_prior
        self.ref = vggt.ref if model_id is None else vggt.ref.model_copy(update={"model": model_id})

    def predict(self, images_FHW3: np.ndarray, sensor: SensorFrames) -> GeometryOutput:
        out = self.vggt.predict(images_FHW3)
        valid_FHW = np.isfinite(out["xyz_FHW3"]).all(axis=-1)
        scale, method = scale_for(out["depth_FHW"], valid_FHW, sensor.depth_FHW, self.scale_prior,
                                  sensor.scene_id)
        pose_F44 = out["pose_F44"].astype(np.float32).copy()
        pose_F44[:, :3, 3] *= scale
        conf_FHW = np.where(valid_FHW, out["conf_FHW"], 0).astype(np.float32)
        return GeometryOutput(xyz_FHW3=(out["xyz_FHW3"] * scale).astype(np.float32), conf_FHW=conf_FHW,
                              pose_F44=pose_F44, intrinsics_F33=out["intrinsics_F33"].astype(np.float32),
                              scale=float(scale), scale_method=method)


def load_geometry(config, data_root, device: str = "cpu") -> ScaledVGGT:
    """Factory for the registry: `config` is a `schemas.config_features.GeometryConfig`."""
    from pipeline.models.geometry_vggt import VGGTGeometry

    return ScaledVGGT(VGGTGeometry(config.model, device=device, dtype=config.dtype),
                      scale_prior=config.scale_prior, model_id=config.model)
