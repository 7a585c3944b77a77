"""Triplet store layout: one Zarr v3 group per scene under `<out>/features/<scene_id>`.

Arrays (F frames, h x w patch grid, D feature dim):
  feat        float16  F x h x w x D
  xyz         float32  F x h x w x 3   NaN = invalid geometry
  label       int32    F x h x w       -1 = no label
  conf        float16  F x h x w
  pose        float32  F x 4 x 4       camera-to-world
  intrinsics  float32  F x 3 x 3       at the encoder's input resolution
  gt_label    int32    F x h x w       optional (format 2): the ground-truth instance per patch, -1 =
                                       none; only where the source has instances (toy, ScanNet)
The group attributes are a `StoreAttrs`; `complete: true` is written last.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FEATURES_DIR = "features"
RUNS_DIR = "_runs"
ARRAYS: dict[str, str] = {
    "feat": "float16",
    "xyz": "float32",
    "label": "int32",
    "conf": "float16",
    "pose": "float32",
    "intrinsics": "float32",
}
# Arrays written only when the source has them; their fill value is never a valid entry, so a
# chunk that was never written cannot pass for data (readers check it).
OPTIONAL_ARRAYS: dict[str, str] = {
    "gt_label": "int32",
}
OPTIONAL_FILL: dict[str, int] = {"gt_label": -(2**31)}
NO_LABEL = -1
STORE_FORMAT_VERSION = 1


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    model: str | None = None
    revision: str | None = None
    trained: bool = Field(True, description="false for p3d's random-weight toy models")


class StoreAttrs(BaseModel):
    """Attributes of one scene group in the triplet store."""

    model_config = ConfigDict(extra="allow")
    format_version: int = STORE_FORMAT_VERSION
    scene_id: str
    source: dict[str, Any]
    encoder: ModelRef
    geometry: ModelRef
    segmenter: ModelRef
    frame_indices: list[int]
    image_size: list[int] = Field(description="encoder input H, W in pixels")
    patch_size: int = Field(description="pixels per output token side (28 for Qwen2.5-VL)")
    grid: list[int] = Field(description="h, w")
    scale: float = Field(1.0, description="metric scale factor applied to the geometry")
    scale_method: str = "metric"
    objects: list[dict[str, Any]] = []
    pipeline_version: str
    complete: bool = False
