"""Metric scale without sensor depth: the scale estimator on constructed depths, the Depth Anything
backend built tiny from its config and loaded through the user's path, and the feature stage's
wiring (recorded method, scale and error against the withheld sensor depth)."""

import numpy as np
import pytest

from pipeline.features.align import depth_in_cameras, metric_depth_scale
from pipeline.models.depth_metric import MetricDepthModel, network_size
from pipeline.toy.models import build_toy_depth_model


def test_scale_is_the_true_factor_despite_outlier_pixels_and_a_wrong_frame():
    rng = np.random.default_rng(0)
    geometry = rng.uniform(0.5, 3.0, (3, 20, 20))
    model = 2.0 * geometry
    # 40 % of every frame's pixels are wildly off (reflections, depth edges).
    bad = rng.random(geometry.shape) < 0.4
    model[bad] *= rng.uniform(0.1, 10.0, bad.sum())
    # Frame 0 is wrong as a whole (x3) and fully valid; frames 1-2 are 30 % valid. A pooled median
    # over pixels would follow frame 0 (400 pixels against 240); one vote per frame does not.
    model[0] = 6.0 * geometry[0]
    invalid = rng.random((2, 20, 20)) > 0.3
    geometry[1:][invalid] = np.nan
    assert np.nanmedian(model / geometry) > 3.0  # the pooled estimate is fooled
    assert metric_depth_scale(model, geometry) == pytest.approx(2.0)


def test_scale_ignores_invalid_pixels_and_refuses_when_none_is_usable():
    geometry = np.full((2, 4, 4), 2.0)
    model = np.full((2, 4, 4), 5.0)
    geometry[:, 0] = [0.0, -1.0, np.inf, np.nan]  # never votes
    model[:, 1] = 0.0
    assert metric_depth_scale(model, geometry) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="no pixel"):
        metric_depth_scale(np.zeros((1, 2, 2)), np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="same size"):
        metric_depth_scale(np.ones((1, 2, 2)), np.ones((1, 2, 3)))


def test_input_size_and_pixels_follow_the_checkpoints_dpt_processor(tmp_path):
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    # 518 / 588 is nearer 1 than 518 / 448, so both sides scale by it: 394.7 -> 392 (x 14), 518.
    assert network_size((448, 588)) == (392, 518)
    # 518 / 480 is nearer 1: 480 -> 518, 640 x 1.079 = 690.7 -> 686.
    assert network_size((480, 640)) == (518, 686)
    folder = build_toy_depth_model(tmp_path / "da", input_size=518)
    model = MetricDepthModel(str(folder))
    v, u = np.mgrid[0:448, 0:588]
    image = np.stack([u * 255 / 587, v * 255 / 447, (u + v) * 255 / 1034], -1).astype(np.uint8)
    reference = DPTImageProcessorPil(size={"height": 518, "width": 518}, keep_aspect_ratio=True,
                                     ensure_multiple_of=14, resample=3, do_pad=False,
                                     image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    expected = reference(images=[image], return_tensors="pt")["pixel_values"].numpy()
    ours = model.preprocess(image[None]).numpy()
    assert ours.shape == expected.shape == (1, 3, 392, 518)
    assert np.abs(ours - expected).max() < 0.05  # bicubic kernels of torch and PIL differ by rounding


def test_depth_model_loads_through_the_user_path_and_refuses_relative_depth(tmp_path):
    from transformers import AutoModelForDepthEstimation

    from schemas.plugins import DEPTH_MODELS, load
    from pipeline.toy.models import tiny_metric_config
    from schemas.config_features import DepthModelConfig

    folder = build_toy_depth_model(tmp_path / "da")
    depth = load(DEPTH_MODELS, "depth_anything")(DepthModelConfig(model=str(folder)), tmp_path)
    frames = np.random.default_rng(0).integers(0, 255, (3, 28, 42, 3), dtype=np.uint8)
    out = depth.predict(frames)
    assert out.shape == (3, 28, 42) and out.dtype == np.float32 and (out >= 0).all()
    assert depth.ref.kind == "depth_anything" and depth.ref.trained is False
    relative = tiny_metric_config()
    relative.depth_estimation_type = "relative"
    AutoModelForDepthEstimation.from_config(relative).save_pretrained(tmp_path / "rel")
    with pytest.raises(ValueError, match="not 'metric'"):
        MetricDepthModel(str(tmp_path / "rel"))


def test_withholding_sensor_data_needs_a_camera0_backend():
    from pydantic import ValidationError

    from schemas.config_features import GeometryConfig

    assert GeometryConfig(kind="vggt", withhold_sensor=["depth"]).withhold_sensor == ["depth"]
    with pytest.raises(ValidationError, match="withhold_sensor needs a camera-0 backend"):
        GeometryConfig(kind="rgbd", withhold_sensor=["poses"])


@pytest.mark.slow
def test_feature_stage_takes_metres_from_the_depth_model_when_sensor_data_is_withheld(tmp_path):
    from pipeline.features.stage import load_models, prepare_frames, process_scene
    from pipeline.models.vggt.geometry import estimate_scale
    from pipeline.toy.scenes import ToyRenderedScenes
    from schemas.config_features import DepthModelConfig, EncoderConfig, FeaturesConfig, GeometryConfig
    from schemas.workflow import ToyWorldConfig

    geometry = GeometryConfig(kind="sim_vggt", withhold_sensor=["poses", "depth"],
                              depth_model=DepthModelConfig(model="toy:depth_anything"))
    cfg = FeaturesConfig(num_frames=4, image_size=(112, 140), encoder=EncoderConfig(model="toy:qwen2_5_vl"),
                         geometry=geometry)
    models = load_models(cfg, tmp_path)
    scene = ToyRenderedScenes(ToyWorldConfig(num_scenes=1, frames=8, seed=3), num_frames=4).load_scene("toy0000")
    result = process_scene(scene, models, cfg)
    how = result.attrs.alignment
    assert how.method == "gravity" and how.scale_method == "depth_model"
    assert result.attrs.depth_model.model == "toy:depth_anything" and result.attrs.depth_model.trained is False
    assert not any("scale_prior" in w for w in result.warnings)

    images, sensor, _ = prepare_frames(scene, cfg)
    raw = models.geometry.predict(images, sensor)  # sim_vggt is seeded: the same camera-0 output
    vggt_depth = depth_in_cameras(raw.xyz_FHW3, raw.pose_F44)
    assert how.scale == pytest.approx(metric_depth_scale(models.depth.predict(images), vggt_depth), rel=1e-6)
    sensor_scale = estimate_scale(vggt_depth, sensor.depth_FHW)
    assert how.scale_error == pytest.approx(how.scale / sensor_scale - 1, rel=1e-6)

    # No depth model either: the prior, and the run report says it is the last resort.
    bare = cfg.model_copy(update={"geometry": geometry.model_copy(update={"depth_model": None})})
    prior = process_scene(scene, load_models(bare, tmp_path), bare)
    assert prior.attrs.alignment.scale_method == "prior" and prior.attrs.depth_model is None
    assert any("last resort" in w for w in prior.warnings)
