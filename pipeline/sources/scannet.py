"""ScanNet scenes: the `.sens` sensor stream read directly, or exported frame folders, plus the
ground-truth 3D instances.

A scene folder (ScanNet's `scans/<scene>/`) holds `<scene>.sens` and/or exported frames (color/,
depth/, pose/, intrinsic/), and optionally the annotation files:
  `<scene>.txt`                               `axisAlignment = <16 numbers>` (row-major 4x4)
  `<scene>_vh_clean_2.ply`                    the mesh; only vertex x, y, z are read
  `<scene>_vh_clean_2.0.010000.segs.json`     `segIndices`: one over-segment id per vertex
  `<scene>.aggregation.json`                  `segGroups`: objectId, label, segments
Poses and boxes are returned in the axis-aligned world (z up, floor near z = 0) when the alignment
is known. The .sens layout (ScanNet's SensorData, version 4, little endian): version u32, name
length u64 + name, four 4x4 float32 matrices (colour intrinsic/extrinsic, depth intrinsic/extrinsic),
colour and depth compression i32, colour w, h and depth w, h u32, depth shift f32, frame count u64,
then per frame: camera-to-world 4x4 float32, colour and depth timestamps u64, colour and depth byte
counts u64, the colour bytes, the depth bytes.
Legend: N mesh vertices, F frames.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.sources.base import Scene, SceneReadError, uniform_indices
from pipeline.sources.frames import read_frame_folder, read_rgb, valid_pose_frames
from pipeline.sources.source import SceneSource
from schemas.manifest import Box3D, ObjectInfo

log = logging.getLogger(__name__)

SENS_VERSION = 4
COLOR_COMPRESSION = {0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {0: "raw_ushort", 1: "zlib_ushort"}  # 2 (occi) is not used by ScanNet
_FRAME_HEADER = struct.Struct("<16f4Q")


@dataclass
class SensHeader:
    sensor_name: str
    intrinsic_color_44: np.ndarray
    intrinsic_depth_44: np.ndarray
    color_compression: str
    depth_compression: str
    color_wh: tuple[int, int]
    depth_wh: tuple[int, int]
    depth_shift: float
    num_frames: int


@dataclass
class SensIndex:
    """Header plus, per frame, its pose and where its colour and depth bytes lie in the file."""

    header: SensHeader
    poses_F44: np.ndarray
    color_spans: list[tuple[int, int]]  # (offset, length)
    depth_spans: list[tuple[int, int]]


def _take(scene_id: str, path: Path, f, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise SceneReadError(f"scene {scene_id}: truncated .sens {path}: file ends inside {what}")
    return data


def index_sens(scene_id: str, path: Path) -> SensIndex:
    """Read the header and walk the frame headers, seeking over the image bytes."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        (version,) = struct.unpack("<I", _take(scene_id, path, f, 4, "the header"))
        if version != SENS_VERSION:
            raise SceneReadError(f"scene {scene_id}: {path} has .sens version {version}, expected {SENS_VERSION}")
        (name_len,) = struct.unpack("<Q", _take(scene_id, path, f, 8, "the header"))
        if name_len > 4096:
            raise SceneReadError(f"scene {scene_id}: {path}: implausible sensor name length {name_len}")
        name = _take(scene_id, path, f, name_len, "the header").decode("utf-8", "replace")
        mats = np.frombuffer(_take(scene_id, path, f, 4 * 16 * 4, "the header"), "<f4").reshape(4, 4, 4)
        c_comp, d_comp, cw, ch, dw, dh, shift, num = struct.unpack(
            "<2i4IfQ", _take(scene_id, path, f, 2 * 4 + 4 * 4 + 4 + 8, "the header"))
        if c_comp not in COLOR_COMPRESSION or d_comp not in DEPTH_COMPRESSION:
            raise SceneReadError(f"scene {scene_id}: {path}: unsupported compression colour={c_comp} depth={d_comp}")
        header = SensHeader(name, mats[0].astype(np.float64), mats[2].astype(np.float64),
                            COLOR_COMPRESSION[c_comp], DEPTH_COMPRESSION[d_comp], (cw, ch), (dw, dh),
                            float(shift), int(num))
        if num == 0:
            raise SceneReadError(f"scene {scene_id}: {path} holds no frames")
        poses, color_spans, depth_spans = [], [], []
        for i in range(num):
            values = _FRAME_HEADER.unpack(_take(scene_id, path, f, _FRAME_HEADER.size, f"frame {i} of {num}"))
            poses.append(np.asarray(values[:16], dtype=np.float64).reshape(4, 4))
            color_len, depth_len = values[18], values[19]
            start = f.tell()
            if start + color_len + depth_len > size:
                raise SceneReadError(f"scene {scene_id}: truncated .sens {path}: frame {i} of {num} "
                                     f"needs {color_len + depth_len} bytes, {size - start} left")
            color_spans.append((start, color_len))
            depth_spans.append((start + color_len, depth_len))
            f.seek(color_len + depth_len, io.SEEK_CUR)
        if f.tell() != size:
            # ScanNet files may carry IMU frames after the RGB-D frames; note them, never fail on them.
            log.debug("scene %s: %d trailing bytes after the frames of %s", scene_id, size - f.tell(), path)
    return SensIndex(header, np.stack(poses), color_spans, depth_spans)


def _decode_depth(scene_id: str, path: Path, frame: int, data: bytes, header: SensHeader) -> np.ndarray:
    if header.depth_compression == "zlib_ushort":
        try:
            data = zlib.decompress(data)
        except zlib.error as e:
            raise SceneReadError(f"scene {scene_id}: corrupt depth of frame {frame} in {path}: {e}") from e
    w, h = header.depth_wh
    if len(data) != w * h * 2:
        raise SceneReadError(f"scene {scene_id}: depth of frame {frame} in {path} has {len(data)} bytes, "
                             f"expected {w * h * 2} for {w}x{h}")
    return np.frombuffer(data, "<u2").reshape(h, w)


def _decode_color(scene_id: str, path: Path, frame: int, data: bytes, header: SensHeader) -> np.ndarray:
    w, h = header.color_wh
    if header.color_compression == "raw":
        if len(data) != w * h * 3:
            raise SceneReadError(f"scene {scene_id}: raw colour of frame {frame} in {path} has wrong size")
        return np.frombuffer(data, np.uint8).reshape(h, w, 3)
    rgb = read_rgb(scene_id, Path(f"{path}#frame{frame}"), data)
    if rgb.shape[:2] != (h, w):
        raise SceneReadError(f"scene {scene_id}: colour of frame {frame} in {path} is {rgb.shape[:2]}, "
                             f"header says {(h, w)}")
    return rgb


def read_sens(scene_id: str, path: Path, num_frames: int, axis_align_44: np.ndarray | None = None) -> Scene:
    """`num_frames` uniformly sampled frames (among those with a valid pose) of a .sens file."""
    index = index_sens(scene_id, path)
    all_ids = list(range(index.header.num_frames))
    valid = valid_pose_frames(scene_id, all_ids, dict(enumerate(index.poses_F44)), str(path))
    picked = [valid[i] for i in uniform_indices(len(valid), num_frames)]
    images, depths = [], []
    with Path(path).open("rb") as f:
        for n in picked:
            (c_off, c_len), (d_off, d_len) = index.color_spans[n], index.depth_spans[n]
            f.seek(c_off)
            images.append(_decode_color(scene_id, path, n, f.read(c_len), index.header))
            f.seek(d_off)
            depths.append(_decode_depth(scene_id, path, n, f.read(d_len), index.header))
    poses_F44 = index.poses_F44[picked]
    if axis_align_44 is not None:
        poses_F44 = axis_align_44[None] @ poses_F44
    num = len(picked)
    return Scene(
        scene_id=scene_id, source="scannet", path=str(path),
        frame_indices=np.asarray(picked, dtype=np.int64),
        images_FHW3=np.stack(images),
        depth_FHdWd=(np.stack(depths) / index.header.depth_shift).astype(np.float32),
        poses_F44=poses_F44.astype(np.float32),
        intrinsics_F33=np.repeat(index.header.intrinsic_color_44[None, :3, :3], num, 0).astype(np.float32),
        depth_intrinsics_F33=np.repeat(index.header.intrinsic_depth_44[None, :3, :3], num, 0).astype(np.float32),
        num_frames_total=index.header.num_frames,
    )


# ---- ground truth ---------------------------------------------------------------------------

def read_axis_alignment(scene_id: str, path: Path) -> np.ndarray | None:
    """The 4x4 `axisAlignment` of `<scene>.txt`; None when the file has none (test scenes)."""
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "axisAlignment":
            try:
                numbers = [float(x) for x in value.split()]
            except ValueError as e:
                raise SceneReadError(f"scene {scene_id}: {path}: bad axisAlignment: {e}") from e
            if len(numbers) != 16:
                raise SceneReadError(f"scene {scene_id}: {path}: axisAlignment has {len(numbers)} numbers, expected 16")
            return np.asarray(numbers).reshape(4, 4)
    return None


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def read_ply_vertices(scene_id: str, path: Path) -> np.ndarray:
    """x, y, z of the vertex element of a PLY file (binary little/big endian or ascii)."""
    path = Path(path)
    with path.open("rb") as f:
        if f.readline().strip() != b"ply":
            raise SceneReadError(f"scene {scene_id}: {path} is not a PLY file")
        fmt, elements, current = None, [], None
        while True:
            line = f.readline()
            if not line:
                raise SceneReadError(f"scene {scene_id}: {path}: PLY header has no end_header")
            words = line.decode("ascii", "replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                current = (words[1], int(words[2]), [])
                elements.append(current)
            elif words[0] == "property":
                if words[1] == "list":
                    current[2].append((words[4], None))
                else:
                    current[2].append((words[2], _PLY_TYPES[words[1]]))
            elif words[0] == "end_header":
                break
        if not elements or elements[0][0] != "vertex":
            raise SceneReadError(f"scene {scene_id}: {path}: the first PLY element must be 'vertex'")
        _, count, props = elements[0]
        if any(t is None for _, t in props):
            raise SceneReadError(f"scene {scene_id}: {path}: list properties on vertices are not supported")
        names = [n for n, _ in props]
        if not {"x", "y", "z"} <= set(names):
            raise SceneReadError(f"scene {scene_id}: {path}: vertices lack x, y, z")
        if fmt == "ascii":
            rows = [f.readline().split() for _ in range(count)]
            if len(rows) != count or any(len(r) < len(names) for r in rows):
                raise SceneReadError(f"scene {scene_id}: {path}: truncated vertex list")
            table = np.asarray(rows, dtype=np.float64)
            return table[:, [names.index(a) for a in "xyz"]]
        endian = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(fmt)
        if endian is None:
            raise SceneReadError(f"scene {scene_id}: {path}: unknown PLY format {fmt!r}")
        dtype = np.dtype([(n, endian + t) for n, t in props])
        data = f.read(dtype.itemsize * count)
        if len(data) != dtype.itemsize * count:
            raise SceneReadError(f"scene {scene_id}: truncated PLY {path}: {count} vertices declared")
        verts = np.frombuffer(data, dtype)
        return np.stack([verts["x"], verts["y"], verts["z"]], 1).astype(np.float64)


def _read_json(scene_id: str, path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise SceneReadError(f"scene {scene_id}: {path} not found") from e
    except json.JSONDecodeError as e:
        raise SceneReadError(f"scene {scene_id}: invalid JSON in {path}: {e}") from e


def gt_objects(scene_id: str, xyz_N3: np.ndarray, seg_indices_N: np.ndarray, aggregation: dict,
               align_44: np.ndarray, where: str) -> list[ObjectInfo]:
    """One axis-aligned box per annotated object, from its segments' vertices in the aligned world."""
    if len(seg_indices_N) != len(xyz_N3):
        raise SceneReadError(f"scene {scene_id}: mismatched counts: {len(seg_indices_N)} segment ids "
                             f"for {len(xyz_N3)} mesh vertices ({where})")
    aligned_N3 = xyz_N3 @ align_44[:3, :3].T + align_44[:3, 3]
    objects = []
    for group in aggregation.get("segGroups", []):
        try:
            obj_id, label, segments = int(group["objectId"]), str(group["label"]), group["segments"]
        except (KeyError, TypeError, ValueError) as e:
            raise SceneReadError(f"scene {scene_id}: bad segGroup in {where}: {e}") from e
        member_N = np.isin(seg_indices_N, np.asarray(segments, dtype=np.int64))
        if not member_N.any():
            raise SceneReadError(f"scene {scene_id}: object {obj_id} ({label}) has no mesh vertices ({where})")
        pts = aligned_N3[member_N]
        objects.append(ObjectInfo(id=obj_id, category=label,
                                  box=Box3D.from_min_max(pts.min(0), pts.max(0))))
    return sorted(objects, key=lambda o: o.id)


def scene_files(folder: Path, scene_id: str) -> dict[str, Path]:
    return {
        "sens": folder / f"{scene_id}.sens",
        "meta": folder / f"{scene_id}.txt",
        "ply": folder / f"{scene_id}_vh_clean_2.ply",
        "segs": folder / f"{scene_id}_vh_clean_2.0.010000.segs.json",
        "aggregation": folder / f"{scene_id}.aggregation.json",
        "instances_zip": folder / f"{scene_id}_2d-instance-filt.zip",
    }


def read_instance_zip(scene_id: str, path: Path, frame_numbers, size_hw: tuple[int, int]) -> np.ndarray:
    """The sampled frames' masks from ScanNet's `<scene>_2d-instance-filt.zip` (`instance-filt/<n>.png`,
    instance id + 1, 0 = none), read without unpacking the archive; int32 F x H x W, -1 = none."""
    import zipfile

    from pipeline.sources.frames import instances_from_png, read_png_u16

    try:
        with zipfile.ZipFile(path) as zf:
            names = {Path(n).stem: n for n in zf.namelist() if n.endswith(".png") and Path(n).stem.isdigit()}
            masks = []
            for n in frame_numbers:
                member = names.get(str(int(n)))
                if member is None:
                    raise SceneReadError(f"scene {scene_id}: {path} has no instance mask for frame {int(n)}")
                masks.append(instances_from_png(read_png_u16(scene_id, Path(f"{path}#{member}"),
                                                             zf.read(member)), size_hw))
    except (zipfile.BadZipFile, OSError) as e:
        raise SceneReadError(f"scene {scene_id}: corrupt or unreadable {path}: {e}") from e
    return np.stack(masks).astype(np.int32)


def read_gt_objects(scene_id: str, folder: Path, align_44: np.ndarray) -> list[ObjectInfo]:
    files = scene_files(folder, scene_id)
    if not files["aggregation"].exists():
        return []
    for key in ("ply", "segs"):
        if not files[key].exists():
            raise SceneReadError(f"scene {scene_id}: {files['aggregation'].name} exists but {files[key]} is missing")
    segs = _read_json(scene_id, files["segs"])
    if "segIndices" not in segs:
        raise SceneReadError(f"scene {scene_id}: {files['segs']} has no segIndices")
    return gt_objects(scene_id, read_ply_vertices(scene_id, files["ply"]),
                      np.asarray(segs["segIndices"], dtype=np.int64),
                      _read_json(scene_id, files["aggregation"]), align_44, str(files["aggregation"]))


@dataclass(frozen=True)
class ScanNetSource(SceneSource):
    """`path` holds one folder per scene (ScanNet's `scans/`), or bare `<scene>.sens` files (with
    any annotation files beside them). A scene is read from its exported frames when `color/`
    exists (which also brings instance-filt masks), else from its .sens, with the ground-truth masks
    of `<scene>_2d-instance-filt.zip` when it is there."""

    kind = "scannet"

    def available(self) -> list[str]:
        root = Path(self.path)
        folders = {p.name for p in root.iterdir()
                   if p.is_dir() and ((p / f"{p.name}.sens").is_file() or (p / "color").is_dir())}
        bare = {p.stem for p in root.glob("*.sens") if p.is_file()}
        return sorted(folders | bare)

    def load_scene(self, scene_id: str) -> Scene:
        folder = Path(self.path) / scene_id
        if not folder.is_dir():
            folder = Path(self.path)  # a bare <scene>.sens; annotation files share its prefix
        files = scene_files(folder, scene_id)
        found_44 = read_axis_alignment(scene_id, files["meta"]) if files["meta"].exists() else None
        align_44 = np.eye(4) if found_44 is None else found_44
        if (folder / "color").is_dir():
            scene = read_frame_folder(scene_id, folder, self.num_frames, "scannet", axis_align_44=align_44)
        elif files["sens"].is_file():
            scene = read_sens(scene_id, files["sens"], self.num_frames, axis_align_44=align_44)
            if files["instances_zip"].is_file():
                scene.instances_FHW = read_instance_zip(scene_id, files["instances_zip"], scene.frame_indices,
                                                        scene.image_size)
        else:
            raise SceneReadError(f"scene {scene_id}: neither {files['sens']} nor {folder / 'color'} exists")
        scene.objects = read_gt_objects(scene_id, folder, align_44)
        if found_44 is None and scene.objects:  # boxes would not be in ScanRefer's frame: say so in the report
            scene.warnings.append(f"annotations but no axisAlignment line in {files['meta']}: points and boxes "
                                  "stay in the unaligned scan frame, not the one ScanRefer's boxes use")
        if scene.instances_FHW is not None and scene.objects:
            unknown = set(np.unique(scene.instances_FHW).tolist()) - {o.id for o in scene.objects} - {-1}
            if unknown:
                raise SceneReadError(f"scene {scene_id}: instance-filt ids {sorted(unknown)} have no "
                                     f"object in {files['aggregation']}")
        return scene
