"""World alignment through the feature stage (issue 14): `sim_vggt` output in an arbitrary frame comes
back in the toy world's frame; failed alignments are reported and skipped by the driver; ScanNet's
missing axisAlignment is a run-report warning. Tiny models through the user's loading path.

The oracle is the same scene through `rgbd` (sensor depth + poses, already in the world frame).
Legend: F frames, H x W pixels, h x w token grid.
"""

import json
from dataclasses import replace

import numpy as np
import pytest

from pipeline.features import store
from pipeline.features.driver import run_features
from pipeline.features.scenes import InMemoryScenes
from pipeline.features.stage import FeatureModels, load_models, process_scene
from pipeline.models.protocols import GeometryOutput
from pipeline.toy.scenes import ToyRenderedScenes
from schemas.config_features import EncoderConfig, FeaturesConfig, GeometryConfig
from schemas.workflow import ToyWorldConfig
from tests.test_align import random_similarity

NO_NOISE = dict(depth_noise=0.0, rotation_noise_deg=0.0, translation_noise_m=0.0, invalid_rate=0.0)
ORACLE = FeaturesConfig(num_frames=6, image_size=(112, 140), encoder=EncoderConfig(model="toy:qwen2_5_vl"))
SIM = ORACLE.model_copy(update={"geometry": GeometryConfig(kind="sim_vggt", **NO_NOISE)})
NOISY = ORACLE.model_copy(update={"geometry": GeometryConfig(kind="sim_vggt")})


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def toy_scene():
    return ToyRenderedScenes(ToyWorldConfig(num_scenes=2, frames=12, seed=3), num_frames=6).load_scene("toy0001")


@pytest.fixture(scope="module")
def oracle(toy_scene, data_root):
    models = load_models(ORACLE, data_root)
    return models, process_scene(toy_scene, models, ORACLE)


class Moved:
    """A geometry backend whose camera-0 output has been moved by a further similarity G (so the
    frame is arbitrary: any rotation axis, any scale). Only the boundary is wrapped; the alignment
    under test is the stage's own."""

    def __init__(self, inner, g_44: np.ndarray, scale: float):
        self.inner, self.g_44, self.scale, self.ref = inner, g_44, scale, inner.ref

    def predict(self, images_FHW3, sensor) -> GeometryOutput:
        out = self.inner.predict(images_FHW3, sensor)
        xyz = out.xyz_FHW3.astype(np.float64) @ self.g_44[:3, :3].T + self.g_44[:3, 3]
        pose_F44 = out.pose_F44.astype(np.float64).copy()
        pose_F44[:, :3, :3] = self.g_44[:3, :3] / self.scale @ pose_F44[:, :3, :3]
        pose_F44[:, :3, 3] = pose_F44[:, :3, 3] @ self.g_44[:3, :3].T + self.g_44[:3, 3]
        return replace(out, xyz_FHW3=xyz.astype(np.float32), pose_F44=pose_F44.astype(np.float32))


def rotation_angles_deg(a_F33: np.ndarray, b_F33: np.ndarray) -> np.ndarray:
    cos_F = (np.einsum("fij,fij->f", a_F33.astype(np.float64), b_F33.astype(np.float64)) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos_F, -1, 1)))


@pytest.mark.parametrize("seed", range(4))
def test_moved_geometry_comes_back_in_the_world_frame(seed, toy_scene, oracle, data_root):
    """Done-when of issue 14: within 1 cm and 0.5 degrees, noise off."""
    models, truth = oracle
    sim = load_models(SIM, data_root).geometry
    g_44, g_scale, _, _ = random_similarity(np.random.default_rng(100 + seed))
    moved = FeatureModels(models.encoder, Moved(sim, g_44, g_scale), models.segmenter)
    result = process_scene(toy_scene, moved, SIM)

    xyz, ref_xyz = result.arrays["xyz"], truth.arrays["xyz"]
    assert np.array_equal(np.isfinite(xyz[..., 0]), np.isfinite(ref_xyz[..., 0]))
    ok = np.isfinite(ref_xyz[..., 0])
    assert ok.mean() > 0.5
    assert np.linalg.norm(xyz[ok] - ref_xyz[ok], axis=-1).max() < 0.01
    np.testing.assert_array_equal(result.arrays["label"], truth.arrays["label"])
    sensor_F44 = toy_scene.poses_F44
    assert rotation_angles_deg(result.arrays["pose"][:, :3, :3], sensor_F44[:, :3, :3]).max() < 0.5
    assert np.linalg.norm(result.arrays["pose"][:, :3, 3] - sensor_F44[:, :3, 3], axis=-1).max() < 0.01

    # The recorded similarity is world-from-geometry: P_ref (camera 0, metres) . 1/units . G^-1.
    units = sim.units_for(toy_scene.scene_id)
    expected_44 = toy_scene.poses_F44[0].astype(np.float64) @ np.diag([1 / units] * 3 + [1]) @ np.linalg.inv(g_44)
    how = result.attrs.alignment
    assert how.method == "sensor_poses" and how.scale_method == "camera_centres" and how.num_frames == 6
    np.testing.assert_allclose(np.asarray(how.similarity), expected_44, atol=1e-4)
    assert how.scale == pytest.approx(1 / (units * g_scale), rel=1e-4)
    assert result.attrs.scale == how.scale and result.attrs.scale_method == "camera_centres"
    assert how.residual_m < 1e-3 and how.rotation_residual_deg < 0.05
    assert result.attrs.geometry.kind == "sim_vggt" and result.attrs.geometry.trained is False
    assert result.attrs.format_version == 2


def test_noisy_sim_vggt_is_aligned_within_its_own_noise(toy_scene, oracle, data_root):
    """With VGGT-like errors (1.5 % depth, 0.5 deg and 1.5 cm per camera) the bound is looser: patch
    points within 10 cm at the median and 25 cm at worst (per-camera pose noise at 2-4 m moves them
    by that much; the alignment itself must add little), scale within 3 %, cameras' up within 1 deg."""
    models, truth = oracle
    sim = load_models(NOISY, data_root).geometry
    result = process_scene(toy_scene, FeatureModels(models.encoder, sim, models.segmenter), NOISY)
    xyz, ref_xyz = result.arrays["xyz"], truth.arrays["xyz"]
    ok = np.isfinite(xyz[..., 0]) & np.isfinite(ref_xyz[..., 0])
    err = np.linalg.norm(xyz[ok] - ref_xyz[ok], axis=-1)
    assert np.median(err) < 0.10 and err.max() < 0.25, (np.median(err), err.max())
    how = result.attrs.alignment
    assert how.scale * sim.units_for(toy_scene.scene_id) == pytest.approx(1.0, abs=0.03)
    mean_up_3 = -result.arrays["pose"][:, :3, 1].mean(0)
    assert np.degrees(np.arccos(mean_up_3[2] / np.linalg.norm(mean_up_3))) < 1.0
    assert 0 < how.residual_m < 0.06 and 0 < how.rotation_residual_deg < 2.0


def test_sim_vggt_hides_the_world_frame(toy_scene, data_root):
    from pipeline.features.stage import prepare_frames

    sim = load_models(NOISY, data_root).geometry
    images, sensor, _ = prepare_frames(toy_scene, NOISY)
    out = sim.predict(images, sensor)
    assert out.frame == "camera0"
    np.testing.assert_allclose(out.pose_F44[0], np.eye(4), atol=1e-6)  # camera 0 is the frame
    assert not np.allclose(out.pose_F44[1], toy_scene.poses_F44[1], atol=0.1)
    # A scene's unit is fixed by (seed, scene id) and differs between scenes.
    assert sim.units_for("toy0001") == sim.units_for("toy0001") != sim.units_for("toy0000")
    assert 0.3 <= sim.units_for("toy0001") <= 3.0
    valid = np.isfinite(out.xyz_FHW3[..., 0])
    assert 0.9 < valid.mean() < 1.0 and (out.conf_FHW[valid] >= 1).all() and (out.conf_FHW[~valid] == 0).all()
    # VGGT's camera model: the principal point at the image centre.
    np.testing.assert_allclose(out.intrinsics_F33[:, :2, 2], np.tile([69.5, 55.5], (6, 1)))


# ---- the driver -------------------------------------------------------------------------------

def test_failed_alignments_are_reported_and_skipped(data_root, tmp_path):
    cfg = SIM.model_copy(update={"num_frames": 4})
    toy = ToyRenderedScenes(ToyWorldConfig(num_scenes=2, frames=8, seed=1), num_frames=4)
    good = [toy.load_scene(s) for s in toy.scene_ids()]
    base = good[0]
    lost = base.poses_F44.copy()
    lost[2:] = -np.inf  # lost tracking in all but two frames
    tripod = base.poses_F44.copy()
    tripod[:, :3, 3] = tripod[0, :3, 3]  # turning on the spot: no baseline, no scale
    warned = replace(good[1], scene_id="no_axis_alignment", warnings=["annotations but no axisAlignment line"])
    bad = [replace(base, scene_id="lost_tracking", poses_F44=lost), replace(base, scene_id="tripod", poses_F44=tripod)]
    report = run_features(cfg, tmp_path, data_root, InMemoryScenes.of(good + [warned] + bad), executor="local")

    assert sorted(report.done) == sorted([s.scene_id for s in good] + ["no_axis_alignment"])
    assert set(report.failed) == {"lost_tracking", "tripod"}
    assert "lost_tracking: world alignment failed: only 2 of 4 frames" in report.failed["lost_tracking"]
    assert "tripod: world alignment failed: camera centres nearly coincide" in report.failed["tripod"]
    assert store.list_scenes(tmp_path, complete_only=False) == sorted(report.done)
    assert report.warnings == {"no_axis_alignment": ["annotations but no axisAlignment line"]}
    run = json.loads(report.path.read_text())
    assert run["warnings"] == report.warnings
    assert {f["scene_id"] for f in run["failed"]} == {"lost_tracking", "tripod"}
    assert set(run["alignment"]) == set(report.done)
    assert {a["method"] for a in run["alignment"].values()} == {"sensor_poses"}
    for scene in good:
        attrs = store.read_scene(tmp_path, scene.scene_id).attrs
        assert attrs.alignment.method == "sensor_poses" and attrs.alignment.residual_m < 1e-3


def test_scannet_without_axis_alignment_is_a_scene_warning(tmp_path):
    from pipeline.sources.scannet import ScanNetSource
    from tests.test_sources import SCENE, write_gt, write_sens

    for name, align in (("aligned", True), ("unaligned", False)):
        folder = tmp_path / name / SCENE
        folder.mkdir(parents=True)
        write_sens(folder / f"{SCENE}.sens", 4)
        write_gt(folder, align=align)
    assert ScanNetSource(tmp_path / "aligned", 2).load_scene(SCENE).warnings == []
    (warning,) = ScanNetSource(tmp_path / "unaligned", 2).load_scene(SCENE).warnings
    assert "no axisAlignment" in warning and f"{SCENE}.txt" in warning
