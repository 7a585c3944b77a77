"""Segments matched to ground-truth instances (DESIGN.md, "Mask ids are not instance ids"): the pure
matching core against hand-computed IoUs, and the whole chain on a store whose segmenter ids are
scrambled: categories, record targets and eval instance ids must still name the right objects."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from pipeline.cluster.driver import run_cluster
from pipeline.cluster.matching import match_segments, overlap_iou
from pipeline.cluster.shards import load_scene_proxies
from tests.synthetic_triplets import store_arrays, synthetic_scene
from pipeline.features import store
from schemas.config_cluster import ClusterConfig
from schemas.record import Record
from schemas.store import ModelRef, StoreAttrs


# ---------------------------------------------------------------- the pure core
def test_hand_computed_ious_and_greedy_one_to_one():
    #            triplet: 0  1  2   3  4  5   6
    segment_N = np.array([0, 0, 0, 1, 1, -1, 2])
    gt_N = np.array([5, 5, -1, 5, 7, 7, -1])
    # Instance 5 = {0, 1, 3}, instance 7 = {4, 5}; segment 0 = {0, 1, 2}, 1 = {3, 4}, 2 = {6}.
    # IoU(5, 0) = |{0,1}| / |{0,1,2,3}| = 1/2; IoU(5, 1) = |{3}| / |{0,1,3,4}| = 1/4;
    # IoU(7, 1) = |{4}| / |{3,4,5}| = 1/3.
    instances, g_P, s_P, iou_P = overlap_iou(segment_N, gt_N, 3)
    got = {(int(instances[g]), int(s)): float(v) for g, s, v in zip(g_P, s_P, iou_P)}
    assert got == pytest.approx({(5, 0): 1 / 2, (5, 1): 1 / 4, (7, 1): 1 / 3})
    m = match_segments(segment_N, gt_N, 3, min_iou=0.25)
    assert m.instance_S == [5, 7, None] and m.iou_S == pytest.approx([0.5, 1 / 3, None])
    assert m.instances == [5, 7] and m.unmatched == [] and m.num_matched == 2
    # Above 1/3 instance 7 matches nothing; instance 5 never takes a second segment.
    m = match_segments(segment_N, gt_N, 3, min_iou=0.4)
    assert m.instance_S == [5, None, None] and m.unmatched == [7]
    assert m.summary(0.4) == {"instances": 2, "matched": 1, "unmatched": 1, "unmatched_ids": [7], "min_iou": 0.4}


def test_a_segment_holding_two_instances_is_matched_once():
    # A merged mask: segment 0 covers instances 1 and 2 (IoU 1/2 each; ties go to the smaller id).
    m = match_segments(np.array([0, 0, 0, 0]), np.array([1, 1, 2, 2]), 1, min_iou=0.25)
    assert m.instance_S == [1] and m.unmatched == [2]
    # A split object: instance 4 over segments 0 (3 triplets) and 1 (1 triplet): the larger part wins.
    m = match_segments(np.array([0, 0, 0, 1]), np.array([4, 4, 4, 4]), 2, min_iou=0.25)
    assert m.instance_S == [4, None] and m.iou_S[0] == pytest.approx(3 / 4)


def test_unmatchable_segments_count_as_no_segment():
    segment_N = np.array([0, 0, 1, 1])
    gt_N = np.array([3, 3, 3, 3])
    m = match_segments(segment_N, gt_N, 2, 0.25, matchable_S=np.array([False, True]))
    # Segment 0's triplets still belong to instance 3: IoU(3, 1) = 2 / 4.
    assert m.instance_S == [None, 3] and m.iou_S[1] == pytest.approx(0.5)


def test_greedy_matching_is_one_to_one_and_maximal_on_random_scenes():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, num_segments = int(rng.integers(1, 60)), int(rng.integers(1, 8))
        segment_N = rng.integers(-1, num_segments, n)
        gt_N = rng.integers(-1, 6, n) * 10  # ids 0, 10, .., 50 and -10: only -1 means none
        gt_N[gt_N < 0] = -1
        min_iou = float(rng.uniform(0.05, 0.6))
        m = match_segments(segment_N, gt_N, num_segments, min_iou)

        def iou(g, s):  # reference: the definition on index sets
            a, b = set(np.flatnonzero(gt_N == g)), set(np.flatnonzero(segment_N == s))
            return len(a & b) / len(a | b)

        matched = [(g, s) for s, g in enumerate(m.instance_S) if g is not None]
        assert len({g for g, _ in matched}) == len(matched)
        for g, s in matched:
            assert m.iou_S[s] == pytest.approx(iou(g, s)) and m.iou_S[s] >= min_iou
        free_g = [g for g in m.unmatched]
        free_s = [s for s, g in enumerate(m.instance_S) if g is None]
        assert all(iou(g, s) < min_iou for g in free_g for s in free_s)
        assert sorted(m.unmatched + [g for g, _ in matched]) == sorted(set(gt_N[gt_N >= 0].tolist()))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="min_iou"):
        match_segments(np.zeros(2, int), np.zeros(2, int), 1, 0.0)
    with pytest.raises(ValueError, match="2 segment ids but 3"):
        match_segments(np.zeros(2, int), np.zeros(3, int), 1, 0.5)
    with pytest.raises(ValueError, match="segment ids must lie"):
        match_segments(np.array([0, 3]), np.zeros(2, int), 2, 0.5)
    with pytest.raises(ValueError, match="below -1"):
        match_segments(np.zeros(2, int), np.array([0, -2]), 1, 0.5)


# ---------------------------------------------------------------- scrambled segmenter ids, end to end
def _attrs(scene_id: str, objects: list[dict]) -> StoreAttrs:
    ref = ModelRef(kind="synthetic")
    return StoreAttrs(scene_id=scene_id, source={"kind": "synthetic"}, encoder=ref, geometry=ref, segmenter=ref,
                      frame_indices=list(range(6)), image_size=[224, 280], patch_size=28, grid=[8, 10],
                      objects=objects, pipeline_version="test")


@pytest.fixture(scope="module")
def scrambled(tmp_path_factory):
    """A store whose segmenter labels are a permutation of the ground-truth ids (as SAM 2's merge
    indices are), clustered; returns (out, scene objects by id, the permutation)."""
    out = tmp_path_factory.mktemp("scrambled")
    scene = synthetic_scene(num_frames=6, h=8, w=10, dim=16, num_objects=10, seed=4)
    arrays = store_arrays(scene)  # gt_label = the true instance of each patch
    perm = np.random.default_rng(7).permutation(10).astype(np.int32)
    assert (perm != np.arange(10)).sum() >= 8
    arrays["label"] = np.where(arrays["gt_label"] >= 0, perm[np.clip(arrays["gt_label"], 0, None)], -1)
    store.write_scene(out, _attrs("s0", scene.objects), arrays)
    report = run_cluster(out, ClusterConfig(name="k60", proxies=60, executor="local"))
    assert not report.failed
    assert report.details["matching"] == {"instances": 10, "matched": 10, "unmatched": 0}
    return out, {o["id"]: o for o in scene.objects}, perm


def test_scrambled_ids_categories_come_from_the_matched_instances(scrambled):
    out, objects, perm = scrambled
    sample = load_scene_proxies(out, "k60", "s0")
    labeled = [s for s in sample["segments"] if s.label >= 0]
    assert len(labeled) == 10
    for seg in labeled:
        truth = int(np.flatnonzero(perm == seg.label)[0])  # the object whose patches carry this label
        assert seg.instance_id == truth and seg.match_iou == 1.0
        assert seg.category == objects[truth]["category"]
    assert sum(s.category != objects[s.label]["category"] for s in labeled) > 0  # label equality would fail
    assert all(s.instance_id is None and s.category is None for s in sample["segments"] if s.label < 0)
    assert sample["meta"].format_version == 2
    assert sample["meta"].matching == {"instances": 10, "matched": 10, "unmatched": 0, "unmatched_ids": [],
                                       "min_iou": 0.25}


def test_scrambled_ids_record_targets_and_eval_instance_ids(scrambled):
    from trainer.objects import instances_to_segments
    from trainer.predict import answer_objects
    from trainer.examples import record_example

    out, objects, perm = scrambled
    segments = [s.model_dump(mode="json") for s in load_scene_proxies(out, "k60", "s0")["segments"]]
    assert len(instances_to_segments(segments)) == 10
    for target in range(3, 10):
        rec = Record(id=f"g{target}", scene_id="s0", task="grounding", source="toy",
                     question=f"Find the {objects[target]['category']}.", answer_type="objects", target_ids=[target])
        ex = record_example(rec, segments, 64)
        (seg_id,) = ex.meta["object_ids"]
        # The segment holding the object's patches is the one whose label the permutation gave them.
        assert segments[seg_id]["label"] == perm[target]
        got = answer_objects(ex.answer, segments, True, 64)
        assert got["object_ids"] == [seg_id] and got["instance_ids"] == [target]
        # A question naming the object resolves to the same segment.
        named = Record(id=f"n{target}", scene_id="s0", task="object_name", source="toy", question="What is <OBJ>?",
                       answers=[objects[target]["category"]], target_ids=[target])
        assert record_example(named, segments, 64).meta["object_ids"] == [seg_id]


def test_unmatched_segments_and_targets_are_counted_not_dropped():
    from pipeline.eval.evaluate import evaluate
    from pipeline.eval.predictions import Prediction
    from trainer.predict import answer_objects
    from trainer.examples import SKIP_OTHER, SKIP_UNMATCHED, stage4_examples, unmatched_targets
    from trainer.train import skipped_by_task

    box = {"center": [0.0, 0.0, 0.5], "size": [1.0, 1.0, 1.0]}
    segments = [{"id": 0, "label": 4, "instance_id": 11, "match_iou": 0.7, "category": "chair", "box": box},
                {"id": 1, "label": 2, "instance_id": None, "match_iou": None, "category": None, "box": box}]
    # A predicted segment that matched nothing carries a null instance id, which equals no target.
    assert answer_objects("<OBJ001> <OBJ000>", segments, True, 64)["instance_ids"] == [None, 11]
    recs = [Record(id="a", scene_id="s", task="grounding", source="toy", question="Find the chair.",
                   answer_type="objects", target_ids=[11]),
            Record(id="b", scene_id="s", task="grounding", source="toy", question="Find the bed.",
                   answer_type="objects", target_ids=[2]),  # 2 is a label, not a matched instance
            Record(id="c", scene_id="s", task="object_name", source="toy", question="What is <OBJ>?",
                   answers=["bed"], target_ids=[12]),
            Record(id="d", scene_id="s", task="qa", source="toy", question="Is it big?", answers=[],
                   target_ids=[11])]
    assert [unmatched_targets(r, segments) for r in recs] == [[], [2], [12], []]
    tally: Counter = Counter()
    examples = stage4_examples("s", segments, recs, 64, __import__("random").Random(0), skipped=tally)
    assert [ex.record_id for ex in examples] == ["a"]
    assert tally == {("grounding", SKIP_UNMATCHED): 1, ("object_name", SKIP_UNMATCHED): 1, ("qa", SKIP_OTHER): 1}
    assert skipped_by_task([tally, Counter({("grounding", SKIP_UNMATCHED): 2})]) == {
        "grounding": {SKIP_UNMATCHED: 3}, "object_name": {SKIP_UNMATCHED: 1}, "qa": {SKIP_OTHER: 1}}
    # Eval scores the unmatched record as a miss and says how many targets matched no segment.
    preds = {"a": Prediction(id="a", scene_id="s", task="grounding", text="<OBJ000>", instance_ids=[11]),
             "b": Prediction(id="b", scene_id="s", task="grounding", text="<OBJ001>", instance_ids=[None],
                             unmatched_targets=[2])}
    (result,) = evaluate(recs[:2], preds, "grounding")
    assert [s["Acc@0.25"] for s in result.per_sample] == [100.0, 0.0]
    assert any("1 targets of 1 records match no segment" in n for n in result.notes)
    # The predictions file keeps the null entry (aligned with object_ids).
    line = json.loads(preds["b"].model_dump_json(exclude_none=True))
    assert line["instance_ids"] == [None] and line["unmatched_targets"] == [2]


def test_old_proxy_shards_are_refused(tmp_path):
    from schemas.proxy import check_proxy_format

    with pytest.raises(ValueError, match="format 1, expected 2.*re-run `p3d cluster`"):
        check_proxy_format({"scene_id": "s"}, "old.tar:s")
    check_proxy_format({"format_version": 2}, "new.tar:s")


def test_a_number_about_objects_named_by_category_trains_without_their_segments():
    """VSI-Bench-style questions name objects by category: an unmatched target does not stop a
    number or choice answer from training, while answers that name the targets still need them."""
    from trainer.examples import record_example

    box = {"center": [0.0, 0.0, 0.5], "size": [1.0, 1.0, 1.0]}
    segments = [{"id": 0, "label": 4, "instance_id": 11, "match_iou": 0.7, "category": "chair", "box": box}]
    distance = Record(id="d", scene_id="s", task="distance", source="toy", answer_type="number",
                      question="How far apart are the chair and the bed in meters?", answers=["2.5"],
                      target_ids=[11, 12])  # 12: no segment
    ex = record_example(distance, segments, 64)
    assert ex is not None and ex.answer.startswith("2.5")
    named = distance.model_copy(update={"question": "How far apart are <OBJ> and <OBJ> in meters?"})
    assert record_example(named, segments, 64) is None  # the question cannot name object 12
    find = Record(id="f", scene_id="s", task="multi_grounding", source="toy", answer_type="objects",
                  question="Find all chairs.", target_ids=[11, 12])
    assert record_example(find, segments, 64) is None
    count = Record(id="c", scene_id="s", task="counting", source="toy", answer_type="number",
                   question="How many chairs are in the room?", answers=["2"], target_ids=[11, 12])
    assert record_example(count, segments, 64, count_by_listing=True) is None  # it would list one of two
    assert record_example(count, segments, 64).answer.startswith("2")
