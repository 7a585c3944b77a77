"""Feature-map upsampling to a finer latent grid (the paper's 32 x 42 maps, Table 4): bilinear
properties checked against formulas written here, alignment of the upsampled features with points
and labels patchified at the finer pixel patch, and the feature stage writing that grid."""

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.features.patchify import patchify, patchify_labels, upsample_features
from schemas.config_features import EncoderConfig, FeaturesConfig


def _source_coord(num_out: int, num_in: int) -> np.ndarray:
    """Where output sample i reads the input under align_corners=False (half-pixel centres), clamped
    at the borders as bilinear resizing replicates edges."""
    return np.clip((np.arange(num_out) + 0.5) * num_in / num_out - 0.5, 0, num_in - 1)


def test_constant_map_stays_constant():
    feat = np.full((3, 4, 5, 6), 2.75, np.float32)
    out = upsample_features(feat, (8, 10))
    assert out.shape == (3, 8, 10, 6)
    np.testing.assert_array_equal(out, 2.75)


def test_affine_ramp_stays_affine_at_the_half_pixel_sample_positions():
    rows, cols = np.meshgrid(np.arange(4.0), np.arange(5.0), indexing="ij")
    feat = np.stack([3 * rows - 2 * cols + 1, 0.5 * cols], axis=-1)[None].astype(np.float32)
    out = upsample_features(feat, (8, 15))  # 2x and 3x
    y, x = np.meshgrid(_source_coord(8, 4), _source_coord(15, 5), indexing="ij")
    np.testing.assert_allclose(out[0, ..., 0], 3 * y - 2 * x + 1, atol=1e-5)
    np.testing.assert_allclose(out[0, ..., 1], 0.5 * x, atol=1e-5)
    # Interior samples are exactly the ramp at the finer cells' centres (no clamping there).
    interior = 0.5 * ((np.arange(1, 14) + 0.5) / 3 - 0.5)
    np.testing.assert_allclose(out[0, 1:-1, 1:-1, 1], np.broadcast_to(interior, (6, 13)), atol=1e-5)


def test_points_and_labels_at_the_finer_patch_align_with_upsampled_features():
    """Pixels carry their own centre coordinates; each 28 px encoder token carries its cell's centre.
    After upsampling to 14 px tokens, every interior token's feature equals the mean point of its
    14 px patch: features and patchified points describe the same pixels."""
    height, width, coarse, fine = 112, 140, 28, 14
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    xyz_FHW3 = np.stack([u, v, np.ones_like(u)], -1)[None].astype(np.float32)
    ci, cj = np.meshgrid(np.arange(height // coarse), np.arange(width // coarse), indexing="ij")
    feat_FhwD = np.stack([coarse * cj + coarse / 2, coarse * ci + coarse / 2], -1)[None].astype(np.float32)
    label_FHW = (np.floor(u / fine).astype(np.int32))[None]  # one label per 14 px column strip

    feat_up = upsample_features(feat_FhwD, (height // fine, width // fine))
    label_Fhw, xyz_Fhw3, _ = patchify(label_FHW, xyz_FHW3, np.ones_like(u, np.float32)[None], fine)
    assert feat_up.shape[:3] == label_Fhw.shape == (1, 8, 10)
    np.testing.assert_allclose(feat_up[0, 1:-1, 1:-1], xyz_Fhw3[0, 1:-1, 1:-1, :2], atol=1e-4)
    # Border tokens replicate the edge token's value (coarse centre 14), not the fine centre (7).
    np.testing.assert_allclose(feat_up[0, :, 0, 0], coarse / 2)
    np.testing.assert_array_equal(label_Fhw[0], np.broadcast_to(np.arange(10), (8, 10)))
    np.testing.assert_array_equal(patchify_labels(label_FHW, fine), label_Fhw)


def test_latent_grid_must_cut_square_pixel_patches():
    assert FeaturesConfig(image_size=(448, 588), latent_grid=(32, 42)).latent_grid == (32, 42)
    for bad in [(33, 42), (32, 21)]:  # not a divisor; 14 x 28 px patches
        with pytest.raises(ValidationError, match="latent_grid"):
            FeaturesConfig(image_size=(448, 588), latent_grid=bad)


@pytest.mark.slow
def test_feature_stage_writes_the_upsampled_grid(tmp_path):
    from pipeline.toy.scenes import ToyRenderedScenes
    from pipeline.features.stage import load_models, prepare_frames, process_scene
    from schemas.workflow import ToyWorldConfig

    cfg = FeaturesConfig(num_frames=3, image_size=(112, 140), latent_grid=(8, 10),
                         encoder=EncoderConfig(model="toy:qwen2_5_vl"))
    models = load_models(cfg, tmp_path)
    scene = ToyRenderedScenes(ToyWorldConfig(num_scenes=1, frames=6, seed=3), num_frames=3).load_scene("toy0000")
    result = process_scene(scene, models, cfg)
    arrays, attrs = result.arrays, result.attrs
    assert attrs.grid == [8, 10] and attrs.encoder_grid == [4, 5] and attrs.patch_size == 14
    for name in ("feat", "xyz", "label", "conf", "gt_label"):
        assert arrays[name].shape[:3] == (3, 8, 10), name
    images, sensor, _ = prepare_frames(scene, cfg)
    expected = upsample_features(models.encoder.encode(images).feat_FhwD, (8, 10)).astype(np.float16)
    np.testing.assert_array_equal(arrays["feat"], expected)
    np.testing.assert_array_equal(arrays["gt_label"], patchify_labels(sensor.instances_FHW, 14))
