"""Toy scenes written in ScanNet's own formats read back through `ScanNetSource` unchanged: the
.sens stream, the axis alignment, the annotation files and `<scene>_2d-instance-filt.zip`."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from pipeline.sources import ScanNetSource, SceneReadError
from pipeline.sources.scannet_export import DEPTH_SHIFT, export_scannet_scene
from pipeline.toy.source import ToySource
from pipeline.toy.world import build_toy_world
from schemas.workflow import ToyWorldConfig


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' formula, written out here so the test does not lean on the code under test."""
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


@pytest.fixture(scope="module")
def toy_scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    build_toy_world(root, root / "scenes", ToyWorldConfig(num_scenes=1, frames=6, seed=5, image_size=(48, 64)),
                    progress=lambda _: None, workers=1)
    source = ToySource(path=str(root / "scenes"), num_frames=6)
    return source.load_scene(source.available()[0])


def test_exported_scene_reads_back_in_the_same_world(toy_scene, tmp_path):
    align_44 = np.eye(4)
    align_44[:3, :3] = _rotation(np.array([0.0, 0.0, 1.0]), 1.1)  # ScanNet aligns about z
    align_44[:3, 3] = [2.0, -1.0, 0.4]
    folder = export_scannet_scene(toy_scene, tmp_path, align_44)
    raw = np.fromfile(folder / f"{toy_scene.scene_id}.sens", np.uint8)
    assert raw[:4].view("<u4")[0] == 4  # SensorData version

    back = ScanNetSource(path=str(tmp_path), num_frames=toy_scene.num_frames).load_scene(toy_scene.scene_id)

    np.testing.assert_allclose(back.poses_F44, toy_scene.poses_F44, atol=1e-5)
    # Depth is stored in millimetres: within half a unit of the original.
    valid = toy_scene.depth_FHdWd > 0
    assert np.abs(back.depth_FHdWd - toy_scene.depth_FHdWd)[valid].max() <= 0.5 / DEPTH_SHIFT + 1e-6
    np.testing.assert_array_equal(back.instances_FHW, toy_scene.instances_FHW)
    assert [(o.id, o.category) for o in back.objects] == [(o.id, o.category) for o in toy_scene.objects]
    for got, want in zip(back.objects, toy_scene.objects):
        np.testing.assert_allclose(got.box.center, want.box.center, atol=1e-5)
        np.testing.assert_allclose(got.box.size, want.box.size, atol=1e-5)


def test_raw_frame_differs_from_the_world_by_the_alignment(toy_scene, tmp_path):
    """The .sens holds the raw scan frame; only with `<scene>.txt`'s alignment do poses match."""
    align_44 = np.eye(4)
    align_44[:3, :3] = _rotation(np.array([0.0, 0.0, 1.0]), 0.5)
    folder = export_scannet_scene(toy_scene, tmp_path, align_44)
    (folder / f"{toy_scene.scene_id}.txt").unlink()
    back = ScanNetSource(path=str(tmp_path), num_frames=toy_scene.num_frames).load_scene(toy_scene.scene_id)
    expected_raw_F44 = np.linalg.inv(align_44)[None] @ toy_scene.poses_F44
    np.testing.assert_allclose(back.poses_F44, expected_raw_F44, atol=1e-5)


def test_instance_zip_missing_a_frame_or_corrupt_is_a_clear_error(toy_scene, tmp_path):
    folder = export_scannet_scene(toy_scene, tmp_path)
    zip_path = folder / f"{toy_scene.scene_id}_2d-instance-filt.zip"
    with zipfile.ZipFile(zip_path) as zf:
        kept = {n: zf.read(n) for n in zf.namelist() if n != "instance-filt/0.png"}
    with zipfile.ZipFile(zip_path, "w") as zf:
        for name, data in kept.items():
            zf.writestr(name, data)
    source = ScanNetSource(path=str(tmp_path), num_frames=toy_scene.num_frames)
    with pytest.raises(SceneReadError, match="no instance mask for frame 0"):
        source.load_scene(toy_scene.scene_id)
    zip_path.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(SceneReadError, match="corrupt or unreadable"):
        source.load_scene(toy_scene.scene_id)
