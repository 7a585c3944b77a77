"""What `p3d ask SOURCE` was given, as a scene provider for the feature driver (or a ready store group).

  a video file (.mp4, .mov, ...)           VideoSource over its folder, the scene id its file stem
  a folder of image frames                 VideoSource over its parent, the scene id its name
  a ScanNet scene folder (<id>.sens/color) ScanNetSource over its parent (sensor depth, poses, GT)
  a toy scene folder (manifest.json)       ToySource over its parent (the toy world's sensors, GT)
  a triplet-store group (<out>/features/<id>, zarr.json marked complete)
                                           no feature stage: the group is clustered as it is

What each kind brings decides which feature backends can run on it (`has_sensors`): `rgbd` and
`sim_vggt` need sensor depth and poses, `instances` and `sim_sam2` ground-truth masks; a video
has none of them. The toy networks (`sim_vggt`, `sim_sam2`) simulate the real ones from the toy
world's ground truth, so a filmed toy scene carries its ground truth beside the video
(`<stem>.groundtruth.npz`, pipeline/sources/sidecar.py): asked with `ground_truth=True` (a
checkpoint trained with the simulators), a video with such a sidecar is decoded as any video and
the simulators read the sidecar at the same frame indices. A real video goes through the real
networks (`vggt`, `sam2`), which read the bare video; a sidecar is then ignored.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.sources.base import SceneReadError

SOURCE_KINDS = "a video file, a folder of frames, a ScanNet or toy scene folder, or a triplet-store scene " \
               "(<out>/features/<scene_id>)"


@dataclass(frozen=True)
class AskInput:
    kind: str  # video | frames | scannet | toy | store
    path: Path
    scene_id: str
    provider: object | None  # a SceneSource for the feature driver; None for a store scene
    fingerprint: str  # identity of the input: its files' sizes and mtimes, or the store group's
    sidecar: Path | None = None  # a filmed toy video's ground truth, read for the toy simulators

    @property
    def has_sensors(self) -> bool:
        """Sensor depth, poses and ground-truth masks come with the scene (the oracle and simulated
        backends need them)."""
        return self.kind in ("scannet", "toy") or self.sidecar is not None


def _safe_id(name: str, path: Path) -> str:
    # A shard key may not contain '.' or '/' (WebDataset splits member names at the first dot).
    scene_id = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    if not scene_id:
        raise SceneReadError(f"{path}: cannot make a scene id of its name")
    return scene_id


def _store_fingerprint(group: Path) -> str:
    meta = group / "zarr.json"
    attrs = json.loads(meta.read_text()).get("attributes", {})
    st = meta.stat()
    key = f"store\0{group.resolve()}\0{attrs.get('config_hash')}\0{attrs.get('source_fingerprint')}\0" \
          f"{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _is_store_group(path: Path) -> bool:
    meta = path / "zarr.json"
    if not meta.is_file():
        return False
    try:
        return "complete" in json.loads(meta.read_text()).get("attributes", {})
    except (ValueError, OSError):
        return False


def open_input(source: str | Path, num_frames: int, ground_truth: bool = False) -> AskInput:
    """Recognise SOURCE; `SceneReadError` naming what it accepts when it is none of them. With
    `ground_truth` (the workflow's backends need sensors), a video's sidecar is read when it has one."""
    from pipeline.sources import ScanNetSource, VideoSource
    from pipeline.sources.frames import IMAGE_SUFFIXES
    from pipeline.sources.sidecar import sidecar_path
    from pipeline.sources.video import VIDEO_SUFFIXES
    from pipeline.toy.source import ToySource

    path = Path(source)
    if not path.exists():
        raise SceneReadError(f"{path}: not found (SOURCE is {SOURCE_KINDS})")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise SceneReadError(f"{path}: not a video ({', '.join(VIDEO_SUFFIXES)}); SOURCE is {SOURCE_KINDS}")
        if path.stem != _safe_id(path.stem, path):
            raise SceneReadError(f"{path}: rename the video to letters, digits, '_' or '-' before its suffix "
                                 f"(e.g. {_safe_id(path.stem, path)}{path.suffix}): its name is the scene id")
        sidecar = sidecar_path(path) if ground_truth and sidecar_path(path).is_file() else None
        provider = VideoSource(path.parent, num_frames, (path.stem,), ground_truth=sidecar is not None)
        return AskInput("video", path, path.stem, provider, provider.fingerprint(path.stem), sidecar)
    if _is_store_group(path):
        if path.parent.name != "features":
            raise SceneReadError(f"{path}: a triplet-store group lives at <out>/features/<scene_id>")
        return AskInput("store", path, path.name, None, _store_fingerprint(path))
    kind, cls = None, None
    if (path / "manifest.json").is_file():  # before ScanNet's: a toy scene folder has color/ too
        kind, cls = "toy", ToySource
    elif (path / f"{path.name}.sens").is_file() or (path / "color").is_dir():
        kind, cls = "scannet", ScanNetSource
    elif any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        kind, cls = "frames", VideoSource
    if kind is None:
        raise SceneReadError(f"{path}: holds no frames, .sens, color/ or manifest.json; SOURCE is {SOURCE_KINDS}")
    if path.name != _safe_id(path.name, path):
        raise SceneReadError(f"{path}: rename the folder to letters, digits, '_' or '-': its name is the scene id")
    provider = cls(path.parent, num_frames, (path.name,))
    return AskInput(kind, path, path.name, provider, provider.fingerprint(path.name))


def count_frames(ask_input: AskInput) -> int | None:
    """Frames a video or frame folder holds (None for the other kinds); reads no pixels."""
    from pipeline.sources.video import _frame_files

    if ask_input.kind == "frames":
        return len(_frame_files(ask_input.path))
    if ask_input.kind != "video":
        return None
    import av

    try:
        with av.open(str(ask_input.path)) as container:
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size > 0)
    except (av.error.FFmpegError, IndexError) as e:
        raise SceneReadError(f"{ask_input.path}: unreadable video ({type(e).__name__}: {e})") from e
