"""Feature stage per scene (no Ray): geometry, resampling, alignment against the toy world's ground
truth, failure modes, and VGGT's scale handling. Models are tiny and load through the user path."""

from dataclasses import replace

import numpy as np
import pytest

from pipeline.toy.scenes import ToyRenderedScenes
from pipeline.features.stage import load_models, process_scene
from pipeline.models.protocols import SensorFrames
from pipeline.models.rgbd import scale_intrinsics, unproject_depth
from schemas.config_features import EncoderConfig, FeaturesConfig, GeometryConfig
from schemas.workflow import ToyWorldConfig

CFG = FeaturesConfig(num_frames=6, image_size=(112, 140), encoder=EncoderConfig(model="toy:qwen2_5_vl"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def models(data_root):
    return load_models(CFG, data_root)


@pytest.fixture(scope="module")
def toy_scene():
    return ToyRenderedScenes(ToyWorldConfig(num_scenes=2, frames=12, seed=3), num_frames=6).load_scene("toy0001")


def test_unproject_plane_and_pose():
    k = np.array([[100.0, 0, 3.5], [0, 100.0, 2.5], [0, 0, 1]], np.float32)[None]
    depth = np.full((1, 6, 8), 2.0, np.float32)
    depth[0, 0, 0] = 0  # invalid
    pose = np.eye(4, dtype=np.float32)[None].copy()
    pose[0, :3, 3] = [1, 2, 3]
    xyz = unproject_depth(depth, k, pose)
    assert np.isnan(xyz[0, 0, 0]).all()
    np.testing.assert_allclose(xyz[0, 2, 7], [(7 - 3.5) / 100 * 2 + 1, (2 - 2.5) / 100 * 2 + 2, 2 + 3], rtol=1e-6)
    bad_pose = pose.copy()
    bad_pose[0, 0, 0] = -np.inf  # ScanNet's lost-tracking marker
    assert np.isnan(unproject_depth(depth, k, bad_pose)).all()


def test_scaled_intrinsics_keep_pixel_centres():
    k = np.array([[[200.0, 0, 159.5], [0, 210.0, 119.5], [0, 0, 1]]])
    point = np.array([0.3, -0.2, 2.0])
    u, v = (k[0] @ point)[:2] / point[2]
    k2 = scale_intrinsics(k, (240, 320), (112, 140))
    u2, v2 = (k2[0].astype(np.float64) @ point)[:2] / point[2]
    np.testing.assert_allclose([u2, v2], [(u + 0.5) * 140 / 320 - 0.5, (v + 0.5) * 112 / 240 - 0.5], rtol=1e-5)


def test_toy_scene_triplets_lie_on_their_objects(toy_scene, models):
    result = process_scene(toy_scene, models, CFG)
    arrays, attrs = result.arrays, result.attrs
    assert arrays["feat"].shape == (6, 4, 5, 128) and arrays["feat"].dtype == np.float16
    assert attrs.grid == [4, 5] and attrs.patch_size == 28 and attrs.image_size == [112, 140]
    assert attrs.encoder.trained is False and attrs.encoder.model == "toy:qwen2_5_vl"
    assert attrs.frame_indices == toy_scene.frame_indices.tolist()
    labels = arrays["label"]
    boxes = {o.id: o.box for o in toy_scene.objects}
    labelled = np.argwhere(labels >= 0)
    assert len(labelled) > 0
    for f, y, x in labelled:
        box = boxes[int(labels[f, y, x])]
        point = arrays["xyz"][f, y, x]
        assert np.isfinite(point).all()
        # A patch's point is a mean of its object's surface points: inside the object's box.
        assert np.all(point >= box.min - 0.02) and np.all(point <= box.max + 0.02), (f, y, x, point, box)
    # Intrinsics are stored at the encoder's input size.
    np.testing.assert_allclose(arrays["intrinsics"][0, 0, 0], toy_scene.intrinsics_F33[0, 0, 0] * 140 / 320, rtol=1e-5)


def test_bad_scenes_fail_with_their_id(toy_scene, models):
    no_masks = replace(toy_scene, scene_id="nomask", instances_FHW=np.full_like(toy_scene.instances_FHW, -1))
    with pytest.raises(ValueError, match="nomask: the segmenter found no mask"):
        process_scene(no_masks, models, CFG)
    no_depth = replace(toy_scene, scene_id="nandepth", depth_FHdWd=np.zeros_like(toy_scene.depth_FHdWd))
    with pytest.raises(ValueError, match="nandepth: geometry is invalid"):
        process_scene(no_depth, models, CFG)
    corrupt = replace(toy_scene, scene_id="corrupt", images_FHW3=toy_scene.images_FHW3.astype(np.float32))
    with pytest.raises(ValueError, match="corrupt: frames must be uint8"):
        process_scene(corrupt, models, CFG)
    with pytest.raises(ValueError, match="multiple of the encoder"):
        process_scene(toy_scene, models, CFG.model_copy(update={"image_size": (100, 140)}))


@pytest.fixture(scope="module")
def tiny_vggt(tmp_path_factory):
    from pipeline.models.vggt.config import VGGTConfig
    from pipeline.models.vggt.loader import random_vggt, save_vggt
    from pipeline.models.vggt_scaled import load_geometry

    folder = save_vggt(random_vggt(VGGTConfig.tiny(embed_dim=32, depth=2, num_heads=2), seed=3),
                       tmp_path_factory.mktemp("vggt"), toy=True)
    return lambda prior=1.0: load_geometry(GeometryConfig(kind="vggt", model=str(folder), scale_prior=prior), None)


def test_vggt_stays_in_camera0_and_alignment_finds_metres(tiny_vggt, toy_scene):
    """Since store format 2 the `vggt` backend only reports VGGT's camera-0 output; metres come from
    the world alignment (sensor depth, else the prior), as `vggt_scaled` used to do itself."""
    from pipeline.features.align import align_by_gravity, apply_to_points

    images = toy_scene.images_FHW3[:2, :112, :140]
    geometry = tiny_vggt(prior=0.7)
    geometry.vggt.long_side = 70  # a small network input keeps the test fast; the scale logic is size-free
    raw = geometry.vggt.predict(images)
    valid = np.isfinite(raw["xyz_FHW3"]).all(-1)
    assert valid.any()
    out = geometry.predict(images, SensorFrames(scene_id="s"))
    assert out.frame == "camera0"
    np.testing.assert_array_equal(out.xyz_FHW3, raw["xyz_FHW3"])
    np.testing.assert_array_equal(out.pose_F44, raw["pose_F44"])
    # Sensor depth exactly 2.5x the prediction: the estimated factor must be 2.5, and distances grow by it.
    sensor_depth = np.where(valid, raw["depth_FHW"] * 2.5, 0).astype(np.float32)
    how = align_by_gravity(out.xyz_FHW3, out.pose_F44, sensor_depth, scale_prior=0.7)
    assert how.scale_method == "median_depth_ratio"
    assert how.scale == pytest.approx(2.5, rel=1e-4)
    a, b = out.xyz_FHW3[valid][[0, -1]]
    wa, wb = apply_to_points(np.stack([a, b]), np.asarray(how.similarity))
    assert np.linalg.norm(wa - wb) == pytest.approx(2.5 * np.linalg.norm(a - b), rel=1e-4)
    prior = align_by_gravity(out.xyz_FHW3, out.pose_F44, None, scale_prior=0.7)
    assert prior.scale_method == "prior" and prior.scale == pytest.approx(0.7)
    assert geometry.ref.kind == "vggt" and geometry.ref.trained is False
