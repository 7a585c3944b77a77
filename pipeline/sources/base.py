"""The `Scene` every scene source yields, and uniform frame sampling.

Legend: F frames, H x W colour pixels, Hd x Wd depth pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from schemas.manifest import ObjectInfo


class SceneReadError(ValueError):
    """A scene cannot be read; the message names the scene and the offending file."""


@dataclass
class Scene:
    scene_id: str
    source: str  # toy | scannet | video
    path: str
    frame_indices: np.ndarray  # int64 F, indices into the scene's full frame sequence
    images_FHW3: np.ndarray  # uint8 RGB
    depth_FHdWd: np.ndarray | None = None  # float32 metres, 0 = invalid
    poses_F44: np.ndarray | None = None  # float32 camera-to-world (axis-aligned world when known)
    intrinsics_F33: np.ndarray | None = None  # float32, for the colour images
    depth_intrinsics_F33: np.ndarray | None = None  # float32, for the depth images
    instances_FHW: np.ndarray | None = None  # int32 instance id per colour pixel, -1 = none
    objects: list[ObjectInfo] = field(default_factory=list)
    num_frames_total: int = 0
    split: str | None = None
    warnings: list[str] = field(default_factory=list)  # problems worth a line in the run report

    def __post_init__(self) -> None:
        num = len(self.frame_indices)
        for name in ("images_FHW3", "depth_FHdWd", "poses_F44", "intrinsics_F33", "instances_FHW"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != num:
                raise SceneReadError(
                    f"scene {self.scene_id}: {name} has {len(arr)} frames, expected {num}"
                )

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images_FHW3.shape[1]), int(self.images_FHW3.shape[2])


def uniform_indices(num_total: int, num_wanted: int) -> np.ndarray:
    """`num_wanted` indices spread evenly over `num_total` frames (all of them when fewer)."""
    if num_total <= 0:
        raise ValueError("no frames to sample from")
    if num_wanted >= num_total:
        return np.arange(num_total, dtype=np.int64)
    # Centre of each of num_wanted equal bins: symmetric, and deterministic.
    return np.floor((np.arange(num_wanted) + 0.5) * num_total / num_wanted).astype(np.int64)
