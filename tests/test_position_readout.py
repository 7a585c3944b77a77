"""benchmarks/position_readout.py: the held-out position readout of a checkpoint asks every object
alone in its category of the held-out scenes, reads "x y z" answers, and answers the distance records
from those positions."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.position_readout import Readout, distances_from_positions, held_out_scenes, readout, stated_xyz  # noqa: E402
from schemas.record import Record  # noqa: E402
from tests.synthetic_shards import untrained_model  # noqa: E402
from trainer.shard_reader import iter_scenes  # noqa: E402


def test_stated_xyz_reads_the_first_three_numbers_or_nothing():
    assert stated_xyz("2.6 5.4 0.4") == (2.6, 5.4, 0.4)
    assert stated_xyz("0.0 -1.5 2 7") == (0.0, -1.5, 2.0)
    assert stated_xyz("2.6 5.4") is None and stated_xyz("") is None and stated_xyz("bed 2.6 5.4 1") is None


def test_readout_asks_each_held_out_object_alone_in_its_category(tmp_path):
    folder, _, shards, records = untrained_model(tmp_path, ["Where is the chair? 0 1 2 3 4 5 6 7 8 9 ."],
                                                 num_scenes=6)
    scenes = held_out_scenes(records, "val")
    assert scenes == {"scene0002", "scene0005"}  # synthetic_shards puts every third scene in val
    expected = 0
    for scene in iter_scenes(shards, shuffle=False):
        if scene["scene_id"] in scenes:
            per_category = Counter(s["category"] for s in scene["segments"] if s.get("category"))
            expected += sum(n == 1 for n in per_category.values())
    assert expected > 0
    read = readout(str(folder), str(shards), scenes)
    assert read.asked == expected
    assert read.stated.shape == read.truth.shape and read.stated.shape[1] == 3 and len(read.stated) <= read.asked
    assert set(read.segments) == scenes
    for row, ((scene_id, segment), xyz) in enumerate(read.where.items()):
        asked_of = next(s for s in read.segments[scene_id] if s["id"] == segment)
        assert xyz.shape == (3,) and np.array_equal(read.stated[row], xyz)
        assert np.allclose(read.truth[row], asked_of["box"]["center"])


def _distance(rec_id: str, targets: list[int], answer: str = "2.0") -> Record:
    return Record(id=rec_id, scene_id="s0", task="distance", source="toy", question="How far?",
                  answers=[answer], answer_type="number", target_ids=targets, split="val")


def test_distances_from_positions_relate_records_to_segments_through_the_matching():
    # Segment ids differ from instance ids: instance 7 -> segment 1, 8 -> 3, 9 -> 4; 5 matched nothing.
    segments = [{"id": 1, "instance_id": 7}, {"id": 2, "instance_id": None},
                {"id": 3, "instance_id": 8}, {"id": 4, "instance_id": 9}]
    where = {("s0", 1): np.array([1.0, 2.0, 0.5]), ("s0", 3): np.array([4.0, 6.0, 0.5]),
             ("s0", 4): np.array([1.0, 2.0, 2.5])}  # segment 2 (no instance) is never asked of
    read = Readout(3, where, {"s0": segments})
    records = {"s0": [_distance("d0", [7, 8]), _distance("d1", [9, 7]), _distance("d2", [7, 5]),
                      _distance("d3", [8]),
                      Record(id="n0", scene_id="s0", task="object_size", source="toy", question="How big?",
                             answers=["1.0"], answer_type="number", target_ids=[7, 8], split="val")],
               "s9": [_distance("d9", [7, 8])]}  # a scene the readout did not read
    kept, norms = distances_from_positions(read, records)
    assert [r.id for r in kept] == ["d0", "d1"]
    assert norms == [5.0, 2.0]  # |(3, 4, 0)| and |(0, 0, -2)|
