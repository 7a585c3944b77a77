"""Video scenes (VSI-Bench style): an mp4 (or other container `av` opens) or a folder of frames.
No depth, poses or instances: geometry and segmentation come from the models. The one exception is
a filmed toy scene read with `ground_truth=True`: its frames still come from decoding the video, and
the toy simulators' sensor inputs from its ground-truth sidecar at the same frame indices
(pipeline/sources/sidecar.py); without that flag a sidecar is ignored.

`path` holds the scenes: `<scene_id>.mp4` files and/or `<scene_id>/` folders of images, whose
frames are ordered by the number in their names (natural order), not lexically.
Legend: F frames, H x W pixels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.sources.base import Scene, SceneReadError, uniform_indices
from pipeline.sources.frames import IMAGE_SUFFIXES, read_rgb
from pipeline.sources.source import SceneSource

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _frame_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)


def read_video_file(scene_id: str, path: Path, num_frames: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(frame indices, uint8 F x H x W x 3, total frames) of uniformly sampled frames."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            # Counting packets needs no decoding; container metadata (stream.frames) can be absent.
            total = sum(1 for packet in container.demux(stream) if packet.size > 0)
        if total == 0:
            raise SceneReadError(f"scene {scene_id}: {path} holds no video frames")
        wanted = uniform_indices(total, num_frames)
        wanted_set, frames = set(wanted.tolist()), []
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted_set:
                    frames.append(frame.to_ndarray(format="rgb24"))
                if i >= wanted[-1]:
                    break
    except av.error.FFmpegError as e:
        raise SceneReadError(f"scene {scene_id}: cannot decode {path}: {e}") from e
    except IndexError as e:
        raise SceneReadError(f"scene {scene_id}: {path} has no video stream") from e
    if len(frames) != len(wanted):
        raise SceneReadError(f"scene {scene_id}: mismatched counts: {path} has {total} packets but only "
                             f"{len(frames)} of {len(wanted)} sampled frames decoded")
    return wanted, np.stack(frames), total


def read_frames_dir(scene_id: str, folder: Path, num_frames: int) -> tuple[np.ndarray, np.ndarray, int]:
    files = _frame_files(folder)
    if not files:
        raise SceneReadError(f"scene {scene_id}: no image frames in {folder}")
    wanted = uniform_indices(len(files), num_frames)
    images = [read_rgb(scene_id, files[i]) for i in wanted]
    for i, im in zip(wanted, images):
        if im.shape != images[0].shape:
            raise SceneReadError(f"scene {scene_id}: {files[i]} is {im.shape[:2]}, "
                                 f"{files[wanted[0]]} is {images[0].shape[:2]}")
    return wanted, np.stack(images), len(files)


@dataclass(frozen=True)
class VideoSource(SceneSource):
    ground_truth: bool = False  # read each video's sidecar (a filmed toy scene) for the toy simulators

    kind = "video"

    def _entry(self, scene_id: str) -> Path:
        root = Path(self.path)
        if (root / scene_id).is_dir():
            return root / scene_id
        for suffix in VIDEO_SUFFIXES:
            if (root / f"{scene_id}{suffix}").is_file():
                return root / f"{scene_id}{suffix}"
        raise SceneReadError(f"scene {scene_id}: no video or frame folder under {root}")

    def available(self) -> list[str]:
        root = Path(self.path)
        ids = {p.stem for p in root.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES}
        ids |= {p.name for p in root.iterdir() if p.is_dir() and _frame_files(p)}
        return sorted(ids)

    def load_scene(self, scene_id: str) -> Scene:
        entry = self._entry(scene_id)
        if entry.is_dir():
            indices, images, total = read_frames_dir(scene_id, entry, self.num_frames)
        else:
            indices, images, total = read_video_file(scene_id, entry, self.num_frames)
        scene = Scene(scene_id=scene_id, source="video", path=str(entry),
                      frame_indices=np.asarray(indices, dtype=np.int64), images_FHW3=images,
                      num_frames_total=total)
        if not self.ground_truth:
            return scene
        from pipeline.sources.sidecar import read_sidecar, sidecar_path

        if entry.is_dir() or not sidecar_path(entry).is_file():
            raise SceneReadError(f"scene {scene_id}: no ground-truth sidecar {sidecar_path(entry).name} beside "
                                 f"{entry} (only a filmed toy scene has one)")
        return read_sidecar(scene)
