"""A filmed toy scene's ground truth, kept beside its video: `<video stem>.groundtruth.npz`.

The toy workflow's geometry and segmenter (`sim_vggt`, `sim_sam2`) simulate the real networks from
the toy world's ground truth (sensor depth, camera poses and intrinsics, instance masks), so a toy
scene filmed into a video carries that ground truth with it: one npz per video (plain arrays, read
with `allow_pickle=False`), row i of every array belonging to decoded video frame i. A video read
with its sidecar (VideoSource with `ground_truth=True`) takes its pixels from decoding the video and
the simulators' inputs from these rows, at the same sampled frame indices. A real video has no
sidecar and goes through the real networks (`vggt`, `sam2`).

    frame_count          int, the video's frames (must equal the packets the video holds)
    poses_F44            float32 camera-to-world
    intrinsics_F33       float32, for the video's frames
    depth_FHdWd          float32 metres, 0 = invalid           (optional, with depth_intrinsics_F33)
    instances_FHW        int32 instance id per pixel, -1 = none (optional)
    scene                JSON text: {"scene_id", "split", "objects": [ObjectInfo, ...]}

Legend: F frames, H x W video pixels, Hd x Wd depth pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.sources.base import Scene, SceneReadError
from schemas.io import atomic_open
from schemas.manifest import ObjectInfo

SIDECAR_SUFFIX = ".groundtruth.npz"
_PER_FRAME = ("poses_F44", "intrinsics_F33", "depth_FHdWd", "depth_intrinsics_F33", "instances_FHW")
_REQUIRED = ("frame_count", "poses_F44", "intrinsics_F33", "scene")


def sidecar_path(video: str | Path) -> Path:
    video = Path(video)
    return video.with_name(video.stem + SIDECAR_SUFFIX)


def write_sidecar(scene: Scene, video: str | Path) -> Path:
    """Every frame of `scene` (as filmed, in order) beside `video`, written atomically."""
    if scene.poses_F44 is None or scene.intrinsics_F33 is None:
        raise ValueError(f"scene {scene.scene_id}: no poses or intrinsics to keep beside the video")
    arrays = {name: getattr(scene, name) for name in _PER_FRAME if getattr(scene, name) is not None}
    about = {"scene_id": scene.scene_id, "split": scene.split,
             "objects": [o.model_dump(mode="json") for o in scene.objects]}
    path = sidecar_path(video)
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, frame_count=np.int64(scene.num_frames), scene=np.array(json.dumps(about)), **arrays)
    return path


def sidecar_frame_count(video: str | Path) -> int:
    """The frames the sidecar describes (reads one scalar)."""
    path = sidecar_path(video)
    try:
        with np.load(path, allow_pickle=False) as data:
            return int(data["frame_count"])
    except (OSError, ValueError, KeyError) as e:
        raise SceneReadError(f"{path}: unreadable ground-truth sidecar ({type(e).__name__}: {e})") from e


def check_frame_count(video: str | Path, video_frames: int) -> None:
    """The sidecar's rows are the video's frames: the counts must agree, or the indices would not line up."""
    count = sidecar_frame_count(video)
    if count != video_frames:
        raise SceneReadError(f"{sidecar_path(video)}: mismatched frame counts: the ground truth describes {count} "
                             f"frames, {video} holds {video_frames}; film the scene again (pipeline/sources/film.py)")


def read_sidecar(scene: Scene) -> Scene:
    """`scene` (a decoded video's sampled frames) with the sidecar's rows at the same frame indices."""
    path = sidecar_path(scene.path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in _REQUIRED if name not in data.files]
            if missing:
                raise SceneReadError(f"{path}: not a ground-truth sidecar (no {', '.join(missing)})")
            arrays = {name: data[name] for name in _PER_FRAME if name in data.files}
            count, about = int(data["frame_count"]), json.loads(str(data["scene"]))
    except (OSError, ValueError) as e:
        if isinstance(e, SceneReadError):
            raise
        raise SceneReadError(f"{path}: unreadable ground-truth sidecar ({type(e).__name__}: {e})") from e
    check_frame_count(scene.path, scene.num_frames_total)
    for name, arr in arrays.items():
        if len(arr) != count:
            raise SceneReadError(f"{path}: {name} has {len(arr)} rows for {count} frames")
    instances = arrays.get("instances_FHW")
    if instances is not None and instances.shape[1:] != scene.images_FHW3.shape[1:3]:
        raise SceneReadError(f"{path}: instance masks are {instances.shape[1:]}, the video's frames "
                             f"{scene.images_FHW3.shape[1:3]}")
    rows = np.asarray(scene.frame_indices)
    picked = {name: arr[rows] for name, arr in arrays.items()}
    return Scene(scene_id=scene.scene_id, source=scene.source, path=scene.path, frame_indices=scene.frame_indices,
                 images_FHW3=scene.images_FHW3, depth_FHdWd=picked.get("depth_FHdWd"),
                 poses_F44=picked["poses_F44"], intrinsics_F33=picked["intrinsics_F33"],
                 depth_intrinsics_F33=picked.get("depth_intrinsics_F33"), instances_FHW=picked.get("instances_FHW"),
                 objects=[ObjectInfo.model_validate(o) for o in about.get("objects", [])],
                 num_frames_total=scene.num_frames_total, split=about.get("split"), warnings=list(scene.warnings))
