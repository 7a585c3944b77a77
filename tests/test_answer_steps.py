"""`answer_steps`: distance and left/right answered after first-order steps, and read back after them;
`layout_rooms`: generated toy rooms in a stage's stream (`layout_tasks`: what they are asked);
`position_names`: stage 2's positions asked by identifier and by category."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest

from pipeline.toy.layout_rooms import layout_room
from trainer.examples import answer_in_steps, build_examples, final_answer, record_example
from trainer.predict import answer_parts
from trainer.shard_reader import scene_inputs

from tests.answer_steps_helpers import read_distance_steps

STEPS = frozenset({"distance", "relative_direction"})


def _toy_records(rooms: int = 12):
    for k in range(rooms):
        scene, records = layout_room(5, k)
        yield scene, records


def test_distance_steps_name_each_object_and_its_position_then_the_offsets_then_the_distance():
    # 1.6 m east and 1.0 m south, each written as (offset + 8) / 2 by hand: 4.8 and 3.5
    assert answer_in_steps("distance", [(1.0, 2.0, 0.44), (2.6, 1.0, 0.5)], "1.9", ("trash can", "<OBJ004>")) == \
        "trash can 1.0 2.0 0.4, <OBJ004> 2.6 1.0 0.5, 4.8 3.5: 1.9"
    # without the names the question gives its objects there are no steps to write
    assert answer_in_steps("distance", [(1.0, 2.0, 0.4), (2.6, 1.0, 0.5)], "1.9") is None
    seen = 0
    for scene, records in _toy_records():
        for rec in records:
            if rec.task != "distance":
                continue
            ex = record_example(rec, scene["segments"], 32, answer_steps=STEPS)
            if ex is None:
                continue
            steps = read_distance_steps(ex.answer)
            assert steps["distance"] == float(rec.answers[0])
            # the names are the question's own words for its objects, in its order
            a_name, b_name = steps["names"]
            assert a_name == rec.target_names[0] and b_name == rec.target_names[1]
            assert ex.question.index(f"the {a_name} ") < ex.question.index(f"the {b_name} ")
            a, b = (box.center for box in rec.target_boxes)
            assert steps["a"] == pytest.approx(a, abs=0.051) and steps["b"] == pytest.approx(b, abs=0.051)
            u, v = steps["offsets"]
            assert u > 0 and v > 0  # toy rooms' sides are at most 8 m: every step a positive number
            dx, dy = 2 * u - 8.0, 2 * v - 8.0  # the steps are (offset + 8) / 2, to 0.1
            assert dx == pytest.approx(b[0] - a[0], abs=0.101) and dy == pytest.approx(b[1] - a[1], abs=0.101)
            # the floor-plan offset is the distance up to the height difference
            assert np.hypot(dx, dy) <= steps["distance"] + 0.25
            seen += 1
    assert seen


def test_a_distance_in_steps_whose_record_does_not_name_its_objects_is_skipped_and_said():
    """A record that names its objects in words but gives no target_names (a converter that does not
    fill them, a toy world of an older version) cannot be answered in steps: it is no example, the
    stage tallies it as unnamed, and without steps it stays an example with the bare answer."""
    from trainer.examples import SKIP_UNNAMED, stage4_examples

    scene, records = next(_toy_records())
    distance = [r for r in records if r.task == "distance"]
    unnamed = [r.model_copy(update={"target_names": []}) for r in distance]
    assert all(record_example(r, scene["segments"], 32) is not None for r in distance)
    named = [r for r in distance if record_example(r, scene["segments"], 32, answer_steps=STEPS) is not None]
    assert named
    tally = Counter()
    assert stage4_examples("s", scene["segments"], unnamed, 32, random.Random(0), skipped=tally,
                           answer_steps=STEPS) == []
    assert tally[("distance", SKIP_UNNAMED)] == len(named)
    bare = stage4_examples("s", scene["segments"], unnamed, 32, random.Random(0))
    assert sorted(ex.answer for ex in bare) == sorted(r.answers[0] for r in distance)


def test_left_right_steps_name_where_the_faced_object_lies_the_facing_axis_the_other_axis_then_the_side():
    # the second object east and north of the first, facing mostly east (+x), the object north of
    # the viewer; then east and south of it, facing mostly south, the object west
    assert answer_in_steps("relative_direction", [(1, 1), (4, 2), (2, 3)], "left") == "east north, east north: left"
    assert answer_in_steps("relative_direction", [(1, 5), (1.5, 1), (0.2, 3)], "right") == "east south, south west: right"
    # each step first order in the positions or the steps before it: the first two are the signs of
    # the offset, the facing is the one of those two along the longer side of the offset
    rng = np.random.default_rng(3)
    for a, b, c in rng.uniform(0, 8, size=(200, 3, 2)):
        where, facing_across = answer_in_steps("relative_direction", [a, b, c], "left").split(": ")[0].split(", ")
        east_west, north_south = where.split()
        assert east_west == ("east" if b[0] > a[0] else "west") and north_south == ("north" if b[1] > a[1] else "south")
        facing, across = facing_across.split()
        longer = 0 if abs(b[0] - a[0]) >= abs(b[1] - a[1]) else 1
        assert facing == (east_west, north_south)[longer]
        assert across == (("north" if c[1] > a[1] else "south"), ("east" if c[0] > a[0] else "west"))[longer]
    # a viewer facing north with the object west of it has it on its left (z up, seen from above):
    # the annotation's sides follow that rule except near straight ahead or behind
    ccw = {("north", "west"), ("west", "south"), ("south", "east"), ("east", "north")}
    agree = []
    for scene, records in _toy_records(30):
        for rec in records:
            if rec.task == "relative_direction":
                steps, side = record_example(rec, scene["segments"], 32, answer_steps=STEPS).answer.split(": ")
                assert side == rec.answers[0]
                agree.append((tuple(steps.split(", ")[1].split()) in ccw) == (side == "left"))
    assert len(agree) > 50 and np.mean(agree) > 0.85
    # other answers of the task are left alone
    assert answer_in_steps("relative_direction", [(0, 0), (1, 0)], "yes") is None
    assert answer_in_steps("relative_direction", [(0, 0), (1, 0), (0, 1)], "behind") is None


def test_answers_in_steps_read_back_to_the_records_answers_and_other_tasks_are_unchanged():
    for scene, records in _toy_records():
        for rec in records:
            plain = record_example(rec, scene["segments"], 32)
            stepped = record_example(rec, scene["segments"], 32, answer_steps=STEPS)
            if plain is None:
                assert stepped is None
                continue
            assert stepped.question == plain.question
            if rec.task in STEPS:
                assert stepped.answer != plain.answer
                answer, objects = answer_parts(stepped.answer, rec.answer_type)
                assert answer == rec.answers[0] and objects == ""
            else:
                assert stepped.answer == plain.answer
    # an answer without steps, or an open answer with a colon, reads as itself
    assert answer_parts("2.4", "number") == ("2.4", "2.4")
    assert answer_parts("yes: it is", "open") == ("yes: it is", "yes: it is")
    assert final_answer("east north, north west: left") == "left" and final_answer("left") == "left"


def test_a_prediction_scores_the_answer_after_the_steps_and_keeps_the_steps_beside_it():
    """`p3d predict` writes the answer after the steps as the prediction's text (what `p3d eval`
    scores) and the whole generated text beside it; a bare answer carries no second copy."""
    from pipeline.eval.metrics import mean_relative_accuracy
    from trainer.predict import prediction_of

    seen = Counter()
    for scene, records in _toy_records():
        for rec in records:
            stepped = record_example(rec, scene["segments"], 32, answer_steps=STEPS)
            if rec.task not in STEPS or stepped is None:
                continue
            pred = prediction_of(rec, scene["segments"], stepped.answer, 32)
            assert pred.text == rec.answers[0] and pred.generated == stepped.answer
            assert pred.generated.endswith(": " + pred.text) and len(pred.generated) > len(pred.text) + 2
            bare = prediction_of(rec, scene["segments"], rec.answers[0], 32)
            assert bare.text == rec.answers[0] and bare.generated is None
            seen[rec.task] += 1
    assert seen["distance"] and seen["relative_direction"]
    # a wrong distance after right-looking steps is scored on the distance, not the steps
    rec = next(r for _, recs in _toy_records() for r in recs if r.task == "distance")
    truth = float(rec.answers[0])
    pred = prediction_of(rec, [], f"{truth:.1f} 0.0: {2 * truth:.1f}", 32)
    assert pred.text == f"{2 * truth:.1f}"
    assert mean_relative_accuracy(float(pred.text), truth) < 0.5


def test_stage3_replays_the_stage2_tasks_it_names_and_nothing_else_changes():
    """Stage 3 with `object_position` in its tasks asks where each object is (the box centre), beside
    its own tasks; a stage 3 that names no stage-2 task draws exactly the examples of its unfiltered
    stream (no replay drawn from the same random state), and STAGE2_TASKS are stage 2's tasks."""
    from trainer.examples import STAGE2_TASKS, stage2_examples

    own = frozenset({"distance", "relative_size", "object_name"})
    for scene, _ in _toy_records(6):
        segs = scene["segments"]
        assert {ex.task for ex in stage2_examples("s", segs, 32, random.Random(0))} == STAGE2_TASKS
        plain = build_examples(3, scene["scene_id"], segs, [], 32, random.Random(1), tasks=own)
        unfiltered = build_examples(3, scene["scene_id"], segs, [], 32, random.Random(1))
        assert plain and plain == [ex for ex in unfiltered if ex.task in own]
        both = build_examples(3, scene["scene_id"], segs, [], 32, random.Random(1),
                              tasks=own | {"object_position"})
        positions = [ex for ex in both if ex.task == "object_position"]
        assert len(positions) == len(segs)
        centres = {f"{s['box']['center'][0]:.1f} {s['box']['center'][1]:.1f}" for s in segs}
        assert {" ".join(ex.answer.split()[:2]) for ex in positions} == centres
        assert Counter(ex.task for ex in both if ex.task in own) == Counter(ex.task for ex in plain)
        assert "object_size" not in {ex.task for ex in both}


def test_stage3_distance_by_identifier_is_in_steps_on_the_segments_centres():
    scene, records = layout_room(5, 3)
    examples = build_examples(3, scene["scene_id"], scene["segments"], records, 32, random.Random(0),
                              tasks=frozenset({"distance"}), answer_steps=STEPS)
    centre_of = {k: s["box"]["center"] for k, s in enumerate(scene["segments"])}  # identifiers = segment ids here
    assert examples
    for ex in examples:
        a, b = (int(t) for t in ex.question.split("<OBJ")[1:3] for t in [t[:3]])
        steps = read_distance_steps(ex.answer)
        assert steps["names"] == (f"<OBJ{a:03d}>", f"<OBJ{b:03d}>")  # named as the question names them
        assert steps["a"] == pytest.approx(centre_of[a], abs=0.051) and steps["b"] == pytest.approx(centre_of[b], abs=0.051)
        u, v = steps["offsets"]  # (offset + 8) / 2, to 0.1
        assert u == pytest.approx((centre_of[b][0] - centre_of[a][0] + 8) / 2, abs=0.051)
        assert v == pytest.approx((centre_of[b][1] - centre_of[a][1] + 8) / 2, abs=0.051)
        assert steps["distance"] == pytest.approx(np.linalg.norm(np.subtract(centre_of[a], centre_of[b])), abs=0.051)
    plain = build_examples(3, scene["scene_id"], scene["segments"], records, 32, random.Random(0),
                           tasks=frozenset({"distance"}))
    assert all(": " not in ex.answer for ex in plain)


def test_layout_rooms_are_seeded_matched_scenes_with_their_own_records():
    scene, records = layout_room(0, 7)
    again, records_again = layout_room(0, 7)
    assert scene == again and [r.model_dump() for r in records] == [r.model_dump() for r in records_again]
    assert layout_room(1, 7)[0] != scene and layout_room(0, 8)[0] != scene
    assert all(r.scene_id == scene["scene_id"] and r.split == "train" for r in records)
    # every target of every record is a segment's instance, at that segment's box
    box_of_instance = {s["instance_id"]: s["box"] for s in scene["segments"]}
    for rec in records:
        for target, box in zip(rec.target_ids, rec.target_boxes):
            assert box_of_instance[target]["center"] == pytest.approx(box.center)
    # the simplified scene holds one token per object, at its box centre, named by its identifier
    inputs = scene_inputs(scene, "fused", 32)
    assert len(inputs["xyz"]) == len(scene["segments"])
    np.testing.assert_allclose(inputs["xyz"], [s["box"]["center"] for s in scene["segments"]], atol=1e-6)
    assert inputs["categories"] == [s["category"] for s in scene["segments"]]


def test_layout_rooms_are_not_the_toy_worlds_rooms():
    from pipeline.toy.layout import sample_layout
    from pipeline.toy.world import MAX_ATTEMPTS

    for index in range(4):
        ours = [s["box"]["center"] for s in layout_room(0, index)[0]["segments"]]
        for attempt in range(MAX_ATTEMPTS):
            world = [o.box().center for o in sample_layout(np.random.default_rng([0, index, attempt])).objects]
            assert ours != world


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from tests.synthetic_shards import write_synthetic

    from schemas.record import load_records

    shard_dir, records_path = write_synthetic(tmp_path_factory.mktemp("shards"), num_scenes=6, dim=16)
    records_by_scene: dict = {}
    for rec in load_records(records_path):
        records_by_scene.setdefault(rec.scene_id, []).append(rec)
    return shard_dir, records_by_scene


def _stream(shards, **kw):
    from trainer.rank_stream import StageStream

    shard_dir, records_by_scene = shards
    return StageStream(shard_dir, 3, records_by_scene, 32, 4, seed=3, **kw)


def test_stream_adds_every_generated_room_once_per_epoch_split_across_ranks(shards):
    without = Counter(ex.scene_id for ex, _ in _stream(shards).items(0))
    with_rooms = Counter(ex.scene_id for ex, _ in _stream(shards, layout_rooms=10).items(0))
    rooms = {s: n for s, n in with_rooms.items() if s not in without}
    assert sorted(rooms) == [f"layout{k:06d}" for k in range(10)]
    assert {s: n for s, n in with_rooms.items() if s in without} == without  # the shards' scenes as before
    for k in range(10):  # each room's stage-3 examples, with its own records
        scene, records = layout_room(3, k)
        expected = build_examples(3, scene["scene_id"], scene["segments"], records, 32,
                                  random.Random(f"3-0-{scene['scene_id']}"))
        assert rooms[scene["scene_id"]] == len(expected)
    # two ranks: disjoint rooms, all of them together
    by_rank = [{ex.scene_id for ex, _ in _stream(shards, layout_rooms=10, rank=r, world_size=2).items(0)
                if ex.scene_id.startswith("layout")} for r in range(2)]
    assert not by_rank[0] & by_rank[1] and by_rank[0] | by_rank[1] == set(rooms)
    # the order is a pure function of (seed, epoch, rank), and the rooms are spread among the scenes
    order = [ex.scene_id for ex, _ in _stream(shards, layout_rooms=10).items(1)]
    assert order == [ex.scene_id for ex, _ in _stream(shards, layout_rooms=10).items(1)]
    assert order != [ex.scene_id for ex, _ in _stream(shards, layout_rooms=10).items(0)]


def test_stage4_puts_generated_rooms_as_simplified_scenes_in_batches_of_their_own(shards):
    """Stage 4 with `layout_rooms`: each generated room gives its examples of `layout_tasks` only (here
    the spatial replays, not object size's, nor the stage's referencing tasks), on its simplified
    scene (no features); the shards' scenes give what they gave without rooms; every batch holds one
    form of scene, and an epoch is as many batches as the stream says."""
    from trainer.rank_stream import StageStream
    from trainer.shard_reader import Collator

    shard_dir, records_by_scene = shards
    spatial = ["distance", "relative_direction", "room_size"]
    kw = dict(seed=3, tasks=["object_name", "grounding"], replay_tasks=spatial + ["object_size"],
              replay_per_task=2)
    plain = StageStream(shard_dir, 4, records_by_scene, 32, 4, **kw)
    mixed = StageStream(shard_dir, 4, records_by_scene, 32, 4, layout_rooms=6, layout_tasks=spatial, **kw)
    items = list(mixed.items(0))
    generated = [(ex, inputs) for ex, inputs in items if ex.scene_id.startswith("layout")]
    assert {ex.scene_id for ex, _ in generated} == {f"layout{k:06d}" for k in range(6)}
    assert {ex.task for ex, _ in generated} == set(spatial)
    assert all(inputs["feat"] is None and inputs["categories"] for _, inputs in generated)
    assert all(inputs["feat"] is not None for ex, inputs in items if not ex.scene_id.startswith("layout"))
    def asked_of(pairs):
        return sorted((ex.scene_id, ex.task, ex.question, ex.answer) for ex, _ in pairs
                      if not ex.scene_id.startswith("layout"))

    assert asked_of(items) == asked_of(plain.items(0))
    for k in range(6):  # two of each spatial task per room, as the replay draws them
        scene, records = layout_room(3, k)
        asked = Counter(ex.task for ex, _ in generated if ex.scene_id == scene["scene_id"])
        assert asked == +Counter({t: min(2, sum(r.task == t for r in records)) for t in spatial})
    per_epoch = mixed.local_batches_per_epoch()
    batches = list(mixed.batches(0, per_epoch))
    assert per_epoch == math.ceil(len(generated) / 4) + math.ceil((len(items) - len(generated)) / 4)
    assert len(batches) == per_epoch and sum(map(len, batches)) == len(items)
    assert all(len({inputs["feat"] is None for _, inputs in b}) == 1 for b in batches)
    a_proxy_item = next(item for item in items if not item[0].scene_id.startswith("layout"))
    with pytest.raises(ValueError, match="mixes simplified scenes and proxies"):
        Collator(None, None, None)([generated[0], a_proxy_item])


def test_stage3_keeps_the_layout_tasks_of_generated_rooms_and_all_of_the_shards(shards):
    from trainer.rank_stream import StageStream

    shard_dir, records_by_scene = shards
    kw = dict(seed=3, tasks=["object_position", "object_name"], record_tasks=["relative_direction"])
    plain = StageStream(shard_dir, 3, records_by_scene, 32, 4, **kw)
    stream = StageStream(shard_dir, 3, records_by_scene, 32, 4, layout_rooms=4,
                         layout_tasks=["object_position", "relative_direction"], **kw)
    items = list(stream.items(0))
    shard_tasks = Counter(ex.task for ex, _ in items if not ex.scene_id.startswith("layout"))
    assert shard_tasks == Counter(ex.task for ex, _ in plain.items(0)) and shard_tasks["object_name"] > 0
    for k in range(4):  # each room: positions, stage 3's own height questions and the left/right records
        scene, records = layout_room(3, k)
        asked = Counter(ex.task for ex, _ in items if ex.scene_id == scene["scene_id"])
        everything = build_examples(3, scene["scene_id"], scene["segments"], records, 32,
                                    random.Random(f"3-0-{scene['scene_id']}"), tasks=frozenset(kw["tasks"]),
                                    record_tasks=frozenset(kw["record_tasks"]))
        assert asked == Counter(ex.task for ex in everything if ex.task != "object_name")
        assert asked["object_position"] == len(scene["segments"]) and asked["relative_direction"] > 0


def test_layout_per_task_caps_the_named_tasks_of_each_room_drawn_anew_each_epoch(shards):
    """`layout_per_task`: each generated room gives at most N examples of a named task, drawn from
    what it gave without the cap, another draw each epoch; the tasks it does not name keep all of
    theirs, as do the shards' scenes; an epoch's batches count the capped examples."""
    kw = dict(tasks=["object_position", "object_name"], record_tasks=["relative_direction"], layout_rooms=4)
    full, capped = _stream(shards, **kw), _stream(shards, layout_per_task={"object_position": 1}, **kw)

    def asked(items, room: bool):
        return Counter((ex.scene_id, ex.task, ex.question, ex.answer) for ex, _ in items
                       if ex.scene_id.startswith("layout") == room)

    kept_positions = []
    for epoch in (0, 1):
        everything, kept = list(full.items(epoch)), list(capped.items(epoch))
        assert asked(kept, room=False) == asked(everything, room=False)
        assert not asked(kept, room=True) - asked(everything, room=True)  # a subset of the rooms' own
        for k in range(4):
            room = f"layout{k:06d}"
            gave = Counter(ex.task for ex, _ in everything if ex.scene_id == room)
            assert gave["object_position"] > 1 and gave["relative_direction"] > 1
            assert Counter(ex.task for ex, _ in kept if ex.scene_id == room) == {**gave, "object_position": 1}
        kept_positions.append({(ex.scene_id, ex.question) for ex, _ in kept if ex.task == "object_position"})
        assert capped.local_batches_per_epoch() == math.ceil(len(kept) / 4)
    assert kept_positions[0] != kept_positions[1]


def test_sample_per_task_caps_every_task_or_the_named_ones():
    """One cap draws that many of every task (all of a task with fewer); a mapping draws its tasks'
    caps and keeps the others whole; what is drawn is always the task's own items."""
    from trainer.examples import Example, sample_per_task

    items = [Example("s", task, f"q{k}", "a") for task, n in (("a", 5), ("b", 3), ("c", 1)) for k in range(n)]
    one = Counter(ex.task for ex in sample_per_task(items, random.Random(0), 2))
    assert one == {"a": 2, "b": 2, "c": 1}
    drawn = sample_per_task(items, random.Random(0), {"a": 1, "c": 4})
    assert Counter(ex.task for ex in drawn) == {"a": 1, "b": 3, "c": 1}
    assert all(ex in items for ex in drawn) and len(set(map(id, drawn))) == len(drawn)


def test_position_by_category_names_each_object_whose_category_is_unique_in_the_scene():
    """`position_names` with "category" adds "Where is the sofa?" for every object alone in its
    category, answered with that object's box centre; identifiers stay as they were, and shared
    categories are never asked (the question would not say which)."""
    from trainer.examples import stage2_examples

    segs = [{"id": k, "label": k, "category": cat, "instance_id": k,
             "box": {"center": [float(k), 2.0 * k, 0.5], "size": [1.0, 1.0, 1.0]}}
            for k, cat in enumerate(["sofa", "chair", "chair", "table"])]
    where = {f"Where is <OBJ00{k}>?": f"{float(k):.1f} {2.0 * k:.1f} 0.5" for k in range(4)}
    where_cat = {"Where is the sofa?": "0.0 0.0 0.5", "Where is the table?": "3.0 6.0 0.5"}

    def asked(names):
        examples = stage2_examples("s", segs, 32, random.Random(0), frozenset(names))
        return {ex.question: ex.answer for ex in examples if ex.task == "object_position"}

    assert asked({"identifier"}) == where
    assert asked({"category"}) == where_cat
    assert asked({"identifier", "category"}) == where | where_cat
    # On generated rooms: one category question per object alone in its category, none for shared ones.
    for scene, _ in _toy_records(6):
        cats = Counter(s["category"] for s in scene["segments"])
        got = [ex.question for ex in build_examples(2, scene["scene_id"], scene["segments"], [], 32,
                                                    random.Random(1), tasks=frozenset({"object_position"}),
                                                    position_names=frozenset({"category"}))]
        assert sorted(got) == sorted(f"Where is the {c}?" for c, n in cats.items() if n == 1)


def test_layout_per_task_must_cap_a_task_the_generated_rooms_are_asked():
    """A cap on a task that layout_tasks leaves out would cap nothing: the workflow is refused."""
    from pydantic import ValidationError

    from schemas.config_train import StageConfig

    base = dict(stage=3, trainable=["language_model"], layout_rooms=10, layout_tasks=["object_position", "distance"])
    assert StageConfig(**base, layout_per_task={"object_position": 2}).layout_per_task == {"object_position": 2}
    with pytest.raises(ValidationError, match="object_id"):
        StageConfig(**base, layout_per_task={"object_id": 2})
    with pytest.raises(ValidationError):
        StageConfig(**base, layout_per_task={"object_position": 0})


def test_stage1_asks_generated_rooms_naming_both_ways_under_fresh_identifiers(shards):
    """Stage 1 with `layout_rooms` (the toy recipe, docs/RESULTS.md#stage1-generated-rooms): each
    generated room is asked the name of one object and the objects of one category per epoch
    (`layout_per_task`), on its simplified scene with identifiers renamed; the renamed question and
    answer still point at the token they named before renaming, so the lookup is learnable and never
    memorizable; another epoch asks other objects."""
    from trainer.objects import OBJ_TOKEN_RE
    from trainer.rank_stream import StageStream

    shard_dir, records_by_scene = shards
    kw = dict(seed=3, tasks=["object_name", "object_id"], shuffle_identifiers=True)
    stream = StageStream(shard_dir, 1, records_by_scene, 32, 4, layout_rooms=5,
                         layout_tasks=["object_name", "object_id"],
                         layout_per_task={"object_name": 1, "object_id": 1}, **kw)
    items = [(ex, inputs) for ex, inputs in stream.items(0) if ex.scene_id.startswith("layout")]
    later = [(ex, inputs) for ex, inputs in stream.items(1) if ex.scene_id.startswith("layout")]
    renamed_somewhere = False
    for k in range(5):
        scene, _ = layout_room(3, k)
        room = [(ex, inputs) for ex, inputs in items if ex.scene_id == scene["scene_id"]]
        categories = [s["category"] for s in scene["segments"]]
        assert Counter(ex.task for ex, _ in room) == {"object_name": 1, "object_id": 1}
        for ex, inputs in room + [item for item in later if item[0].scene_id == scene["scene_id"]]:
            assert inputs["feat"] is None and sorted(inputs["categories"]) == sorted(categories)
            category_of = dict(zip(inputs["ident"].tolist(), inputs["categories"]))
            if ex.task == "object_name":  # "What is <OBJk>?" -> the category of the token named k
                (named,) = [int(n) for n in OBJ_TOKEN_RE.findall(ex.question)]
                assert ex.answer == category_of[named]
            else:  # "Which object is the sofa?" -> every token of that category, by its identifier
                asked = ex.question.removeprefix("Which object is the ").removesuffix("?")
                answered = sorted(int(n) for n in OBJ_TOKEN_RE.findall(ex.answer))
                assert answered == sorted(i for i, c in category_of.items() if c == asked)
        original = scene_inputs(scene, "fused", 32)["ident"].tolist()  # the names before renaming
        renamed_somewhere |= any(inputs["ident"].tolist() != original for _, inputs in room)
    assert renamed_somewhere
    # the examples asked of a room differ between epochs (the per-task draw and the renaming)
    assert [(ex.question, ex.answer) for ex, _ in items] != [(ex.question, ex.answer) for ex, _ in later]
