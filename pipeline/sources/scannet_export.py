"""Write a `Scene` in ScanNet's own file formats: what `ScanNetSource` reads, byte for byte.

Used to run the real ScanNet path without the dataset (the CI smoke test exports toy scenes) and
to bring one's own RGB-D captures into the layout the ScanNet tools expect. One scene folder gets:
  `<scene>.sens`                        SensorData v4: JPEG colour, zlib uint16 depth (mm), poses
  `<scene>.txt`                         `axisAlignment = ...` (row-major 4x4)
  `<scene>_vh_clean_2.ply`              a "mesh" of the objects' box corners (binary little endian)
  `<scene>_vh_clean_2.0.010000.segs.json`  one over-segment per object
  `<scene>.aggregation.json`            `segGroups`: objectId, label, segments
  `<scene>_2d-instance-filt.zip`        `instance-filt/<n>.png`, 8-bit instance id + 1 (0 = none)

ScanNet stores poses and meshes in the raw scan frame and gives `axisAlignment` to map them to the
axis-aligned world. The exporter takes the scene in its world frame and writes the raw frame as
`inverse(axis_align) @ world`, so reading the files back with the alignment returns the scene's own
world; a non-identity `axis_align_44` makes a test exercise that step.

Legend: F frames, H x W colour pixels, Hd x Wd depth pixels.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.sources.base import Scene
from schemas.io import atomic_dir

DEPTH_SHIFT = 1000.0  # depth units per metre, as ScanNet
MAX_INSTANCE_ID = 254  # 8-bit PNGs hold id + 1


def _jpeg(rgb_HW3: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb_HW3).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _png(ids_HW: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(ids_HW).save(buf, format="PNG")
    return buf.getvalue()


def _intrinsic_44(k_33: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = k_33
    return out


def sens_bytes(scene: Scene, raw_poses_F44: np.ndarray) -> bytes:
    """ScanNet's SensorData v4 layout (see pipeline/sources/scannet.py), little endian."""
    if scene.depth_FHdWd is None or scene.intrinsics_F33 is None:
        raise ValueError(f"scene {scene.scene_id}: a .sens needs depth and intrinsics")
    depth_k = scene.depth_intrinsics_F33 if scene.depth_intrinsics_F33 is not None else scene.intrinsics_F33
    height, width = scene.image_size
    depth_h, depth_w = scene.depth_FHdWd.shape[1:]
    name = b"p3d-export"
    out = [struct.pack("<I", 4), struct.pack("<Q", len(name)), name]
    for m in (_intrinsic_44(scene.intrinsics_F33[0]), np.eye(4), _intrinsic_44(depth_k[0]), np.eye(4)):
        out.append(np.asarray(m, "<f4").tobytes())
    out.append(struct.pack("<2i4IfQ", 2, 1, width, height, depth_w, depth_h, DEPTH_SHIFT, scene.num_frames))
    for f in range(scene.num_frames):
        depth_mm = np.clip(np.nan_to_num(scene.depth_FHdWd[f]) * DEPTH_SHIFT, 0, 65535).round().astype("<u2")
        colour, depth = _jpeg(scene.images_FHW3[f]), zlib.compress(depth_mm.tobytes())
        out.append(np.asarray(raw_poses_F44[f], "<f4").tobytes())
        out.append(struct.pack("<4Q", 1000 * f, 1000 * f, len(colour), len(depth)))
        out += [colour, depth]
    return b"".join(out)


def _box_corners(center, size) -> np.ndarray:
    lo, hi = np.asarray(center) - np.asarray(size) / 2, np.asarray(center) + np.asarray(size) / 2
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def _ply_bytes(verts_N3: np.ndarray) -> bytes:
    header = ["ply", "format binary_little_endian 1.0", "comment p3d export: object box corners",
              f"element vertex {len(verts_N3)}", "property float x", "property float y", "property float z",
              "element face 0", "property list uchar int vertex_indices", "end_header"]
    return ("\n".join(header) + "\n").encode() + np.asarray(verts_N3, "<f4").tobytes()


def export_scannet_scene(scene: Scene, root: str | Path, axis_align_44: np.ndarray | None = None) -> Path:
    """Write `scene` (poses, objects in its world frame) as `<root>/<scene_id>/` in ScanNet's formats."""
    if scene.poses_F44 is None:
        raise ValueError(f"scene {scene.scene_id}: a ScanNet scene needs camera poses")
    align_44 = np.eye(4) if axis_align_44 is None else np.asarray(axis_align_44, np.float64)
    unalign_44 = np.linalg.inv(align_44)
    raw_poses_F44 = unalign_44[None] @ scene.poses_F44.astype(np.float64)
    folder = Path(root) / scene.scene_id
    sid = scene.scene_id
    with atomic_dir(folder) as tmp:
        (tmp / f"{sid}.sens").write_bytes(sens_bytes(scene, raw_poses_F44))
        (tmp / f"{sid}.txt").write_text(
            "axisAlignment = " + " ".join(f"{v:.9g}" for v in align_44.ravel()) + "\n"
            f"numColorFrames = {scene.num_frames}\n")
        verts, seg_indices, groups = [], [], []
        for obj in scene.objects:
            corners_83 = _box_corners(obj.box.center, obj.box.size)
            verts.append(corners_83 @ unalign_44[:3, :3].T + unalign_44[:3, 3])
            seg_indices += [obj.id] * len(corners_83)  # one over-segment per object, numbered by its id
            groups.append({"id": obj.id, "objectId": obj.id, "segments": [obj.id], "label": obj.category})
        if groups:
            (tmp / f"{sid}_vh_clean_2.ply").write_bytes(_ply_bytes(np.concatenate(verts)))
            (tmp / f"{sid}_vh_clean_2.0.010000.segs.json").write_text(json.dumps(
                {"params": {"exporter": "p3d"}, "sceneId": sid, "segIndices": seg_indices}))
            (tmp / f"{sid}.aggregation.json").write_text(json.dumps(
                {"sceneId": f"scannet.{sid}", "appId": "p3d.export", "segGroups": groups,
                 "segmentsFile": f"scannet.{sid}_vh_clean_2.0.010000.segs.json"}))
        if scene.instances_FHW is not None:
            if scene.instances_FHW.max(initial=-1) > MAX_INSTANCE_ID:
                raise ValueError(f"scene {sid}: instance ids above {MAX_INSTANCE_ID} do not fit 8-bit PNGs")
            with zipfile.ZipFile(tmp / f"{sid}_2d-instance-filt.zip", "w") as zf:
                for f in range(scene.num_frames):  # numbered as the frames of the .sens written above
                    zf.writestr(f"instance-filt/{f}.png", _png((scene.instances_FHW[f] + 1).astype(np.uint8)))
    return folder
