"""`replay_tasks`: `replay_per_task` records (one by default) of each replayed task per scene and
epoch, drawn anew each epoch."""

from __future__ import annotations

import random
from collections import Counter

from schemas.record import Record
from trainer.examples import build_examples, replay_sample

# Three objects (instances 10, 11, 12 matched to segments 0, 1, 2 -> identifiers 0, 1, 2).
SEGMENTS = [{"id": i, "label": i, "instance_id": 10 + i, "category": "chair",
             "box": {"center": [i, 0, 0.5], "size": [0.5, 0.5, 1.0]}} for i in range(3)]


def _rec(task: str, k: int, targets: list[int], answer: str) -> Record:
    question = " ".join(["<OBJ>"] * len(targets)) + f" question {k}?"
    return Record(id=f"s-{task}-{k}", scene_id="s", task=task, source="toy", question=question,
                  answers=[answer], target_ids=targets, answer_type="number")


RECORDS = ([_rec("distance", k, [10, 10 + (k % 2) + 1], f"{k}.0") for k in range(4)]
           + [_rec("object_size", k, [10 + k], f"0.{k + 1}") for k in range(3)]
           + [_rec("counting", 0, [], "3")])


def test_replay_sample_one_per_task_and_varies_with_the_rng():
    drawn = [replay_sample(RECORDS, frozenset({"distance", "object_size", "room_size"}), random.Random(seed))
             for seed in range(40)]
    # one of each task the scene has (room_size: none here), in task order
    assert all([r.task for r in d] == ["distance", "object_size"] for d in drawn)
    # over epochs every distance record comes up, not always the same one
    assert {d[0].id for d in drawn} == {f"s-distance-{k}" for k in range(4)}


def test_stage4_replay_adds_one_example_per_task_beside_the_tasks():
    skipped: Counter = Counter()
    examples = build_examples(4, "s", SEGMENTS, RECORDS, 8, random.Random(0), tasks=frozenset({"counting"}),
                              replay_tasks=frozenset({"distance", "object_size"}), skipped=skipped)
    assert sorted(ex.task for ex in examples) == ["counting", "distance", "object_size"]
    distance = next(ex for ex in examples if ex.task == "distance")
    # the replayed record is a real example: its <OBJ> placeholders became the targets' identifiers
    assert distance.question.startswith("<OBJ000> <OBJ00")
    assert float(distance.answer) in {0.0, 1.0, 2.0, 3.0}
    assert not skipped
    without = build_examples(4, "s", SEGMENTS, RECORDS, 8, random.Random(0), tasks=frozenset({"counting"}))
    assert [ex.task for ex in without] == ["counting"]


def test_replay_per_task_draws_distinct_records_capped_by_what_the_scene_has():
    drawn = replay_sample(RECORDS, frozenset({"distance", "object_size", "counting"}), random.Random(0), per_task=3)
    by_task = Counter(r.task for r in drawn)
    # 3 of the 4 distance records, all 3 object_size records, the one counting record
    assert by_task == {"distance": 3, "object_size": 3, "counting": 1}
    assert len({r.id for r in drawn}) == len(drawn)  # no record twice in one epoch
    seen = {r.id for seed in range(40) for r in replay_sample(RECORDS, frozenset({"distance"}),
                                                                random.Random(seed), per_task=3)}
    assert seen == {f"s-distance-{k}" for k in range(4)}  # and another 3 of 4 each epoch
    examples = build_examples(4, "s", SEGMENTS, RECORDS, 8, random.Random(0), tasks=frozenset({"counting"}),
                              replay_tasks=frozenset({"distance"}), replay_per_task=2)
    assert sorted(ex.task for ex in examples) == ["counting", "distance", "distance"]


def test_stage4_asks_the_stage2_tasks_it_names_of_its_segments_boxes():
    """Stage 4's `tasks` may name stage 2's (`object_position`): every referenceable object's position,
    by identifier and, alone in its category, by category, answered with its segment's box centre
    (on the proxies, which stage 4 reads); only the named stage-2 task, none when not named."""
    segments = [*SEGMENTS, {"id": 3, "label": 3, "instance_id": 13, "category": "sofa",
                            "box": {"center": [2.3, -1.5, 0.4], "size": [2.0, 1.0, 0.8]}}]
    examples = build_examples(4, "s", segments, RECORDS, 8, random.Random(0),
                              tasks=frozenset({"counting", "object_position"}),
                              position_names=frozenset({"identifier", "category"}))
    where = {ex.question: ex.answer for ex in examples if ex.task == "object_position"}
    expected = {f"Where is <OBJ00{i}>?": f"{float(i):.1f} 0.0 0.5" for i in range(3)}
    expected |= {"Where is <OBJ003>?": "2.3 -1.5 0.4", "Where is the sofa?": "2.3 -1.5 0.4"}
    assert where == expected  # the chairs share a category: never asked by it
    assert Counter(ex.task for ex in examples) == {"object_position": 5, "counting": 1}
    without = build_examples(4, "s", segments, RECORDS, 8, random.Random(0), tasks=frozenset({"counting"}),
                             position_names=frozenset({"identifier", "category"}))
    assert [ex.task for ex in without] == ["counting"]
