"""Scene manifest: what a scene source says about one scene (objects, frames, provenance)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Vec3 = Annotated[list[float], Field(min_length=3, max_length=3)]


class Box3D(BaseModel):
    """Axis-aligned 3D box in metres, in the scene's (axis-aligned) world frame."""

    model_config = ConfigDict(extra="forbid")
    center: Vec3
    size: Vec3

    @classmethod
    def from_min_max(cls, lo, hi) -> "Box3D":
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        return cls(center=((lo + hi) / 2).tolist(), size=(hi - lo).tolist())

    @property
    def min(self) -> np.ndarray:
        return np.asarray(self.center) - np.asarray(self.size) / 2

    @property
    def max(self) -> np.ndarray:
        return np.asarray(self.center) + np.asarray(self.size) / 2


class ObjectInfo(BaseModel):
    """One physical object of a scene; `id` is the instance id used in masks and records."""

    model_config = ConfigDict(extra="forbid")
    id: int = Field(ge=0)
    category: str
    box: Box3D


class SceneManifest(BaseModel):
    """Provenance and ground truth of one scene, as read by a scene source."""

    model_config = ConfigDict(extra="forbid")
    scene_id: str
    source: str = Field(description="scene source kind: toy | scannet | video")
    path: str
    num_frames_total: int = Field(ge=0)
    frame_indices: list[int]
    image_size: Annotated[list[int], Field(min_length=2, max_length=2)] = Field(description="H, W")
    has_depth: bool
    has_instances: bool
    objects: list[ObjectInfo] = []
    split: str | None = None
