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
The group attributes are a `StoreAttrs`; `complete: true` is written last, and a group counts as
complete only with every chunk of every array present (`FILL_VALUES` says why). Since format 2, `xyz` and
`pose` are in the scene's world frame (metres, z up where known) and `alignment` says how the
geometry backend's output was brought there.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.layout import FEATURES_DIR, RUNS_DIR  # noqa: F401  (their home; importers read them here too)

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
# Every array's fill value (what a chunk never written reads as) can never pass for data: NaN for
# floats (xyz already uses NaN for invalid points, so readers also count the chunks), int32 min for
# labels (written labels are >= -1; readers refuse anything below).
UNWRITTEN_LABEL = -(2**31)
FILL_VALUES: dict[str, float | int] = {
    "feat": float("nan"), "xyz": float("nan"), "label": UNWRITTEN_LABEL, "conf": float("nan"),
    "pose": float("nan"), "intrinsics": float("nan"), "gt_label": UNWRITTEN_LABEL,
}
NO_LABEL = -1
STORE_FORMAT_VERSION = 2  # 2: world alignment attrs (`alignment`), optional gt_label


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    model: str | None = None
    revision: str | None = None
    trained: bool = Field(True, description="false for p3d's random-weight toy models")


class WorldAlignment(BaseModel):
    """How the geometry backend's output was mapped into the stored world frame (features/align.py).

    `similarity` is the 4x4 world-from-geometry matrix [[s R, t], [0, 1]] (row-major) applied to the
    backend's points and camera centres: x_world = s R x + t.
    """

    model_config = ConfigDict(extra="forbid")
    method: Literal["sensor_poses", "gravity", "identity"] = Field(
        description="sensor_poses: similarity fitted to the sensor cameras; gravity: no poses, z up from "
                    "the cameras/floor; identity: the backend was already in the metric world frame")
    similarity: list[list[float]] = Field(description="4x4 world-from-geometry, row-major")
    scale: float = Field(gt=0, description="metres per geometry unit (the s in the similarity)")
    scale_method: Literal["metric", "camera_centres", "median_depth_ratio", "depth_model", "prior"] = Field(
        description="metric: the backend was metric; camera_centres: the sensor-pose fit; median_depth_ratio: "
                    "sensor depth; depth_model: a metric depth model (no sensor depth); prior: the "
                    "configured scale_prior, measured by nothing")
    scale_error: float | None = Field(None, description="depth_model only, where the source has depth the scale "
                                                        "did not use: scale / sensor-depth scale - 1")
    residual_m: float | None = Field(None, description="RMS camera-centre error of the fit, metres")
    rotation_residual_deg: float | None = Field(None, description="RMS camera orientation error, degrees")
    num_frames: int = Field(0, ge=0, description="frames the fit used")
    up_method: Literal["cameras", "floor"] | None = Field(None, description="gravity only: what gave z up")

    @field_validator("similarity")
    @classmethod
    def _is_4x4(cls, value: list[list[float]]) -> list[list[float]]:
        import math

        if len(value) != 4 or any(len(row) != 4 for row in value) or \
                not all(math.isfinite(x) for row in value for x in row):
            raise ValueError("similarity must be a finite 4x4 matrix")
        return value


class StoreAttrs(BaseModel):
    """Attributes of one scene group in the triplet store."""

    model_config = ConfigDict(extra="allow")
    format_version: int = STORE_FORMAT_VERSION
    scene_id: str
    source: dict[str, Any]
    encoder: ModelRef
    geometry: ModelRef
    segmenter: ModelRef
    depth_model: ModelRef | None = Field(None, description="the metric depth model, when it gave the scale")
    frame_indices: list[int]
    image_size: list[int] = Field(description="encoder input H, W in pixels")
    patch_size: int = Field(description="pixels per stored token side (28 for Qwen2.5-VL's own grid, 14 "
                                        "at a 2x latent_grid)")
    grid: list[int] = Field(description="h, w of the stored arrays")
    encoder_grid: list[int] | None = Field(None, description="h, w of the encoder's own maps; differs from "
                                                             "`grid` when they were upsampled bilinearly")
    scale: float = Field(1.0, description="metric scale factor applied to the geometry")
    scale_method: str = "metric"
    alignment: WorldAlignment | None = Field(None, description="world alignment (set by the feature stage "
                                                               "since format 2)")
    objects: list[dict[str, Any]] = []
    pipeline_version: str
    config_hash: str | None = Field(None, description="the feature config it was made with (resume)")
    source_fingerprint: str | None = Field(None, description="the source's identity and its input files' "
                                                             "sizes and mtimes (resume redoes on a change)")
    complete: bool = False
