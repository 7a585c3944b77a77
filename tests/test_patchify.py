"""Patchify and align: hand-built masks and point maps with known answers."""

import numpy as np
import pytest

from pipeline.features.patchify import nearest_resize, patchify


def _maps(label_HW, xyz_HW3=None, conf_HW=None):
    label = np.asarray(label_HW, np.int32)[None]
    height, width = label.shape[1:]
    if xyz_HW3 is None:
        # x = column, y = row, z = 10*row + column: every pixel has a distinct, predictable point.
        rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        xyz_HW3 = np.stack([cols, rows, 10 * rows + cols], axis=-1)
    xyz = np.asarray(xyz_HW3, np.float32)[None]
    conf = np.ones_like(label, np.float32) if conf_HW is None else np.asarray(conf_HW, np.float32)[None]
    return label, xyz, conf


def test_grid_is_not_off_by_one():
    # 4x6 pixels, patch 2 -> 2x3 grid; each 2x2 block has its own label = 10*row + col of the block.
    block = np.array([[0, 1, 2], [10, 11, 12]])
    label = np.kron(block, np.ones((2, 2), int))
    label_Fhw, xyz_Fhw3, conf_Fhw = patchify(*_maps(label), patch=2)
    assert label_Fhw.shape == (1, 2, 3)
    np.testing.assert_array_equal(label_Fhw[0], block)
    # The mean point of block (r, c) is at pixel (2r + 0.5, 2c + 0.5).
    for r in range(2):
        for c in range(3):
            np.testing.assert_allclose(xyz_Fhw3[0, r, c], [2 * c + 0.5, 2 * r + 0.5, 10 * (2 * r + 0.5) + 2 * c + 0.5])
    assert np.all(conf_Fhw == 1)


def test_largest_area_wins_and_point_is_mean_of_its_pixels_only():
    # One 3x3 patch: label 7 on 5 pixels, label 2 on 3 pixels, none (-1) on 1.
    label = [[7, 7, 2],
             [7, 7, 2],
             [7, -1, 2]]
    label_Fhw, xyz_Fhw3, _ = patchify(*_maps(label), patch=3)
    assert label_Fhw[0, 0, 0] == 7
    members = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    expect = np.mean([[c, r, 10 * r + c] for r, c in members], axis=0)
    np.testing.assert_allclose(xyz_Fhw3[0, 0, 0], expect, rtol=1e-6)


def test_label_ids_do_not_bias_the_argmax():
    # The larger label has the larger id in one patch and the smaller id in the next.
    label = [[5, 5, 5, 1, 1, 1],
             [5, 5, 1, 9, 9, 1],
             [5, 1, 1, 9, 9, 9]]
    label_Fhw, _, _ = patchify(*_maps(label), patch=3)
    np.testing.assert_array_equal(label_Fhw[0, 0], [5, 9])


def test_unlabeled_majority_stays_unlabeled_and_ties_go_to_smaller_id():
    label = [[-1, -1, -1, 4, 4, 3],
             [-1, 6, 6, 3, 4, 3]]
    label_Fhw, _, _ = patchify(*_maps(label), patch=2)
    # patch 0: -1 x3 vs 6 x1; patch 1: -1 x2 vs 6 x2 tie -> -1; patch 2: 4 x2 vs 3 x2 tie -> 3
    label_Fhw2, _, _ = patchify(*_maps(np.array(label)[:, 0:2]), patch=2)
    assert label_Fhw2[0, 0, 0] == -1
    np.testing.assert_array_equal(label_Fhw[0, 0], [-1, -1, 3])


def test_invalid_points_are_excluded_and_all_invalid_stays_nan():
    label = np.array([[1, 1, 2, 2],
                      [1, 1, 2, 2]])
    label_, xyz, conf = _maps(label)
    xyz[0, 0, 0] = np.nan  # one invalid pixel of label 1
    xyz[0, :, 2:] = np.nan  # all of label 2 invalid
    conf[0, 1, 1] = 0.5
    label_Fhw, xyz_Fhw3, conf_Fhw = patchify(label_, xyz, conf, patch=2)
    np.testing.assert_array_equal(label_Fhw[0, 0], [1, 2])
    np.testing.assert_allclose(xyz_Fhw3[0, 0, 0], np.mean([[1, 0, 1], [0, 1, 10], [1, 1, 11]], axis=0), rtol=1e-6)
    np.testing.assert_allclose(conf_Fhw[0, 0, 0], (1 + 1 + 0.5) / 3)
    assert np.all(np.isnan(xyz_Fhw3[0, 0, 1]))
    assert conf_Fhw[0, 0, 1] == 0


def test_frames_are_independent():
    rng = np.random.default_rng(0)
    label = rng.integers(-1, 3, size=(3, 4, 6)).astype(np.int32)
    xyz = rng.normal(size=(3, 4, 6, 3)).astype(np.float32)
    conf = np.ones((3, 4, 6), np.float32)
    joint = patchify(label, xyz, conf, patch=2)
    for f in range(3):
        single = patchify(label[f:f + 1], xyz[f:f + 1], conf[f:f + 1], patch=2)
        for a, b in zip(joint, single):
            np.testing.assert_array_equal(a[f:f + 1], b)


def test_bad_sizes_raise():
    label, xyz, conf = _maps(np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patchify(label, xyz, conf, patch=2)
    with pytest.raises(ValueError, match="mismatched"):
        patchify(label, xyz[:, :2], conf, patch=2)


def test_nearest_resize_keeps_ids_and_picks_centres():
    ids = np.arange(12).reshape(1, 3, 4)
    up = nearest_resize(ids, (6, 8))
    np.testing.assert_array_equal(up[0], np.kron(ids[0], np.ones((2, 2), int)))
    down = nearest_resize(up, (3, 4))
    np.testing.assert_array_equal(down, ids)
    assert set(np.unique(nearest_resize(ids, (5, 7)))) <= set(range(12))


def _naive(label, xyz, conf, patch):
    """Patch by patch, the definition read literally."""
    num_frames, height, width = label.shape
    h, w = height // patch, width // patch
    out_label = np.zeros((num_frames, h, w), np.int32)
    out_xyz = np.full((num_frames, h, w, 3), np.nan)
    out_conf = np.zeros((num_frames, h, w))
    for f in range(num_frames):
        for y in range(h):
            for x in range(w):
                lab = label[f, y * patch:(y + 1) * patch, x * patch:(x + 1) * patch].ravel()
                pts = xyz[f, y * patch:(y + 1) * patch, x * patch:(x + 1) * patch].reshape(-1, 3)
                cf = conf[f, y * patch:(y + 1) * patch, x * patch:(x + 1) * patch].ravel()
                ids, counts = np.unique(lab, return_counts=True)
                winner = ids[np.argmax(counts)]  # np.unique sorts: ties go to the smaller id
                members = (lab == winner) & np.isfinite(pts).all(axis=1)
                out_label[f, y, x] = winner
                if members.any():
                    out_xyz[f, y, x] = pts[members].mean(axis=0)
                    out_conf[f, y, x] = cf[members].mean()
    return out_label, out_xyz, out_conf


def test_matches_the_literal_definition_on_random_maps():
    rng = np.random.default_rng(7)
    for trial in range(5):
        patch = int(rng.integers(1, 5))
        label = rng.integers(-1, 4, size=(2, 3 * patch, 4 * patch)).astype(np.int32)
        xyz = rng.normal(size=(*label.shape, 3)).astype(np.float32)
        xyz[rng.random(label.shape) < 0.3] = np.nan
        conf = rng.random(label.shape).astype(np.float32)
        got = patchify(label, xyz, conf, patch)
        want = _naive(label, xyz, conf, patch)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-6)


def test_patchify_labels_follows_the_same_largest_area_rule():
    from pipeline.features.patchify import patchify, patchify_labels

    rng = np.random.default_rng(3)
    label_FHW = rng.integers(-1, 5, size=(3, 8, 12)).astype(np.int32)
    xyz_FHW3 = rng.normal(size=(3, 8, 12, 3)).astype(np.float32)
    expected, _, _ = patchify(label_FHW, xyz_FHW3, np.ones((3, 8, 12), np.float32), 4)
    np.testing.assert_array_equal(patchify_labels(label_FHW, 4), expected)
    # Hand-made patch: 3 pixels of instance 2, 1 of none -> 2; a 2-2 tie -> the smaller id.
    one = np.array([[[2, 2, 7, 7], [2, -1, 7, 5]]], np.int32)
    np.testing.assert_array_equal(patchify_labels(one, 2), [[[2, 7]]])
    tie = np.array([[[3, 9], [9, 3]]], np.int32)
    np.testing.assert_array_equal(patchify_labels(tie, 2), [[[3]]])
