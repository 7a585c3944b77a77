"""benchmarks/position_readout.py: the held-out position readout of a checkpoint asks every object
alone in its category of the held-out scenes, and reads "x y z" answers as east / north."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.position_readout import held_out_scenes, readout, stated_xy  # noqa: E402
from tests.synthetic_shards import untrained_model  # noqa: E402
from trainer.shard_reader import iter_scenes  # noqa: E402


def test_stated_xy_reads_the_first_two_numbers_or_nothing():
    assert stated_xy("2.6 5.4 0.4") == (2.6, 5.4)
    assert stated_xy("0.0 -1.5") == (0.0, -1.5)
    assert stated_xy("2.6") is None and stated_xy("") is None and stated_xy("bed 2.6 5.4") is None


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
    stated, truth, asked = readout(str(folder), str(shards), scenes)
    assert asked == expected
    assert stated.shape == truth.shape and stated.shape[1] == 2 and len(stated) <= asked
