"""The model backends of the feature stage, behind small protocols.

A backend knows nothing about Ray or files: arrays in, arrays out. The workflow names each backend
by its `kind`; schemas/plugins.py resolves the name to the backend's factory (entry points in
pyproject.toml), imported only when used so that `schemas` and `p3d --help` never pull in torch.

Legend: F frames, H x W pixels at the encoder's input size, h x w token grid, D feature dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from schemas.store import ModelRef


@dataclass
class EncoderOutput:
    feat_FhwD: np.ndarray  # float32, one token per patch_size x patch_size pixels
    premerge_FHpWpC: np.ndarray | None = None  # float32, before the 2x2 merger (2h x 2w), when asked


@dataclass
class GeometryOutput:
    """A geometry backend's points and cameras, and the frame they are in.

    frame "world":   the sensor's world frame in metres (`rgbd`: depth + sensor poses); stored as is.
    frame "camera0": the first frame's camera is the identity and the unit is unknown (VGGT,
                     `sim_vggt`); the feature stage aligns it to the world (pipeline/features/align.py).
    Points and poses are always in the same frame and unit, so `pose` maps camera to `xyz`'s frame.
    """

    xyz_FHW3: np.ndarray  # float32 points in `frame`, NaN = invalid
    conf_FHW: np.ndarray  # float32, 0 where invalid
    pose_F44: np.ndarray  # float32 camera-to-`frame`
    intrinsics_F33: np.ndarray  # float32 at H x W
    frame: Literal["world", "camera0"]  # required: a backend always says which


@runtime_checkable
class Encoder(Protocol):
    ref: ModelRef
    patch_size: int  # pixels per output token side
    dim: int

    def encode(self, images_FHW3: np.ndarray) -> EncoderOutput: ...


@runtime_checkable
class Geometry(Protocol):
    ref: ModelRef

    def predict(self, images_FHW3: np.ndarray, sensor: SensorFrames) -> GeometryOutput: ...


@runtime_checkable
class Segmenter(Protocol):
    ref: ModelRef

    def segment(self, images_FHW3: np.ndarray, sensor: SensorFrames,
                xyz_FHW3: np.ndarray | None = None) -> np.ndarray: ...  # int32 F x H x W, -1 = none


@runtime_checkable
class MetricDepth(Protocol):
    ref: ModelRef

    def predict(self, images_FHW3: np.ndarray) -> np.ndarray: ...  # float32 F x H x W metres


@dataclass
class SensorFrames:
    """What a scene source measured, resampled to the encoder's H x W (nearest for depth and masks).

    `depth_FHW` is 0 where invalid; every field may be absent (a plain video has none).
    """

    scene_id: str
    depth_FHW: np.ndarray | None = None
    poses_F44: np.ndarray | None = None
    intrinsics_F33: np.ndarray | None = None  # of the colour images
    depth_intrinsics_F33: np.ndarray | None = None  # of the depth images, when they differ
    instances_FHW: np.ndarray | None = None
