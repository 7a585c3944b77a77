"""Identifier renaming during training: the same objects, new names, in scene tokens and text alike."""

import random

import numpy as np

from trainer.rank_stream import permute_identifiers
from trainer.objects import object_ids_in_text
from trainer.examples import Example


def _scene():
    ident = np.array([0, 0, 1, 2, 2, 2, -1, 3], dtype=np.int64)
    examples = [Example("s", "object_name", "What is <OBJ001>?", "chair"),
                Example("s", "grounding", "Find the table.", "<OBJ002>"),
                Example("s", "distance", "How far is <OBJ003> from <OBJ000>?", "1.5")]
    return examples, {"ident": ident, "xyz": np.zeros((8, 3), np.float32)}


def test_renaming_keeps_every_reference_on_the_same_tokens():
    examples, inputs = _scene()
    for seed in range(20):
        renamed = permute_identifiers(examples, inputs, 64, random.Random(seed))
        new_ident = renamed[0][1]["ident"]
        assert (new_ident[inputs["ident"] < 0] == -1).all()
        # A bijection: distinct objects keep distinct names, within the identifier table.
        for old in range(4):
            names = set(new_ident[inputs["ident"] == old].tolist())
            assert len(names) == 1 and 0 <= names.pop() < 64
        # Names stay dense: the 4 objects are renamed among 0..3, not spread over the table.
        assert set(new_ident[new_ident >= 0].tolist()) == {0, 1, 2, 3}
        for (old_ex, (new_ex, _)) in zip(examples, renamed):
            old_ids = object_ids_in_text(old_ex.question + old_ex.answer)
            new_ids = object_ids_in_text(new_ex.question + new_ex.answer)
            assert len(old_ids) == len(new_ids)
            for o, n in zip(old_ids, new_ids):
                np.testing.assert_array_equal(inputs["ident"] == o, new_ident == n)
            assert new_ex.answer == old_ex.answer or object_ids_in_text(new_ex.answer)


def test_renaming_is_seeded_and_varies_between_seeds():
    examples, inputs = _scene()
    a = permute_identifiers(examples, inputs, 64, random.Random(1))
    b = permute_identifiers(examples, inputs, 64, random.Random(1))
    c = permute_identifiers(examples, inputs, 64, random.Random(2))
    np.testing.assert_array_equal(a[0][1]["ident"], b[0][1]["ident"])
    assert [e.question for e, _ in a] == [e.question for e, _ in b]
    assert not np.array_equal(a[0][1]["ident"], c[0][1]["ident"])


def test_renamed_object_lists_stay_in_identifier_order():
    # Object lists are written in identifier order; after renaming they must be again, or the first
    # token of a several-object answer would be a coin toss the model cannot learn.
    examples, inputs = _scene()
    examples = [Example("s", "multi_grounding", "Find all chairs.", "<OBJ000> <OBJ002> <OBJ003>"),
                Example("s", "relative_size", "Which is larger, <OBJ003> or <OBJ001>?", "<OBJ003>")]
    orders = set()
    for seed in range(30):
        (multi, scene), (single, _) = permute_identifiers(examples, inputs, 64, random.Random(seed))
        named = [int(t) for t in multi.answer.replace("<OBJ", " ").replace(">", " ").split()]
        assert named == sorted(named) and multi.answer.count("<OBJ") == 3
        expected = {int(scene["ident"][inputs["ident"] == old][0]) for old in (0, 2, 3)}
        assert set(named) == expected
        # A question keeps its own order (it is not a list): the answer names its first object.
        assert object_ids_in_text(single.answer) == object_ids_in_text(single.question)[:1]
        orders.add(tuple(object_ids_in_text(single.question)))
    assert len(orders) > 1


def test_a_listed_count_is_renamed_sorted_and_keeps_its_count():
    examples, inputs = _scene()
    examples = [Example("s", "counting", "How many chairs are in the room?", "<OBJ000> <OBJ002> <OBJ003>: 3"),
                Example("s", "counting", "How many lamps are in the room?", "none: 0")]
    for seed in range(30):
        (listed, scene), (none, _) = permute_identifiers(examples, inputs, 64, random.Random(seed))
        objects, count = listed.answer.split(": ")
        named = object_ids_in_text(objects)
        assert count == "3" and named == sorted(named) and len(named) == 3
        assert set(named) == {int(scene["ident"][inputs["ident"] == old][0]) for old in (0, 2, 3)}
        assert none.answer == "none: 0"


# ---------------------------------------------------------------- identifiers name instance segments
def _instance(label: int) -> int | None:
    """The ground-truth instance matched to a segment: unrelated to its label, as with SAM 2."""
    return None if label < 0 else 1000 - 7 * label


def _segments(labels):
    return [{"id": i, "label": lab, "instance_id": _instance(lab), "match_iou": None if lab < 0 else 0.9,
             "category": "chair" if lab >= 0 else None,
             "box": {"center": [float(i), 0.0, 0.5], "size": [1.0, 1.0, 1.0]}} for i, lab in enumerate(labels)]


def test_identifiers_are_dense_in_bfs_order_and_skip_background():
    from trainer.objects import identifier_array, segment_identifiers

    rng = np.random.default_rng(0)
    for _ in range(50):
        labels = [int(x) for x in rng.choice([-1, 1, 2, 3, 4, 5, 6, 7], size=int(rng.integers(1, 30)))]
        m = int(rng.integers(1, 8))
        ident = segment_identifiers(_segments(labels), m)
        instance_segments = [i for i, lab in enumerate(labels) if lab >= 0]
        assert list(ident) == instance_segments[:m]  # BFS order, instances only, the first M
        assert list(ident.values()) == list(range(len(ident)))  # dense: 0, 1, 2, ...
        arr = identifier_array(_segments(labels), m)
        assert arr.shape == (len(labels),)
        assert all(arr[s] == ident.get(s, -1) for s in range(len(labels)))


def test_answer_tokens_round_trip_to_the_target_instances():
    """record -> `<OBJxxx>` answer -> predict's parsing gives back exactly the record's targets."""
    from schemas.record import Record
    from trainer.predict import answer_objects
    from trainer.examples import record_example

    rng = np.random.default_rng(1)
    for _ in range(30):
        labels = [int(x) for x in rng.permutation(np.arange(-3, 12))]
        labels = [lab if lab >= 0 else -1 for lab in labels]
        segs = _segments(labels)
        targets = [int(t) for t in rng.choice([_instance(lab) for lab in labels if lab >= 0], size=3, replace=False)]
        rec = Record(id="r", scene_id="s", task="multi_grounding", source="toy", question="Find them.",
                     answer_type="objects", target_ids=targets)
        ex = record_example(rec, segs, 64)
        got = answer_objects(ex.answer, segs, True, 64)
        assert sorted(got["instance_ids"]) == sorted(targets)
        assert sorted(got["object_ids"]) == ex.meta["object_ids"]


def test_counting_by_listing_names_exactly_the_counted_objects():
    """count_by_listing: the answer lists the targets, the count after them equals the list length,
    and predict's parsing gives back the bare count and the counted instances."""
    from schemas.record import Record
    from trainer.predict import answer_objects, answer_parts
    from trainer.examples import record_example, split_listed_answer

    rng = np.random.default_rng(2)
    for _ in range(30):
        labels = [int(x) for x in rng.permutation(np.arange(-3, 12))]
        labels = [lab if lab >= 0 else -1 for lab in labels]
        segs = _segments(labels)
        k = int(rng.integers(0, 4))
        targets = [int(t) for t in rng.choice([_instance(lab) for lab in labels if lab >= 0], size=k, replace=False)]
        rec = Record(id="r", scene_id="s", task="counting", source="toy", question="How many chairs?",
                     answers=[str(k)], answer_type="number", target_ids=targets)
        assert record_example(rec, segs, 64).answer == str(k)  # off by default
        ex = record_example(rec, segs, 64, count_by_listing=True)
        assert split_listed_answer(rec.answers[0]) is None
        listed, count = split_listed_answer(ex.answer)
        assert count == str(k) and len(object_ids_in_text(listed)) == k
        assert ex.answer.startswith("none: ") == (k == 0)
        text, objects_text = answer_parts(ex.answer, "number")
        assert text == str(k)
        if k:
            assert sorted(answer_objects(objects_text, segs, False, 64)["instance_ids"]) == sorted(targets)
        # A count whose objects are unknown (no target ids) or disagree with it stays bare.
        bare = Record(id="r", scene_id="s", task="counting", source="toy", question="How many chairs?",
                      answers=[str(k + 1)], answer_type="number", target_ids=targets)
        assert record_example(bare, segs, 64, count_by_listing=True).answer == str(k + 1)


def test_answer_parts_leaves_other_answers_alone():
    from trainer.predict import answer_parts

    for text, kind in [("<OBJ003>", "objects"), ("none", "objects"), ("<OBJ001> <OBJ004>", "objects"),
                       ("2", "number"), ("<OBJ002>", "open"), ("yes: it is", "open"), ("chair", "open")]:
        assert answer_parts(text, kind) == (text, text)
    assert answer_parts("none: 0", "number") == ("0", "")
    assert answer_parts("<OBJ001> <OBJ004>: 2", "number") == ("2", "<OBJ001> <OBJ004>")


def test_the_simplified_scene_holds_only_the_matched_objects():
    """Stages 1-3 see one token per dataset object: a segmenter's unmatched masks (an identifier but
    no instance, hence no category) and background stay out; the proxies keep every identifier."""
    from trainer.shard_reader import scene_inputs

    box = {"center": [0.0, 0.0, 0.0], "size": [1.0, 1.0, 1.0]}
    segments = [
        {"id": 0, "label": 4, "instance_id": 7, "category": "chair", "box": box},
        {"id": 1, "label": 9, "instance_id": None, "category": None, "box": box},  # a wall mask
        {"id": 2, "label": -1, "instance_id": None, "category": None, "box": box},  # background
        {"id": 3, "label": 2, "instance_id": 3, "category": "lamp", "box": box},
    ]
    scene = {"scene_id": "s", "segments": segments, "segment": np.array([0, 1, 1, 2, 3], np.int32),
             "xyz": np.zeros((5, 3), np.float32), "feat": np.zeros((5, 4), np.float16)}
    fused = scene_inputs(scene, "fused", 64)
    # Identifiers number label >= 0 segments in BFS order: 0 -> 0, 1 -> 1, 3 -> 2.
    assert fused["ident"].tolist() == [0, 2] and fused["categories"] == ["chair", "lamp"]
    proxies = scene_inputs(scene, "proxy", 64)
    assert proxies["ident"].tolist() == [0, 1, 1, -1, 2]
