"""SAM 2 segmenter (tiny random-weight model saved and loaded through the user path), automatic-mask
helpers, and the 3D-overlap merge that gives one id per object across frames."""

import numpy as np
import pytest

from pipeline.models.mask_merge import merge_frames_3d, paint_masks, voxel_keys
from pipeline.models.protocols import SensorFrames
from pipeline.models.sam2_segmenter import mask_nms, point_grid
from schemas.config_features import SegmenterConfig


def test_point_grid_is_cell_centres():
    grid = point_grid(4)
    assert grid.shape == (16, 2)
    np.testing.assert_allclose(np.unique(grid[:, 0]), [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(grid[1], [0.375, 0.125])  # x varies fastest


def test_mask_nms_drops_the_weaker_duplicate():
    a = np.zeros((3, 4, 4), bool)
    a[0, :2] = True
    a[1, :2, :3] = True  # IoU with mask 0 = 6/8
    a[2, 3] = True
    keep = mask_nms(a, np.array([0.5, 0.9, 0.1]), iou_thresh=0.7)
    assert list(keep) == [1, 2]
    assert sorted(mask_nms(a, np.array([0.5, 0.9, 0.1]), iou_thresh=0.8)) == [0, 1, 2]


def test_paint_keeps_small_masks_on_top():
    big = np.ones((4, 4), bool)
    small = np.zeros((4, 4), bool)
    small[1, 1] = True
    label = paint_masks(np.stack([small, big]))
    assert label[1, 1] == 0 and label[0, 0] == 1


def _two_boxes_scene():
    """Two frames of a 2x8 image: pixels 0-3 see object A (x in [0, 1)), 4-7 object B (x in [5, 6))."""
    xyz = np.zeros((2, 2, 8, 3), np.float32)
    xs_a = np.linspace(0.05, 0.95, 4)
    xs_b = np.linspace(5.05, 5.95, 4)
    xyz[:, :, :4, 0] = xs_a
    xyz[:, :, 4:, 0] = xs_b
    labels = np.full((2, 2, 8), -1, np.int32)
    labels[0, :, :4], labels[0, :, 4:] = 0, 1  # frame 0: A = 0, B = 1
    labels[1, :, :4], labels[1, :, 4:] = 7, 3  # frame 1: same objects, unrelated ids
    return labels, xyz


def test_merge_recovers_identity_across_frames():
    labels, xyz = _two_boxes_scene()
    merged = merge_frames_3d(labels, xyz, voxel=0.25, min_overlap=0.3)
    assert merged[0, 0, 0] == merged[1, 0, 0] != merged[0, 0, 7] == merged[1, 0, 7]
    assert len(np.unique(merged)) == 2


def test_merge_keeps_new_objects_and_same_frame_masks_apart():
    labels, xyz = _two_boxes_scene()
    xyz[1, :, 4:, 0] += 20.0  # frame 1's second mask is somewhere else: a new object
    merged = merge_frames_3d(labels, xyz, voxel=0.25, min_overlap=0.3)
    assert len(np.unique(merged)) == 3
    # Two masks of one frame on the same 3D points are still two objects.
    same = np.full((1, 2, 8), -1, np.int32)
    same[0, 0], same[0, 1] = 0, 1
    pts = np.zeros((1, 2, 8, 3), np.float32)
    pts[0, :, :, 0] = np.linspace(0, 1, 8)
    assert len(np.unique(merge_frames_3d(same, pts, voxel=0.25, min_overlap=0.3))) == 2
    # Masks without valid points cannot be matched and stay separate.
    nan_pts = np.full_like(xyz, np.nan)
    assert len(np.unique(merge_frames_3d(labels, nan_pts, voxel=0.25, min_overlap=0.3))) == 4


def test_voxel_keys_distinguish_axes_and_negative_coords():
    pts = np.array([[0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1], [-0.1, 0, 0], [0.1, 0, 0], [np.nan, 0, 0]])
    keys = voxel_keys(pts, voxel=0.05)
    assert len(keys) == 4


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def _load(data_root, **overrides):
    from pipeline.models.sam2_segmenter import load_segmenter

    cfg = SegmenterConfig(kind="sam2", model="toy:sam2", points_per_side=4, pred_iou_thresh=0.0,
                          stability_thresh=0.0, min_mask_area=0.0).model_copy(update=overrides)
    return load_segmenter(cfg, data_root)


@pytest.fixture(scope="module")
def segmenter(data_root):
    return _load(data_root)


def test_tiny_sam2_loads_through_user_path_and_segments(segmenter):
    assert segmenter.ref.model == "toy:sam2" and segmenter.ref.trained is False
    assert segmenter.input_size == 128
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 56, 84, 3), dtype=np.uint8)
    pixels = segmenter.preprocess(images)
    assert tuple(pixels.shape) == (2, 3, 128, 128)
    masks, scores = segmenter.frame_masks(images[0])
    assert masks.dtype == bool and masks.shape[1:] == (56, 84) and len(masks) == len(scores)
    assert 0 < len(masks) <= 16  # at most one mask per grid point, NMS may drop some
    xs, ys = np.meshgrid(np.arange(84), np.arange(56))
    xyz = np.stack([xs, ys, np.full_like(xs, 100)], -1) * 0.01
    xyz = np.repeat(xyz[None], 2, 0).astype(np.float32)
    labels = segmenter.segment(images, SensorFrames(scene_id="s"), xyz)
    assert labels.shape == (2, 56, 84) and labels.dtype == np.int32 and (labels >= 0).any()
    with pytest.raises(ValueError, match="needs the geometry"):
        segmenter.segment(images, SensorFrames(scene_id="s"), None)


def test_strict_thresholds_filter_every_random_mask(segmenter, data_root):
    # The random model predicts IoU ~0.5: SAM's default 0.7 threshold must reject all of its masks,
    # while the permissive one keeps some on the same frame.
    frame = np.random.default_rng(1).integers(0, 256, size=(56, 84, 3), dtype=np.uint8)
    assert len(segmenter.frame_masks(frame)[0]) > 0
    assert len(_load(data_root, pred_iou_thresh=0.7).frame_masks(frame)[0]) == 0


@pytest.mark.parametrize("points_per_batch, frames_per_batch", [(6, 2), (40, 2)])
def test_batched_masks_equal_the_per_frame_order(data_root, points_per_batch, frames_per_batch):
    # 16 prompts per frame: 6 per call splits each frame's prompts (a ragged last chunk), 40 puts two
    # frames in one decoder call; the image encoder takes frames 2 at a time, 3 frames leave one alone.
    segmenter = _load(data_root, points_per_batch=points_per_batch, frames_per_batch=frames_per_batch)
    images = np.random.default_rng(2).integers(0, 256, size=(3, 56, 84, 3), dtype=np.uint8)
    batched = segmenter.batch_masks(images)
    assert len(batched) == len(images)
    for image, (masks, scores) in zip(images, batched):
        naive_masks, naive_scores = segmenter.frame_masks(image)
        assert len(naive_masks) > 0
        np.testing.assert_array_equal(masks, naive_masks)
        np.testing.assert_array_equal(scores, naive_scores)
    expected = np.stack([paint_masks(segmenter.frame_masks(image)[0]) for image in images])
    np.testing.assert_array_equal(segmenter.frame_labels(images), expected)


def test_sdpa_attention_gives_the_eager_masks(data_root, segmenter):
    from pipeline.models.sam2_segmenter import SAM2Segmenter

    assert segmenter.net.config._attn_implementation == "sdpa"
    folder = data_root / "models" / "sam2"
    eager = SAM2Segmenter(str(folder), points_per_side=4, pred_iou_thresh=0.0, stability_thresh=0.0,
                          min_mask_area=0.0, attn_implementation="eager")
    assert eager.net.config._attn_implementation == "eager"
    images = np.random.default_rng(3).integers(0, 256, size=(3, 56, 84, 3), dtype=np.uint8)
    for (masks, _), (eager_masks, _) in zip(segmenter.batch_masks(images), eager.batch_masks(images)):
        assert masks.shape == eager_masks.shape
        assert (masks != eager_masks).mean() < 1e-3  # float rounding may flip a pixel on the 0 logit
