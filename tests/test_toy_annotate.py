"""The toy world's spatial questions name objects by category, VSI-Bench style, only where the
category is unique in the room; answers follow the geometry (computed here, by hand)."""

from __future__ import annotations

import numpy as np

from pipeline.toy.annotate import generate_records
from pipeline.toy.layout import ToyLayout, ToyObject
from schemas.record import OBJ_PLACEHOLDER


def _obj(i: int, category: str, lo, hi) -> ToyObject:
    return ToyObject(i, category, "red", (200, 0, 0), np.array(lo, float), np.array(hi, float), [])


# Two chairs (category not unique), one sofa, table and lamp (unique).
LAYOUT = ToyLayout(np.array([6.0, 5.0, 2.8]), (0, 0, 0), (0, 0, 0), [
    _obj(0, "chair", (0.5, 0.5, 0.0), (1.0, 1.0, 0.9)),
    _obj(1, "chair", (4.5, 0.5, 0.0), (5.0, 1.0, 0.9)),
    _obj(2, "sofa", (0.5, 3.5, 0.0), (2.5, 4.4, 0.8)),      # centre (1.5, 3.95, 0.4)
    _obj(3, "table", (4.0, 3.0, 0.0), (5.2, 3.8, 0.75)),    # centre (4.6, 3.4, 0.375)
    _obj(4, "lamp", (3.0, 0.2, 0.0), (3.4, 0.6, 1.6)),      # centre (3.2, 0.4, 0.8)
])
HAND_HEIGHT = {"sofa": "0.8", "table": "0.8", "lamp": "1.6"}  # table 0.75: exactly half, to even
HAND_LONGEST = {"sofa": "2.0", "table": "1.2", "lamp": "1.6"}
HAND_DISTANCE = {  # |centre a - centre b|, one decimal
    frozenset({"sofa", "table"}): np.sqrt(3.1 ** 2 + 0.55 ** 2 + 0.025 ** 2),
    frozenset({"sofa", "lamp"}): np.sqrt(1.7 ** 2 + 3.55 ** 2 + 0.4 ** 2),
    frozenset({"table", "lamp"}): np.sqrt(1.4 ** 2 + 3.0 ** 2 + 0.425 ** 2),
}
# Standing at the first facing the second: which side the third is on (z up, counter-clockwise = left).
HAND_SIDE = {("sofa", "table", "lamp"): "right", ("table", "sofa", "lamp"): "left",
             ("lamp", "sofa", "table"): "right", ("sofa", "lamp", "table"): "left",
             ("lamp", "table", "sofa"): "left", ("table", "lamp", "sofa"): "right"}


def _records(task: str):
    records = generate_records(LAYOUT, "s", "val", np.random.default_rng(0))
    return [r for r in records if r.task == task]


def test_object_size_by_category_only_for_unique_categories():
    recs = _records("object_size")
    assert len(recs) == 2 * 3  # height and longest side of sofa, table, lamp; no chair
    for r in recs:
        assert OBJ_PLACEHOLDER not in r.question and "chair" not in r.question
        category = LAYOUT.objects[r.target_ids[0]].category
        assert f"the {category} " in r.question
        expected = HAND_HEIGHT if r.question_type == "height" else HAND_LONGEST
        assert r.answers == [expected[category]], r.question


def test_distance_by_category_only_for_unique_categories():
    recs = _records("distance")
    assert {frozenset(LAYOUT.objects[i].category for i in r.target_ids) for r in recs} == set(HAND_DISTANCE)
    for r in recs:
        a, b = (LAYOUT.objects[i].category for i in r.target_ids)
        assert r.question == f"How far apart are the {a} and the {b} in meters?"
        assert r.target_names == [a, b]  # the question's words for its objects, in target order
        assert float(r.answers[0]) == round(float(HAND_DISTANCE[frozenset({a, b})]), 1)


def test_relative_direction_by_category_only_for_unique_categories():
    recs = _records("relative_direction")
    assert len(recs) >= 2
    for r in recs:
        a, b, c = (LAYOUT.objects[i].category for i in r.target_ids)
        assert r.question == f"Standing at the {a} facing the {b}, is the {c} to the left or to the right?"
        assert r.target_names == [a, b, c]
        assert r.answers == [HAND_SIDE[(a, b, c)]] and r.choices == ["left", "right"]


def test_category_named_questions_are_asked_when_the_segmenter_missed_the_object():
    from trainer.examples import record_example

    # The segmenter found the sofa and both chairs (merged into one segment), not the table or the lamp.
    segments = [{"id": 0, "label": 5, "instance_id": 2, "category": "sofa"},
                {"id": 1, "label": 6, "instance_id": 0, "category": "chair"}]
    for task in ("object_size", "distance", "relative_direction"):
        for rec in _records(task):
            asked = record_example(rec, segments, num_obj_tokens=8, with_answer=False)
            assert asked is not None and asked.question.startswith(rec.question), rec.id


def test_target_names_are_one_per_target():
    """A record's target_names name each target once, in order, or are absent."""
    import pytest

    from schemas.record import Record

    base = dict(id="r", scene_id="s", task="distance", source="toy", question="How far apart?",
                answers=["1.0"], answer_type="number", target_ids=[2, 3])
    assert Record(**base).target_names == []
    assert Record(**base, target_names=["sofa", "table"]).target_names == ["sofa", "table"]
    with pytest.raises(ValueError, match="target_names names 1 objects but target_ids has 2"):
        Record(**base, target_names=["sofa"])
