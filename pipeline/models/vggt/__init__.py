"""Our own PyTorch implementation of VGGT inference (facebookresearch/vggt @ 44b3afb).

Built from `shared/reference/vggt/ARCHITECTURE.md`; loads the official `facebook/VGGT-1B` state
dict under its own key names (the track head is not implemented and its weights are skipped).
"""

from pipeline.models.vggt.config import AggregatorConfig, CameraHeadConfig, DPTHeadConfig, VGGTConfig
from pipeline.models.vggt.geometry import (
    estimate_scale,
    extrinsics_to_pose,
    pose_encoding_to_cameras,
    unproject_depth,
)
from pipeline.models.vggt.loader import load_vggt, random_vggt, resolve_dtype, save_vggt
from pipeline.models.vggt.model import VGGT
from pipeline.models.vggt.preprocess import fit_size, preprocess_images

__all__ = [
    "VGGT", "AggregatorConfig", "CameraHeadConfig", "DPTHeadConfig", "VGGTConfig",
    "estimate_scale", "extrinsics_to_pose", "fit_size", "load_vggt", "pose_encoding_to_cameras",
    "preprocess_images", "random_vggt", "resolve_dtype", "save_vggt", "unproject_depth",
]
