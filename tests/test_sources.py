"""Scene readers on tiny files written in the exact real formats: ScanNet's .sens, exported frame
folders, aggregation/segs/PLY/<scene>.txt ground truth, mp4 and frame-folder videos."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.sources import ScanNetSource, SceneReadError, VideoSource, open_source
from pipeline.sources.base import uniform_indices
from pipeline.sources.frames import read_frame_folder
from pipeline.sources.scannet import index_sens, read_axis_alignment, read_ply_vertices, read_sens
from pipeline.toy.source import ToySource
from schemas.plugins import SOURCES, names
from schemas.workflow import SourceConfig

SCENE = "scene0000_00"
COLOR_HW, DEPTH_HW = (24, 32), (12, 16)
K_COLOR = np.array([[30.0, 0, 15.5, 0], [0, 30.0, 11.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
K_DEPTH = np.array([[15.0, 0, 7.5, 0], [0, 15.0, 5.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
# 90 degrees about z, then a shift: what a <scene>.txt axisAlignment looks like.
ALIGN = np.array([[0, -1, 0, 2.0], [1, 0, 0, -1.0], [0, 0, 1, 0.5], [0, 0, 0, 1]], dtype=float)


def _pose(i: int) -> np.ndarray:
    p = np.eye(4)
    p[:3, 3] = [0.1 * i, 0.2, 1.5]
    return p


def _colour(i: int, hw=COLOR_HW) -> np.ndarray:
    return np.full((*hw, 3), (10 * i, 200 - 10 * i, 100), dtype=np.uint8)


def _depth_mm(i: int, hw=DEPTH_HW) -> np.ndarray:
    return (1000 + 100 * i + np.arange(hw[0] * hw[1]).reshape(hw)).astype(np.uint16)


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_sens(path: Path, num_frames: int, bad_pose: int | None = None) -> None:
    """ScanNet's SensorData v4 layout, little endian, JPEG colour and zlib depth."""
    out = [struct.pack("<I", 4), struct.pack("<Q", 6), b"tester"]
    for m in (K_COLOR, np.eye(4), K_DEPTH, np.eye(4)):
        out.append(m.astype("<f4").tobytes())
    out.append(struct.pack("<2i4IfQ", 2, 1, COLOR_HW[1], COLOR_HW[0], DEPTH_HW[1], DEPTH_HW[0], 1000.0, num_frames))
    for i in range(num_frames):
        pose = np.full((4, 4), -np.inf) if i == bad_pose else _pose(i)
        colour = _jpeg(_colour(i))
        depth = zlib.compress(_depth_mm(i).astype("<u2").tobytes())
        out.append(pose.astype("<f4").tobytes())
        out.append(struct.pack("<4Q", 1000 * i, 1000 * i, len(colour), len(depth)))
        out += [colour, depth]
    path.write_bytes(b"".join(out))


def _write_matrix(path: Path, m: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, m, fmt="%f")


def write_exported(folder: Path, num_frames: int, instance_hw=None, instance_ids=(0, 3)) -> None:
    """SensReader's export layout; instance-filt at `instance_hw` (ScanNet's are depth-sized)."""
    for sub in ("color", "depth", "pose", "instance-filt" if instance_hw else None):
        if sub:
            (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        Image.fromarray(_colour(i)).save(folder / "color" / f"{i}.jpg", quality=95)
        Image.fromarray(_depth_mm(i)).save(folder / "depth" / f"{i}.png")
        _write_matrix(folder / "pose" / f"{i}.txt", _pose(i))
        if instance_hw:
            ids = np.zeros(instance_hw, np.uint8)  # 0 = unannotated, else object id + 1
            ids[:, : instance_hw[1] // 2] = instance_ids[0] + 1
            ids[0, -1] = instance_ids[1] + 1
            Image.fromarray(ids).save(folder / "instance-filt" / f"{i}.png")
    _write_matrix(folder / "intrinsic" / "intrinsic_color.txt", K_COLOR)
    _write_matrix(folder / "intrinsic" / "intrinsic_depth.txt", K_DEPTH)


# Two objects on a tiny "mesh": object 0 = segments {5, 6}, object 3 = segment {9}; segment 7 is
# unannotated (the floor, say).
VERTS = np.array([[0, 0, 0], [1, 0, 0], [1, 2, 0.5], [3, 3, 1], [4, 3.5, 2], [9, 9, 9], [-5, 0, 0]], float)
SEGS = [5, 5, 6, 9, 9, 7, 7]


def write_ply(path: Path, binary: bool = True, truncate: bool = False) -> None:
    header = ["ply", "format binary_little_endian 1.0" if binary else "format ascii 1.0",
              "comment written by the test", f"element vertex {len(VERTS)}",
              "property float x", "property float y", "property float z",
              "property uchar red", "property uchar green", "property uchar blue", "property uchar alpha",
              "element face 1", "property list uchar int vertex_indices", "end_header"]
    head = ("\n".join(header) + "\n").encode()
    if binary:
        dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1"), ("a", "u1")])
        v = np.zeros(len(VERTS), dtype)
        v["x"], v["y"], v["z"] = VERTS.T
        body = v.tobytes() + struct.pack("<B3i", 3, 0, 1, 2)
    else:
        body = "".join(f"{x} {y} {z} 128 128 128 255\n" for x, y, z in VERTS).encode() + b"3 0 1 2\n"
    if truncate:
        body = body[: len(body) // 3]
    path.write_bytes(head + body)


def write_gt(folder: Path, align: bool = True) -> None:
    write_ply(folder / f"{SCENE}_vh_clean_2.ply")
    (folder / f"{SCENE}_vh_clean_2.0.010000.segs.json").write_text(json.dumps(
        {"params": {"kThresh": "0.0001", "segMinVerts": "20"}, "sceneId": SCENE, "segIndices": SEGS}))
    (folder / f"{SCENE}.aggregation.json").write_text(json.dumps({
        "sceneId": f"scannet.{SCENE}", "appId": "Annotator.v1",
        "segGroups": [
            {"id": 0, "objectId": 0, "segments": [5, 6], "label": "chair"},
            {"id": 1, "objectId": 3, "segments": [9], "label": "table"},
        ],
        "segmentsFile": f"scannet.{SCENE}_vh_clean_2.0.010000.segs.json"}))
    meta = [f"colorHeight = {COLOR_HW[0]}", f"colorWidth = {COLOR_HW[1]}", "sceneType = Bedroom"]
    if align:
        meta.insert(0, "axisAlignment = " + " ".join(f"{x:g}" for x in ALIGN.ravel()))
    (folder / f"{SCENE}.txt").write_text("\n".join(meta) + "\n")


def _aligned_box(idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
    pts = VERTS[idx] @ ALIGN[:3, :3].T + ALIGN[:3, 3]
    return pts.min(0), pts.max(0)


# ---- .sens ----------------------------------------------------------------------------------

def test_sens_reads_header_frames_and_samples(tmp_path):
    path = tmp_path / f"{SCENE}.sens"
    write_sens(path, 10)
    index = index_sens(SCENE, path)
    assert index.header.sensor_name == "tester" and index.header.num_frames == 10
    assert index.header.color_wh == (32, 24) and index.header.depth_shift == 1000.0
    scene = read_sens(SCENE, path, 4)
    assert scene.frame_indices.tolist() == uniform_indices(10, 4).tolist()
    assert scene.images_FHW3.shape == (4, *COLOR_HW, 3) and scene.depth_FHdWd.shape == (4, *DEPTH_HW)
    for j, i in enumerate(scene.frame_indices):
        # zlib depth is lossless; JPEG colour is close.
        assert np.array_equal(scene.depth_FHdWd[j], _depth_mm(i).astype(np.float32) / 1000)
        assert np.abs(scene.images_FHW3[j].astype(int) - _colour(i)).mean() < 4
        assert np.allclose(scene.poses_F44[j], _pose(i))
    assert np.allclose(scene.intrinsics_F33[0], K_COLOR[:3, :3])
    assert np.allclose(scene.depth_intrinsics_F33[0], K_DEPTH[:3, :3])
    assert scene.num_frames_total == 10


def test_sens_skips_frames_without_pose(tmp_path, caplog):
    path = tmp_path / "x.sens"
    write_sens(path, 6, bad_pose=2)
    scene = read_sens(SCENE, path, 6)
    assert scene.frame_indices.tolist() == [0, 1, 3, 4, 5]
    assert "no valid pose" in caplog.text


@pytest.mark.parametrize("cut", ["header", "frame"])
def test_truncated_sens_names_scene_and_file(tmp_path, cut):
    path = tmp_path / f"{SCENE}.sens"
    write_sens(path, 3)
    data = path.read_bytes()
    path.write_bytes(data[:40] if cut == "header" else data[:-10])
    with pytest.raises(SceneReadError, match=rf"scene {SCENE}: truncated .sens .*{SCENE}\.sens"):
        read_sens(SCENE, path, 3)


def test_sens_rejects_bad_version_and_corrupt_depth(tmp_path):
    path = tmp_path / "v.sens"
    write_sens(path, 2)
    data = bytearray(path.read_bytes())
    path.write_bytes(struct.pack("<I", 3) + bytes(data[4:]))
    with pytest.raises(SceneReadError, match="version 3"):
        read_sens(SCENE, path, 2)
    # Flip bytes inside the last frame's zlib stream (the file's tail).
    data[-8:] = b"\x00" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(SceneReadError, match=r"corrupt depth of frame 1 in .*v\.sens"):
        read_sens(SCENE, path, 2)


# ---- exported frame folders -----------------------------------------------------------------

def test_exported_folder_converts_instances_and_aligns(tmp_path):
    folder = tmp_path / SCENE
    write_exported(folder, 5, instance_hw=DEPTH_HW)
    scene = read_frame_folder(SCENE, folder, 3, "scannet", axis_align_44=ALIGN)
    assert scene.frame_indices.tolist() == uniform_indices(5, 3).tolist()
    # Instance PNGs (depth-sized, id + 1) become colour-sized ids with -1 = none.
    assert scene.instances_FHW.shape == (3, *COLOR_HW)
    assert set(np.unique(scene.instances_FHW).tolist()) == {-1, 0, 3}
    assert np.all(scene.instances_FHW[:, :, : COLOR_HW[1] // 2] == 0)
    assert np.allclose(scene.poses_F44[1], ALIGN @ _pose(int(scene.frame_indices[1])), atol=1e-6)
    assert np.allclose(scene.depth_FHdWd[0], _depth_mm(0) / 1000)


@pytest.mark.parametrize("frames, break_folder, message", [
    (4, lambda folder: (folder / "depth" / "2.png").unlink(),
     rf"scene {SCENE}: mismatched counts: .*depth has 3 frames, color has 4 \(missing frame 2\)"),
    (4, lambda folder: (folder / "color" / "3.jpg").write_bytes(b"\xff\xd8 not really a jpeg"),
     rf"scene {SCENE}: corrupt or unreadable image .*color/3\.jpg"),
    (4, lambda folder: (folder / "pose" / "1.txt").write_text("1 0 0\n0 1 0\n"),
     r"pose/1\.txt holds a \(2, 3\) matrix"),
    (2, lambda folder: (folder / "intrinsic" / "intrinsic_color.txt").unlink(),
     rf"scene {SCENE}: cannot read matrix .*intrinsic_color\.txt"),
], ids=["missing depth frame", "corrupt colour frame", "bad pose matrix", "missing intrinsics"])
def test_exported_folder_broken(tmp_path, frames, break_folder, message):
    folder = tmp_path / SCENE
    write_exported(folder, frames)
    break_folder(folder)
    with pytest.raises(SceneReadError, match=message):
        read_frame_folder(SCENE, folder, frames, "scannet")


def test_exported_folder_not_there(tmp_path):
    with pytest.raises(SceneReadError, match="color not found"):
        read_frame_folder(SCENE, tmp_path / "nothing", 2, "scannet")


# ---- ScanNet ground truth -------------------------------------------------------------------

@pytest.mark.parametrize("binary", [True, False])
def test_ply_vertices(tmp_path, binary):
    path = tmp_path / "m.ply"
    write_ply(path, binary=binary)
    assert np.allclose(read_ply_vertices(SCENE, path), VERTS)


def test_truncated_ply(tmp_path):
    path = tmp_path / "m.ply"
    write_ply(path, truncate=True)
    with pytest.raises(SceneReadError, match=r"truncated PLY .*m\.ply"):
        read_ply_vertices(SCENE, path)


def test_axis_alignment_file(tmp_path):
    write_gt(tmp_path)
    assert np.allclose(read_axis_alignment(SCENE, tmp_path / f"{SCENE}.txt"), ALIGN)
    (tmp_path / "bad.txt").write_text("axisAlignment = 1 0 0 0 1\n")
    with pytest.raises(SceneReadError, match="5 numbers, expected 16"):
        read_axis_alignment(SCENE, tmp_path / "bad.txt")


def test_scannet_source_from_sens_with_gt(tmp_path):
    folder = tmp_path / SCENE
    folder.mkdir()
    write_sens(folder / f"{SCENE}.sens", 6)
    write_gt(folder)
    source = ScanNetSource(tmp_path, 3)
    assert source.scene_ids() == [SCENE]
    scene = source.load_scene(SCENE)
    assert [(o.id, o.category) for o in scene.objects] == [(0, "chair"), (3, "table")]
    for obj, idx in zip(scene.objects, ([0, 1, 2], [3, 4])):
        lo, hi = _aligned_box(idx)
        assert np.allclose(obj.box.min, lo) and np.allclose(obj.box.max, hi)
    i = int(scene.frame_indices[0])
    assert np.allclose(scene.poses_F44[0], ALIGN @ _pose(i), atol=1e-6)
    assert scene.source == "scannet" and scene.instances_FHW is None


def test_scannet_source_bare_sens_files(tmp_path):
    write_sens(tmp_path / f"{SCENE}.sens", 4)
    write_sens(tmp_path / "scene0001_00.sens", 3)
    write_gt(tmp_path)  # beside the first one only
    source = ScanNetSource(tmp_path, 2)
    assert source.scene_ids() == [SCENE, "scene0001_00"]
    assert len(source.load_scene(SCENE).objects) == 2
    other = source.load_scene("scene0001_00")
    assert other.objects == [] and other.num_frames_total == 3
    assert np.allclose(other.poses_F44[0], _pose(int(other.frame_indices[0])))  # no alignment file


def test_scannet_source_exported_with_instances(tmp_path):
    folder = tmp_path / SCENE
    write_exported(folder, 4, instance_hw=COLOR_HW)
    write_gt(folder)
    scene = ScanNetSource(tmp_path, 4).load_scene(SCENE)
    assert {o.id for o in scene.objects} == set(np.unique(scene.instances_FHW).tolist()) - {-1}
    # An instance id with no object in aggregation.json is an error, not a silent label.
    write_exported(folder, 4, instance_hw=COLOR_HW, instance_ids=(0, 7))
    with pytest.raises(SceneReadError, match=r"instance-filt ids \[7\]"):
        ScanNetSource(tmp_path, 4).load_scene(SCENE)


def test_scannet_gt_mismatched_counts(tmp_path):
    folder = tmp_path / SCENE
    write_exported(folder, 2)
    write_gt(folder)
    segs = folder / f"{SCENE}_vh_clean_2.0.010000.segs.json"
    segs.write_text(json.dumps({"segIndices": SEGS[:-2]}))
    with pytest.raises(SceneReadError, match=rf"scene {SCENE}: mismatched counts: 5 segment ids for 7 mesh vertices"):
        ScanNetSource(tmp_path, 2).load_scene(SCENE)
    segs.unlink()
    with pytest.raises(SceneReadError, match=r"segs\.json is missing"):
        ScanNetSource(tmp_path, 2).load_scene(SCENE)


# ---- video ----------------------------------------------------------------------------------

def _write_mp4(path: Path, num_frames: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_mp4_uniform_frames(tmp_path):
    _write_mp4(tmp_path / "room1.mp4", 20)
    source = VideoSource(tmp_path, 5)
    assert source.scene_ids() == ["room1"]
    scene = source.load_scene("room1")
    assert scene.frame_indices.tolist() == uniform_indices(20, 5).tolist()
    assert scene.num_frames_total == 20 and scene.depth_FHdWd is None and scene.poses_F44 is None
    # Each frame's grey level says which frame it is.
    levels = scene.images_FHW3.reshape(5, -1).mean(1)
    assert np.allclose(levels, 10 * scene.frame_indices, atol=3)


def test_video_corrupt_file(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(SceneReadError, match=r"scene broken: .*broken\.mp4"):
        VideoSource(tmp_path, 4).load_scene("broken")


def test_video_frame_folder_natural_order(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for n in (1, 2, 10, 11):  # lexical order would put 10 and 11 before 2
        Image.fromarray(np.full((8, 8, 3), 20 * n, np.uint8)).save(folder / f"frame_{n}.png")
    scene = VideoSource(tmp_path, 4).load_scene("clip")
    assert scene.images_FHW3[:, 0, 0, 0].tolist() == [20, 40, 200, 220]
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(folder / "frame_12.png")
    with pytest.raises(SceneReadError, match=r"scene clip: .*frame_12\.png is \(9, 8\)"):
        VideoSource(tmp_path, 5).load_scene("clip")


# ---- registry -------------------------------------------------------------------------------

def test_open_source_registry_and_filter(tmp_path):
    assert names(SOURCES) == ["scannet", "toy", "video"]
    for name in ("a", "b"):
        _write_mp4(tmp_path / f"{name}.mp4", 3)
    src = open_source(SourceConfig(kind="video", path=str(tmp_path), scenes=["b"]), 2)
    assert isinstance(src, VideoSource) and src.scene_ids() == ["b"]
    # A source travels to workers as a few paths and numbers.
    assert pickle.loads(pickle.dumps(src)).load_scene("b").num_frames == 2
    with pytest.raises(SceneReadError, match=r"unknown scene ids \['zz'\]"):
        open_source(SourceConfig(kind="video", path=str(tmp_path), scenes=["zz"]), 2).scene_ids()
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        open_source(SourceConfig(kind="video", path=str(tmp_path)), 0)
    with pytest.raises(SceneReadError, match="not found"):
        open_source(SourceConfig(kind="scannet", path=str(tmp_path / "missing")), 2)


def test_toy_source_rejects_unfinished_scene(tmp_path):
    folder = tmp_path / "toy0000"
    write_exported(folder, 2)
    assert ToySource(tmp_path, 2).scene_ids() == []  # no manifest.json: unfinished, not listed
    with pytest.raises(SceneReadError, match=r"scene toy0000: .*manifest\.json not found"):
        ToySource(tmp_path, 2).load_scene("toy0000")


def test_fingerprint_works_with_a_relative_source_path(tmp_path, monkeypatch):
    """Workflows name sources relative to the repository (`data/toy/scenes`)."""
    (tmp_path / "scenes" / "toy0000").mkdir(parents=True)
    (tmp_path / "scenes" / "toy0000" / "manifest.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    relative = ToySource(path="scenes", num_frames=4).fingerprint("toy0000")
    absolute = ToySource(path=str(tmp_path / "scenes"), num_frames=4).fingerprint("toy0000")
    assert relative == absolute
    (tmp_path / "scenes" / "toy0000" / "manifest.json").write_text('{"changed": 1}')
    assert ToySource(path="scenes", num_frames=4).fingerprint("toy0000") != relative
