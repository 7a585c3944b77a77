"""Feature-stage configuration (the `features:` section of a workflow)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# Hub ids of the real checkpoints; `toy:` ids are random-weight models p3d builds and saves itself.
QWEN_VL_DEFAULT = "Qwen/Qwen2.5-VL-7B-Instruct"
VGGT_DEFAULT = "facebook/VGGT-1B"
SAM2_DEFAULT = "facebook/sam2.1-hiera-large"
DEPTH_METRIC_DEFAULT = "depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf"  # also -Small-hf, -Base-hf


class EncoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["qwen2_5_vl"] = "qwen2_5_vl"
    model: str = QWEN_VL_DEFAULT
    revision: str | None = None
    video_mode: bool = Field(False, description="encode frames as video (temporal patches) instead of per frame")
    keep_premerge: bool = Field(False, description="also compute the pre-merger map (not stored)")
    frames_per_batch: int = Field(8, ge=2, description="frames per vision-tower call (memory bound)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class DepthModelConfig(BaseModel):
    """A metric depth model (pipeline/models/depth_metric.py) for metres when there is no sensor depth."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["depth_anything"] = "depth_anything"
    model: str = DEPTH_METRIC_DEFAULT
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class GeometryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["rgbd", "vggt", "sim_vggt"] = "rgbd"
    model: str = VGGT_DEFAULT
    revision: str | None = None
    scale_prior: float = Field(1.0, gt=0, description="metres per VGGT unit when neither sensor poses, "
                                                      "sensor depth nor a depth model exist (the last resort)")
    depth_model: DepthModelConfig | None = Field(None, description="metric depth model giving metres when "
                                                                   "the source has no sensor poses nor depth")
    withhold_sensor: list[Literal["poses", "depth"]] = Field(
        [], description="sensor data the world alignment must not use, as if the source were a video; "
                        "withheld depth still measures the depth model's scale error")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # World alignment of camera-0 backends (pipeline/features/align.py).
    orientation_weight: float = Field(1.0, ge=0, description="weight of the camera orientations beside the "
                                                             "camera centres in the rotation fit; 0 = Umeyama")
    # sim_vggt only: VGGT's output contract and errors simulated from sensor depth and poses
    # (pipeline/toy/sim_vggt.py).
    depth_noise: float = Field(0.015, ge=0, lt=0.5, description="sim_vggt: relative per-pixel depth noise (sd)")
    rotation_noise_deg: float = Field(0.5, ge=0, description="sim_vggt: per-camera rotation noise (sd, degrees)")
    translation_noise_m: float = Field(0.015, ge=0, description="sim_vggt: per-camera centre noise (sd, metres)")
    invalid_rate: float = Field(0.01, ge=0, lt=1, description="sim_vggt: fraction of pixels with no prediction")
    unit_range: tuple[float, float] = Field((0.3, 3.0), description="sim_vggt: the unknown scale (geometry "
                                                                    "units per metre) is drawn log-uniformly here")
    sim_seed: int = Field(0, description="sim_vggt: seed, mixed with the scene id")

    @model_validator(mode="after")
    def _unit_range_ordered(self) -> GeometryConfig:
        low, high = self.unit_range
        if not 0 < low <= high:
            raise ValueError(f"unit_range must satisfy 0 < low <= high, got {self.unit_range}")
        if self.withhold_sensor and self.kind == "rgbd":
            raise ValueError("withhold_sensor needs a camera-0 backend (vggt, sim_vggt): rgbd is built "
                             "from the sensor's depth and poses")
        return self


class SegmenterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["instances", "sam2", "sim_sam2"] = "instances"
    model: str = SAM2_DEFAULT
    revision: str | None = None
    points_per_side: int = Field(16, ge=2)
    points_per_batch: int = Field(64, ge=1, description="sam2: (frame, point prompt) pairs per mask-decoder call")
    frames_per_batch: int = Field(8, ge=1, description="sam2: frames per image-encoder call (memory bound)")
    pred_iou_thresh: float = Field(0.7, ge=0, le=1, description="drop masks whose predicted IoU is lower")
    stability_thresh: float = Field(0.9, ge=0, le=1, description="drop masks less stable than this")
    nms_iou: float = Field(0.7, gt=0, le=1, description="mask IoU above which the weaker mask is dropped")
    min_mask_area: float = Field(0.002, ge=0, description="fraction of the image")
    # Cross-frame identity: per-frame masks merged by the overlap of their 3D points (mask_merge.py).
    merge: Literal["overlap3d"] = "overlap3d"
    merge_voxel: float = Field(0.05, gt=0, description="voxel size (geometry units, metres) for 3D overlap")
    merge_min_overlap: float = Field(0.3, gt=0, le=1, description="shared voxels / smaller mask's voxels")
    # sim_sam2 only: SAM 2's errors simulated from ground-truth masks (pipeline/toy/sim_sam2.py).
    split_rate: float = Field(0.15, ge=0, le=1, description="sim_sam2: fraction of objects split in two")
    merge_rate: float = Field(0.1, ge=0, le=1, description="sim_sam2: fraction of objects merged with a neighbour")
    miss_rate: float = Field(0.1, ge=0, le=1, description="sim_sam2: chance an object is missed in a frame")
    background_rate: float = Field(0.25, ge=0, le=1, description="sim_sam2: fraction of frames whose background "
                                                                "(walls, floor) gets masks")
    background_masks: int = Field(2, ge=1, description="sim_sam2: masks the background is cut into")
    sim_seed: int = Field(0, description="sim_sam2: seed, mixed with the scene id")


class FeaturesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_frames: int = Field(32, ge=1)
    image_size: tuple[int, int] = Field((448, 588), description="encoder input H, W in pixels")
    latent_grid: tuple[int, int] | None = Field(
        None, description="h, w of the stored token grid: the encoder's maps upsampled bilinearly to it "
                          "and points, labels, confidences patchified at image_size / latent_grid pixels "
                          "(the paper's 32 x 42 from 448 x 588, Table 4); none = the encoder's own grid")
    encoder: EncoderConfig = EncoderConfig()
    geometry: GeometryConfig = GeometryConfig()
    segmenter: SegmenterConfig = SegmenterConfig()
    executor: Literal["ray", "local"] = Field(
        "ray", description="ray: Ray actors (RAY_ADDRESS names a cluster); local: one process, in order")
    num_actors: int = Field(1, ge=1, description="Ray actors (one model set each)")
    gpus_per_actor: float = Field(1.0, ge=0, description="used only when CUDA is available")
    max_in_flight: int = Field(2, ge=1, description="scenes in memory at once per actor")

    @field_validator("latent_grid")
    @classmethod
    def _latent_grid_divides_the_image(cls, value: tuple[int, int] | None, info: ValidationInfo
                                       ) -> tuple[int, int] | None:
        if value is None or "image_size" not in info.data:
            return value
        (height, width), (grid_h, grid_w) = info.data["image_size"], value
        if grid_h < 1 or grid_w < 1 or height % grid_h or width % grid_w \
                or height // grid_h != width // grid_w:
            raise ValueError(f"latent_grid {list(value)} must divide image_size [{height}, {width}] into "
                             "square pixel patches (e.g. [32, 42] for [448, 588]: 14 px)")
        return value
