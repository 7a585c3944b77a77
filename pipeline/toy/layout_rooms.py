"""Toy rooms without frames: what the simplified scene of training stages 1-3 reads, for many rooms.

Stages 1-3 see a scene as one token per object (its box centre, identifier and category;
trainer/shard_reader.py: scene_inputs, mode "fused") and ask it questions from its segments and
records. None of that needs rendered frames, features or proxies, so a toy room can be generated
in milliseconds as the segments a proxy shard would hold (one per object, the ground-truth box,
matched to its own instance) plus the toy annotation's records. Spatial answers need many rooms:
on the toy world's 72 training rooms a small model memorizes where each object is instead of
learning to read positions. measured: docs/RESULTS.md#spatial-probe

Rooms are drawn from their own seed stream, `[seed, index, LAYOUT_ROOM_STREAM]`, never one the toy
world draws its scenes from (`[seed, index, attempt]`, attempt < MAX_ATTEMPTS), so none of them is a
held-out scene.
"""

from __future__ import annotations

import numpy as np

from pipeline.toy.annotate import generate_records
from pipeline.toy.layout import sample_layout
from schemas.record import Record

LAYOUT_ROOM_STREAM = 1_000_003
LAYOUT_ROOM_SPLIT = "train"


def layout_room_id(index: int) -> str:
    return f"layout{index:06d}"


def layout_room(seed: int, index: int) -> tuple[dict, list[Record]]:
    """Room `index` as ({"scene_id", "segments"}, its records); deterministic in (seed, index)."""
    scene_id = layout_room_id(index)
    rng = np.random.default_rng([seed, index, LAYOUT_ROOM_STREAM])
    layout = sample_layout(rng)
    segments = [{"id": k, "label": k, "category": o.category, "instance_id": o.id,
                 "box": o.box().model_dump()}
                for k, o in enumerate(layout.objects)]
    return {"scene_id": scene_id, "segments": segments}, generate_records(layout, scene_id, LAYOUT_ROOM_SPLIT, rng)
