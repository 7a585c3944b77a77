"""One scene through the feature stage: Scene + loaded models -> triplet arrays + StoreAttrs.

No Ray and no files here (the driver adds those). Steps: pick N frames uniformly, resize colour to
the encoder's input size (bicubic, as Qwen's processor) and depth / masks by nearest neighbour
(never blending depths or ids), scale intrinsics to match, run encoder, geometry and segmenter, and
patchify points and labels onto the encoder's token grid. Geometry in camera 0's frame (VGGT,
`sim_vggt`) is aligned to the scene's world frame right after the geometry backend, before the
segmenter: the SAM 2 mask merge voxelizes points in metres (features/align.py). With a
`latent_grid` the encoder's maps are upsampled bilinearly to it and everything else is patchified
at its finer pixel patch (patchify.upsample_features says why align_corners=False).

A scene fails with `ValueError` naming it when its frames are malformed, its geometry is all
invalid, its alignment fails (too few posed frames, a degenerate fit), or its segmenter found no
mask at all: such a scene would give the cluster stage nothing.

Legend: F frames, H x W encoder input pixels, h x w token grid, D feature dim.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

import pipeline
from pipeline.features.align import align_to_world
from pipeline.features.patchify import nearest_resize, patchify, patchify_labels, upsample_features
from pipeline.models.protocols import Encoder, Geometry, GeometryOutput, MetricDepth, Segmenter, SensorFrames
from pipeline.models.rgbd import scale_intrinsics
from pipeline.sources.base import Scene, uniform_indices
from schemas.config_features import FeaturesConfig
from schemas.plugins import DEPTH_MODELS, ENCODERS, GEOMETRY, SEGMENTERS
from schemas.plugins import load as load_plugin
from schemas.store import StoreAttrs, WorldAlignment


@dataclass
class FeatureModels:
    encoder: Encoder
    geometry: Geometry
    segmenter: Segmenter
    depth: MetricDepth | None = None  # metres for camera-0 geometry when the source has no depth


@dataclass
class SceneResult:
    arrays: dict[str, np.ndarray]
    attrs: StoreAttrs
    seconds: dict[str, float] = field(default_factory=dict)  # per step, for the benchmark
    warnings: list[str] = field(default_factory=list)  # for the run report (the scene's own, alignment)


def load_models(cfg: FeaturesConfig, data_root: str | Path, device: str = "cpu") -> FeatureModels:
    """Build the backends the config names (each loads its weights once), through the plugin registry."""
    return FeatureModels(
        encoder=load_plugin(ENCODERS, cfg.encoder.kind)(cfg.encoder, data_root, device),
        geometry=load_plugin(GEOMETRY, cfg.geometry.kind)(cfg.geometry, data_root, device),
        segmenter=load_plugin(SEGMENTERS, cfg.segmenter.kind)(cfg.segmenter, data_root, device),
        depth=None if cfg.geometry.depth_model is None else load_plugin(
            DEPTH_MODELS, cfg.geometry.depth_model.kind)(cfg.geometry.depth_model, data_root, device),
    )


def _resize_rgb(images_FHW3: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if images_FHW3.shape[1:3] == tuple(size_hw):
        return images_FHW3
    height, width = size_hw
    return np.stack([np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC))
                     for frame in images_FHW3])


def _check_frames(scene: Scene) -> None:
    images = scene.images_FHW3
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[-1] != 3 or len(images) == 0:
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise ValueError(f"scene {scene.scene_id}: frames must be uint8 F x H x W x 3, got {dtype} {shape}")


def prepare_frames(scene: Scene, cfg: FeaturesConfig) -> tuple[np.ndarray, SensorFrames, np.ndarray]:
    """Sampled, resized frames and sensor data at the encoder size, plus the chosen frame indices."""
    _check_frames(scene)
    pick = uniform_indices(scene.num_frames, cfg.num_frames)
    size_hw = tuple(cfg.image_size)
    src_hw = scene.image_size
    images_FHW3 = _resize_rgb(scene.images_FHW3[pick], size_hw)

    def take(arr):
        return None if arr is None else np.asarray(arr)[pick]

    depth = take(scene.depth_FHdWd)
    depth_k = take(scene.depth_intrinsics_F33)
    colour_k = take(scene.intrinsics_F33)
    if depth is not None and depth_k is None and depth.shape[1:] != tuple(src_hw):
        raise ValueError(f"scene {scene.scene_id}: depth {depth.shape[1:]} differs from colour {src_hw} "
                         "but the scene has no depth intrinsics")
    sensor = SensorFrames(
        scene_id=scene.scene_id,
        depth_FHW=None if depth is None else nearest_resize(depth.astype(np.float32), size_hw),
        poses_F44=take(scene.poses_F44),
        intrinsics_F33=None if colour_k is None else scale_intrinsics(colour_k, src_hw, size_hw),
        depth_intrinsics_F33=None if depth_k is None or depth is None
        else scale_intrinsics(depth_k, depth.shape[1:], size_hw),
        instances_FHW=None if scene.instances_FHW is None else nearest_resize(take(scene.instances_FHW), size_hw),
    )
    return images_FHW3, sensor, np.asarray(scene.frame_indices)[pick]


def latent_grid(cfg: FeaturesConfig, encoder_patch: int, image_hw: tuple[int, int]
                ) -> tuple[tuple[int, int], tuple[int, int], int]:
    """(encoder grid, stored grid, pixels per stored patch side) for this config and encoder."""
    height, width = image_hw
    if height % encoder_patch or width % encoder_patch:
        raise ValueError(f"image_size {height}x{width} must be a multiple of the encoder's "
                         f"{encoder_patch} px tokens")
    encoder_grid = (height // encoder_patch, width // encoder_patch)
    if cfg.latent_grid is None:
        return encoder_grid, encoder_grid, encoder_patch
    grid_hw = (int(cfg.latent_grid[0]), int(cfg.latent_grid[1]))
    if grid_hw[0] < encoder_grid[0] or grid_hw[1] < encoder_grid[1]:
        # Bilinear downsampling would alias; a coarser grid is a different encoder input size.
        raise ValueError(f"latent_grid {list(grid_hw)} is coarser than the encoder's own "
                         f"{list(encoder_grid)} grid; lower image_size instead")
    return encoder_grid, grid_hw, height // grid_hw[0]


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


def _to_world(scene_id: str, images_FHW3: np.ndarray, sensor: SensorFrames, geo: GeometryOutput,
              models: FeatureModels, cfg: FeaturesConfig, seconds: dict[str, float]
              ) -> tuple[GeometryOutput, WorldAlignment]:
    """The geometry in the world frame, in metres. The depth model runs only when it gives the scale:
    camera-0 geometry with neither sensor poses nor sensor depth (or both withheld)."""
    withheld = set(cfg.geometry.withhold_sensor)
    poses_F44 = None if "poses" in withheld else sensor.poses_F44
    depth_FHW = None if "depth" in withheld else sensor.depth_FHW
    model_depth_FHW = None
    if geo.frame == "camera0" and poses_F44 is None and depth_FHW is None and models.depth is not None:
        with _timed(seconds, "depth_model"):
            model_depth_FHW = models.depth.predict(images_FHW3)
    with _timed(seconds, "align"):
        try:
            xyz_FHW3, pose_F44, alignment = align_to_world(
                geo.xyz_FHW3, geo.pose_F44, geo.frame, poses_F44, depth_FHW,
                orientation_weight=cfg.geometry.orientation_weight, scale_prior=cfg.geometry.scale_prior,
                model_depth_FHW=model_depth_FHW, reference_depth_FHW=sensor.depth_FHW)
        except ValueError as e:
            raise ValueError(f"scene {scene_id}: world alignment failed: {e}") from e
    return replace(geo, xyz_FHW3=xyz_FHW3, pose_F44=pose_F44, frame="world"), alignment


def process_scene(scene: Scene, models: FeatureModels, cfg: FeaturesConfig) -> SceneResult:
    """One scene through the stage: prepare, encode, geometry, world alignment, segment, patchify, then
    the group's arrays and attributes. Longer than most: it is the stage's recipe read top to bottom
    (each step timed in place), and a third of it is the attributes' field list."""
    seconds: dict[str, float] = {}
    with _timed(seconds, "prepare"):
        images_FHW3, sensor, frame_indices = prepare_frames(scene, cfg)
    height, width = images_FHW3.shape[1:3]
    encoder_grid, grid_hw, patch = latent_grid(cfg, models.encoder.patch_size, (height, width))

    with _timed(seconds, "encoder"):
        feat_FhwD = models.encoder.encode(images_FHW3).feat_FhwD
        if grid_hw != encoder_grid:  # float16 now: the store's dtype, and half the memory
            feat_FhwD = upsample_features(feat_FhwD, grid_hw, dtype=np.float16)
    with _timed(seconds, "geometry"):
        geo = models.geometry.predict(images_FHW3, sensor)
    if not np.isfinite(geo.xyz_FHW3).all(axis=-1).any():
        raise ValueError(f"scene {scene.scene_id}: geometry is invalid (NaN) at every pixel")
    geo, alignment = _to_world(scene.scene_id, images_FHW3, sensor, geo, models, cfg, seconds)
    warnings = list(scene.warnings)
    if alignment.scale_method == "prior":
        warnings.append(f"no sensor poses, sensor depth or depth model: metres from the configured "
                        f"scale_prior ({alignment.scale:g} m per geometry unit), the last resort, "
                        "not measured")
    with _timed(seconds, "segmenter"):
        label_FHW = models.segmenter.segment(images_FHW3, sensor, geo.xyz_FHW3)
    if not (label_FHW >= 0).any():
        raise ValueError(f"scene {scene.scene_id}: the segmenter found no mask in any frame")
    with _timed(seconds, "patchify"):
        label_Fhw, xyz_Fhw3, conf_Fhw = patchify(label_FHW, geo.xyz_FHW3, geo.conf_FHW, patch)
        # Ground truth beside the prediction: the cluster stage matches segments to instances by it.
        gt_label_Fhw = None if sensor.instances_FHW is None else patchify_labels(sensor.instances_FHW, patch)
    assert feat_FhwD.shape[:3] == label_Fhw.shape, (feat_FhwD.shape, label_Fhw.shape)

    attrs = StoreAttrs(
        scene_id=scene.scene_id,
        source={"kind": scene.source, "path": scene.path, "num_frames_total": int(scene.num_frames_total),
                "split": scene.split},
        encoder=models.encoder.ref,
        geometry=models.geometry.ref,
        segmenter=models.segmenter.ref,
        depth_model=models.depth.ref if alignment.scale_method == "depth_model" else None,
        frame_indices=[int(i) for i in frame_indices],
        image_size=[int(height), int(width)],
        patch_size=int(patch),
        grid=[int(label_Fhw.shape[1]), int(label_Fhw.shape[2])],
        encoder_grid=list(encoder_grid),
        scale=alignment.scale,
        scale_method=alignment.scale_method,
        alignment=alignment,
        objects=[o.model_dump(mode="json") for o in scene.objects],
        pipeline_version=pipeline.__version__,
        num_labels=len(np.unique(label_Fhw[label_Fhw >= 0])),
        valid_fraction=float(np.isfinite(xyz_Fhw3[..., 0]).mean()),
        config_hash=config_hash(cfg),
    )
    arrays = {
        "feat": feat_FhwD.astype(np.float16, copy=False),
        "xyz": xyz_Fhw3,
        "label": label_Fhw,
        "conf": conf_Fhw.astype(np.float16),
        "pose": geo.pose_F44.astype(np.float32),
        "intrinsics": geo.intrinsics_F33.astype(np.float32),
    }
    if gt_label_Fhw is not None:
        arrays["gt_label"] = gt_label_Fhw
    return SceneResult(arrays=arrays, attrs=attrs, seconds=seconds, warnings=warnings)


def config_hash(cfg) -> str:
    """Fingerprint of the feature config: a complete group made under another config is redone."""
    import hashlib

    # How a run executes changes no group: groups made before the field existed stay current.
    return hashlib.sha256(cfg.model_dump_json(exclude={"executor"}).encode()).hexdigest()[:16]
