"""Geometry backend `vggt`: our VGGT (pipeline.models.vggt) behind the geometry protocol.

VGGT's points and cameras are in the first camera's frame at an arbitrary unit, and are returned
as such (`frame="camera0"`). Bringing them into the world frame and metres is the world
alignment's job (pipeline/features/align.py): a similarity fitted to the sensor poses where they
exist, else a gravity frame with metres from sensor depth ("median_depth_ratio") or the workflow's
`scale_prior` ("prior"). Before store format 2 this module only rescaled, and the points stayed in
camera 0's frame.

Legend: F frames, H x W pixels.
"""

from __future__ import annotations

import numpy as np

from pipeline.models.protocols import GeometryOutput, SensorFrames


class ScaledVGGT:
    """Kept under its old name (the registry path); it no longer scales."""

    def __init__(self, vggt, model_id: str | None = None):
        self.vggt = vggt
        self.ref = vggt.ref if model_id is None else vggt.ref.model_copy(update={"model": model_id})

    def predict(self, images_FHW3: np.ndarray, sensor: SensorFrames) -> GeometryOutput:
        out = self.vggt.predict(images_FHW3)
        valid_FHW = np.isfinite(out["xyz_FHW3"]).all(axis=-1)
        conf_FHW = np.where(valid_FHW, out["conf_FHW"], 0).astype(np.float32)
        return GeometryOutput(xyz_FHW3=out["xyz_FHW3"].astype(np.float32), conf_FHW=conf_FHW,
                              pose_F44=out["pose_F44"].astype(np.float32),
                              intrinsics_F33=out["intrinsics_F33"].astype(np.float32), frame="camera0")


def load_geometry(config, data_root, device: str = "cpu") -> ScaledVGGT:
    """Factory for the registry: `config` is a `schemas.config_features.GeometryConfig`."""
    from pipeline.models.geometry_vggt import VGGTGeometry
    from pipeline.models.real_configs import is_random_id, resolve_random

    folder = resolve_random(config.model, data_root, family="vggt") if is_random_id(config.model) else config.model
    return ScaledVGGT(VGGTGeometry(folder, device=device, dtype=config.dtype), model_id=config.model)
