"""Reader of ScanNet's exported-frame layout (what SensReader writes), shared by toy and scannet.

    <scene>/color/<n>.jpg  depth/<n>.png (uint16, depth_shift units per metre)  pose/<n>.txt (4x4
    camera-to-world)  intrinsic/intrinsic_color.txt, intrinsic_depth.txt (4x4)  [instance-filt/<n>.png]

`<n>` are frame numbers; `Scene.frame_indices` holds the sampled ones. Every folder present must
hold the same frame numbers as color/. ScanNet marks frames without tracking by a non-finite pose;
those are left out of the sampling, with a log line saying how many. instance-filt PNGs hold
instance id + 1 (0 = none); they are converted to ids with -1 = none and, when their size differs
from the colour images (ScanNet: 640 x 480 vs 1296 x 968), resized by nearest neighbour.
Legend: F frames, H x W colour pixels, Hd x Wd depth pixels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.sources.base import Scene, SceneReadError, uniform_indices

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_DEPTH_SHIFT = 1000.0


def _numbered(scene_id: str, folder: Path, suffixes: tuple[str, ...]) -> dict[int, Path]:
    files: dict[int, Path] = {}
    for p in folder.iterdir():
        if p.suffix.lower() in suffixes and p.stem.isdigit():
            files[int(p.stem)] = p
    if not files:
        raise SceneReadError(f"scene {scene_id}: no frames in {folder}")
    return files


def _same_frames(scene_id: str, reference: dict[int, Path], other: dict[int, Path], folder: Path) -> None:
    if reference.keys() == other.keys():
        return
    missing = sorted(set(reference) - set(other))
    extra = sorted(set(other) - set(reference))
    detail = f"missing frame {missing[0]}" if missing else f"extra frame {extra[0]}"
    raise SceneReadError(
        f"scene {scene_id}: mismatched counts: {folder} has {len(other)} frames, color has "
        f"{len(reference)} ({detail})"
    )


def read_matrix(scene_id: str, path: Path, shape: tuple[int, int] = (4, 4)) -> np.ndarray:
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as e:
        raise SceneReadError(f"scene {scene_id}: cannot read matrix {path}: {e}") from e
    if m.shape != shape:
        raise SceneReadError(f"scene {scene_id}: {path} holds a {m.shape} matrix, expected {shape}")
    return m


def read_rgb(scene_id: str, path: Path | None, data: bytes | None = None) -> np.ndarray:
    """Decode a colour image (file or bytes); any decoding failure names the scene and the file."""
    import io

    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise SceneReadError(f"scene {scene_id}: corrupt or unreadable image {path}: {e}") from e


def read_png_u16(scene_id: str, path: Path, data: bytes | None = None) -> np.ndarray:
    """A single-channel PNG (8- or 16-bit) as integers; from `data` when given (`path` then names it)."""
    import io

    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            im.load()
            if im.mode not in ("I;16", "I;16B", "I", "L", "P"):
                raise SceneReadError(f"scene {scene_id}: {path} is a {im.mode} image, expected one channel")
            return np.asarray(im).astype(np.int64)
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, SceneReadError):
            raise
        raise SceneReadError(f"scene {scene_id}: corrupt or unreadable image {path}: {e}") from e


def instances_from_png(ids_hw: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """instance id + 1 (0 = none) -> instance id (-1 = none), resized to the colour size."""
    out = ids_hw.astype(np.int32) - 1
    if out.shape != tuple(size_hw):
        rows = (np.arange(size_hw[0]) * out.shape[0] // size_hw[0])
        cols = (np.arange(size_hw[1]) * out.shape[1] // size_hw[1])
        out = out[rows][:, cols]
    return out


def valid_pose_frames(scene_id: str, frame_ids: list[int], poses: dict[int, np.ndarray], where: str) -> list[int]:
    valid = [n for n in frame_ids if np.all(np.isfinite(poses[n]))]
    if len(valid) < len(frame_ids):
        log.warning("scene %s: %d of %d frames in %s have no valid pose; sampling among the rest",
                    scene_id, len(frame_ids) - len(valid), len(frame_ids), where)
    if not valid:
        raise SceneReadError(f"scene {scene_id}: no frame in {where} has a valid pose")
    return valid


def _optional_pngs(scene_id: str, folder: Path, color: dict[int, Path]) -> dict[int, Path] | None:
    """A folder's numbered PNGs, checked to be the colour frames'; None where the export has none."""
    if not folder.is_dir():
        return None
    files = _numbered(scene_id, folder, (".png",))
    _same_frames(scene_id, color, files, folder)
    return files


def _read_depth(scene_id: str, files: list[Path], depth_shift: float) -> np.ndarray:
    """Depth PNGs (millimetres by default, over `depth_shift`) as metres, F x Hd x Wd."""
    maps = [read_png_u16(scene_id, f) for f in files]
    if any(m.shape != maps[0].shape for m in maps):
        raise SceneReadError(f"scene {scene_id}: depth images in {files[0].parent} differ in size")
    return (np.stack(maps) / depth_shift).astype(np.float32)


def read_frame_folder(scene_id: str, root: Path, num_frames: int, source: str,
                      axis_align_44: np.ndarray | None = None,
                      depth_shift: float = DEFAULT_DEPTH_SHIFT) -> Scene:
    """Read `num_frames` uniformly sampled frames of one exported scene folder into a `Scene`.
    `axis_align_44` (ScanNet's axisAlignment) is applied to the poses when given."""
    root = Path(root)
    if not (root / "color").is_dir():
        raise SceneReadError(f"scene {scene_id}: {root / 'color'} not found")
    color = _numbered(scene_id, root / "color", IMAGE_SUFFIXES)
    pose_dir = root / "pose"
    if not pose_dir.is_dir():
        raise SceneReadError(f"scene {scene_id}: {pose_dir} not found")
    pose_files = _numbered(scene_id, pose_dir, (".txt",))
    _same_frames(scene_id, color, pose_files, pose_dir)
    depth = _optional_pngs(scene_id, root / "depth", color)
    instance = _optional_pngs(scene_id, root / "instance-filt", color)

    frame_ids = sorted(color)
    poses = {n: read_matrix(scene_id, pose_files[n]) for n in frame_ids}
    valid = valid_pose_frames(scene_id, frame_ids, poses, str(pose_dir))
    picked = [valid[i] for i in uniform_indices(len(valid), num_frames)]

    images = [read_rgb(scene_id, color[n]) for n in picked]
    size_hw = images[0].shape[:2]
    for n, im in zip(picked, images):
        if im.shape[:2] != size_hw:
            raise SceneReadError(f"scene {scene_id}: {color[n]} is {im.shape[:2]}, other frames {size_hw}")
    k_color = read_matrix(scene_id, root / "intrinsic" / "intrinsic_color.txt")[:3, :3]
    poses_F44 = np.stack([poses[n] for n in picked])
    if axis_align_44 is not None:
        poses_F44 = axis_align_44[None] @ poses_F44

    depth_FHdWd = k_depth = None
    if depth is not None:
        depth_FHdWd = _read_depth(scene_id, [depth[n] for n in picked], depth_shift)
        k_depth = read_matrix(scene_id, root / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
    instances_FHW = None
    if instance is not None:
        instances_FHW = np.stack([instances_from_png(read_png_u16(scene_id, instance[n]), size_hw)
                                  for n in picked])

    num = len(picked)
    return Scene(
        scene_id=scene_id, source=source, path=str(root),
        frame_indices=np.asarray(picked, dtype=np.int64),
        images_FHW3=np.stack(images),
        depth_FHdWd=depth_FHdWd,
        poses_F44=poses_F44.astype(np.float32),
        intrinsics_F33=np.repeat(k_color[None], num, 0).astype(np.float32),
        depth_intrinsics_F33=None if k_depth is None else np.repeat(k_depth[None], num, 0).astype(np.float32),
        instances_FHW=instances_FHW,
        num_frames_total=len(frame_ids),
    )
