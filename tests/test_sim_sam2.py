"""`sim_sam2`: SAM 2's output contract and errors from ground truth (ids that change per frame, splits,
merges, misses, background masks) at the configured rates, deterministic per scene; and the toy
world through it, the store's ground truth and the cluster stage's matching."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.models.protocols import SensorFrames
from pipeline.toy.sim_sam2 import SimSAM2, scene_rng, simulate_frame_masks
from schemas.config_features import SegmenterConfig

RATES = SegmenterConfig(kind="sim_sam2", split_rate=0.2, merge_rate=0.1, miss_rate=0.1, background_rate=0.5, background_masks=3)


def _grid_instances(num_frames=200, rows=4, cols=5, cell=6):
    """Objects as touching cell x cell squares on a rows x cols grid with a background border; each
    frame shows a random subset (~80 %) of them."""
    rng = np.random.default_rng(0)
    height, width = rows * cell + 4, cols * cell + 4
    inst_FHW = np.full((num_frames, height, width), -1, np.int32)
    for f in range(num_frames):
        for r in range(rows):
            for c in range(cols):
                if rng.random() < 0.8:
                    inst_FHW[f, 2 + r * cell:2 + (r + 1) * cell, 2 + c * cell:2 + (c + 1) * cell] = 3 * (r * cols + c) + 1
    return inst_FHW


def test_errors_happen_at_the_configured_rates_and_show_in_the_masks():
    inst_FHW = _grid_instances()
    labels_FHW, log = simulate_frame_masks(inst_FHW, RATES, scene_rng(0, "grid"))
    objects = np.unique(inst_FHW[inst_FHW >= 0])
    assert len(log.split) == round(0.2 * len(objects)) == 4
    assert len(log.merged) == round(0.1 * len(objects)) == 2
    assert not set(log.split) & {o for pair in log.merged for o in pair}
    assert abs(len(log.missed) / log.visible - 0.1) < 0.03
    assert abs(len(log.background_frames) / len(inst_FHW) - 0.5) < 0.1
    missed = set(log.missed)
    joins = dict(log.merged)
    owner = {int(o): joins.get(int(o), int(o)) for o in objects}
    for f in range(len(inst_FHW)):
        for o in objects:
            pixels = inst_FHW[f] == o
            if not pixels.any():
                continue
            ids = set(np.unique(labels_FHW[f][pixels]).tolist())
            if (f, owner[int(o)]) in missed:
                assert ids == {-1}
            elif int(o) in log.split:
                assert len(ids) == 2 and -1 not in ids
            else:
                assert len(ids) == 1 and -1 not in ids
                # Only a merged neighbour shares the mask.
                sharing = set(np.unique(inst_FHW[f][labels_FHW[f] == ids.pop()]).tolist())
                assert sharing == {p for p in objects if owner[int(p)] == owner[int(o)]} & set(inst_FHW[f].ravel())
        for a, b in log.merged:  # merged into a touching neighbour
            assert any(((inst_FHW[g] == a) & (np.roll(inst_FHW[g], s, ax) == b)).any()
                       for g in range(len(inst_FHW)) for s in (1, -1) for ax in (0, 1))
        surface = inst_FHW[f] < 0
        background_ids = set(np.unique(labels_FHW[f][surface]).tolist()) - {-1}
        if f in log.background_frames:
            assert 1 <= len(background_ids) <= 3
        else:
            assert background_ids == set()


def test_ids_change_from_frame_to_frame_and_runs_repeat_per_scene():
    inst_FHW = _grid_instances(num_frames=20)
    no_errors = SegmenterConfig(kind="sim_sam2", split_rate=0, merge_rate=0, miss_rate=0, background_rate=0)
    labels_FHW, _ = simulate_frame_masks(inst_FHW, no_errors, scene_rng(0, "a"))
    # Every object keeps one mask, but its id differs from frame to frame and from its instance id.
    obj = int(inst_FHW[0][inst_FHW[0] >= 0][0])
    ids = [int(labels_FHW[f][inst_FHW[f] == obj][0]) for f in range(20) if (inst_FHW[f] == obj).any()]
    assert len(set(ids)) > len(ids) // 2 and obj not in ids
    again, _ = simulate_frame_masks(inst_FHW, no_errors, scene_rng(0, "a"))
    other, _ = simulate_frame_masks(inst_FHW, no_errors, scene_rng(0, "b"))
    np.testing.assert_array_equal(labels_FHW, again)
    assert not np.array_equal(labels_FHW, other)
    with pytest.raises(ValueError, match="split_rate"):
        SegmenterConfig(kind="sim_sam2", split_rate=1.5)


def test_segment_merges_across_frames_and_needs_points_and_ground_truth():
    inst_FHW = _grid_instances(num_frames=6)
    # A flat scene whose pixels are fixed 3D points: each object's masks overlap across frames.
    ys, xs = np.indices(inst_FHW.shape[1:])
    xyz_FHW3 = np.broadcast_to(np.stack([xs * 0.1, ys * 0.1, np.zeros_like(xs, float)], -1),
                               (*inst_FHW.shape, 3)).astype(np.float32)
    seg = SimSAM2(SegmenterConfig(kind="sim_sam2", split_rate=0, merge_rate=0, miss_rate=0, background_rate=0,
                                  merge_voxel=0.05))
    sensor = SensorFrames(scene_id="flat", instances_FHW=inst_FHW)
    images = np.zeros((*inst_FHW.shape, 3), np.uint8)
    out_FHW = seg.segment(images, sensor, xyz_FHW3)
    # After the merge one global id per object in every frame (a bijection with the instances).
    pairs = {(int(g), int(s)) for g, s in zip(inst_FHW.ravel(), out_FHW.ravel()) if g >= 0}
    assert len(pairs) == len({g for g, _ in pairs}) == len({s for _, s in pairs})
    assert seg.ref.kind == "sim_sam2" and seg.ref.trained is False
    with pytest.raises(ValueError, match="needs the geometry's point maps"):
        seg.segment(images, sensor, None)
    with pytest.raises(ValueError, match="ground-truth instance masks"):
        seg.segment(images, SensorFrames(scene_id="video"), xyz_FHW3)


def test_toy_world_through_sim_sam2_store_and_matching(tmp_path):
    from pipeline.cluster.driver import run_cluster
    from pipeline.cluster.shards import load_scene_proxies
    from pipeline.features.patchify import nearest_resize, patchify_labels
    from pipeline.toy.scenes import ToyRenderedScenes
    from pipeline.features.stage import load_models, process_scene
    from pipeline.features.store import read_scene, write_scene
    from schemas.config_cluster import ClusterConfig
    from schemas.config_features import EncoderConfig, FeaturesConfig, SegmenterConfig
    from schemas.workflow import ToyWorldConfig

    cfg = FeaturesConfig(num_frames=6, image_size=(112, 140), encoder=EncoderConfig(model="toy:qwen2_5_vl"),
                         segmenter=SegmenterConfig(kind="sim_sam2"))
    models = load_models(cfg, tmp_path / "data")
    scene = ToyRenderedScenes(ToyWorldConfig(num_scenes=2, frames=12, seed=3), num_frames=6).load_scene("toy0001")
    result = process_scene(scene, models, cfg)
    assert result.attrs.segmenter.kind == "sim_sam2" and result.attrs.segmenter.trained is False
    expected_gt = patchify_labels(nearest_resize(scene.instances_FHW, (112, 140)), 28)
    np.testing.assert_array_equal(result.arrays["gt_label"], expected_gt)
    write_scene(tmp_path, result.attrs, result.arrays)
    np.testing.assert_array_equal(read_scene(tmp_path, "toy0001").gt_label_Fhw, expected_gt)
    run_cluster(tmp_path, ClusterConfig(name="k64", proxies=64, executor="local"))
    sample = load_scene_proxies(tmp_path, "k64", "toy0001")
    boxes = {o.id: o.box for o in scene.objects}
    category = {o.id: o.category for o in scene.objects}
    matched = [s for s in sample["segments"] if s.instance_id is not None]
    assert sample["meta"].matching["instances"] == len(set(expected_gt[expected_gt >= 0].tolist()))
    assert len(matched) == sample["meta"].matching["matched"] >= 1
    for s in matched:
        assert s.label >= 0 and s.match_iou >= 0.25 and s.category == category[s.instance_id]
        # The segment lies on its matched object (its center within the object's box, 10 cm slack).
        box = boxes[s.instance_id]
        assert np.all(np.asarray(s.center) >= box.min - 0.1) and np.all(np.asarray(s.center) <= box.max + 0.1)
