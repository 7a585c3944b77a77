"""Annotation records generated from a toy layout's geometry (pure: layout in, records out).

Questions are short templates so that a tiny model can learn them. An object the question names by
identifier is written as the placeholder `<OBJ>` (schemas.record.OBJ_PLACEHOLDER); the k-th
placeholder refers to `target_ids[k]`, and the trainer swaps it for that object's `<OBJxxx>` token.
Records whose answer is a set of objects (answer_type "objects") keep `answers` empty: the answer is
`target_ids` (possibly empty, meaning "none").
Numbers are short strings: counts as integers, metres with one decimal.

The spatial questions (object size, distance, relative direction) name objects by category, as
VSI-Bench (the paper's spatial benchmark) does, and only objects whose category is unique in the
room, so that the name is unambiguous: such a question is askable whatever the segmenter merged or
missed (an identifier-named one is not when its object matches no segment). Their `target_ids` still
list the objects, in the order the question names them.
The category also tells the size: the training split's mean answer per question scores held-out
object size at MRA 88.8 (the constant per question type: 43.7), as a fresh model trained on these
records does (87.5) without reading the scene; for distance (37.9), room size (74.0) and left/right
(58.7) it gives about chance, and only they measure geometry (96 toy rooms, oracle segments,
~350 steps on the simplified scene).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from pipeline.toy.layout import ToyLayout, ToyObject
from pipeline.toy.shapes import CATEGORY_BY_NAME, CATEGORY_NAMES
from schemas.record import OBJ_PLACEHOLDER as OBJ
from schemas.record import Record

SOURCE = "toy"


def _num(x: float) -> str:
    return f"{x:.1f}"


def _plural(category: str) -> str:
    return CATEGORY_BY_NAME[category].plural_name


def _size_word(o: ToyObject) -> str:
    cat = CATEGORY_BY_NAME[o.category]
    lo, hi = np.prod(cat.size_lo), np.prod(cat.size_hi)
    rel = (np.prod(o.size_3) - lo) / max(hi - lo, 1e-9)
    return "small" if rel < 0.33 else "large" if rel > 0.66 else ""


def _footprint_distance(a: ToyObject, b: ToyObject) -> float:
    """Closest distance between two boxes' floor footprints (0 when they touch or stack)."""
    gap_2 = np.maximum(0, np.maximum(a.lo_3[:2] - b.hi_3[:2], b.lo_3[:2] - a.hi_3[:2]))
    return float(np.linalg.norm(gap_2))


def nearest_other(o: ToyObject, objects: list[ToyObject]) -> ToyObject | None:
    others = [x for x in objects if x.id != o.id]
    if not others:
        return None
    return min(others, key=lambda x: (_footprint_distance(o, x), np.linalg.norm(x.center_3 - o.center_3)))


def describe(o: ToyObject, objects: list[ToyObject]) -> str:
    """A caption: size, colour, category, and where it is relative to its nearest neighbour."""
    words = " ".join(w for w in (_size_word(o), o.colour, o.category) if w)
    if o.support is not None:
        support = next(x for x in objects if x.id == o.support)
        return f"a {words} on the {support.category}"
    near = nearest_other(o, objects)
    return f"a {words} near the {near.category}" if near is not None else f"a {words}"


class _Builder:
    def __init__(self, scene_id: str, split: str | None):
        self.scene_id, self.split = scene_id, split
        self.records: list[Record] = []
        self.counter: Counter[str] = Counter()

    def add(self, task: str, question: str, answers: list[str], targets: list[ToyObject] = (),
            **extra) -> None:
        k = self.counter[task]
        self.counter[task] += 1
        self.records.append(Record(
            id=f"{self.scene_id}-{task}-{k:03d}", scene_id=self.scene_id, task=task, source=SOURCE,
            question=question, answers=answers, target_ids=[o.id for o in targets],
            target_boxes=[o.box() for o in targets], split=self.split, **extra,
        ))


def _relative_side(origin: ToyObject, facing: ToyObject, query: ToyObject) -> str | None:
    """left / right of `query` for a viewer at `origin` facing `facing`; None when ambiguous."""
    fwd_2 = facing.center_3[:2] - origin.center_3[:2]
    to_q_2 = query.center_3[:2] - origin.center_3[:2]
    if np.linalg.norm(fwd_2) < 0.3 or np.linalg.norm(to_q_2) < 0.3:
        return None
    cross = fwd_2[0] * to_q_2[1] - fwd_2[1] * to_q_2[0]
    sin_angle = cross / (np.linalg.norm(fwd_2) * np.linalg.norm(to_q_2))
    if abs(sin_angle) < 0.35:  # nearly straight ahead or behind: no clear side
        return None
    return "left" if cross > 0 else "right"  # z up, right-handed: positive cross = counter-clockwise


def generate_records(layout: ToyLayout, scene_id: str, split: str | None,
                     rng: np.random.Generator) -> list[Record]:
    """Every record of one room. Long on purpose: it is the toy annotation's list of question
    templates, one block per task in the order the tasks are documented, read top to bottom."""
    objs = layout.objects
    by_cat: dict[str, list[ToyObject]] = {}
    for o in objs:
        by_cat.setdefault(o.category, []).append(o)
    absent = [c for c in CATEGORY_NAMES if c not in by_cat]
    out = _Builder(scene_id, split)

    for o in objs:
        out.add("object_name", f"What is {OBJ}?", [o.category], [o])
        out.add("caption", f"Describe {OBJ}.", [describe(o, objs)], [o])
    # Category-named questions: only objects whose category is unique in the room.
    unique = [o for o in objs if len(by_cat[o.category]) == 1]
    for o in unique:
        out.add("object_size", f"How tall is the {o.category} in meters?", [_num(o.size_3[2])], [o],
                answer_type="number", question_type="height")
        out.add("object_size", f"How long is the longest side of the {o.category} in meters?",
                [_num(o.size_3.max())], [o], answer_type="number", question_type="longest_side")

    for cat, members in by_cat.items():
        # The counted objects are the targets, so that a trainer can name them before the count.
        out.add("counting", f"How many {_plural(cat)} are in the room?", [str(len(members))], members,
                answer_type="number")
        if len(members) == 1:
            out.add("object_id", f"Which object is the {cat}?", [], members, answer_type="objects")
            out.add("grounding", f"Find the {cat}.", [], members, answer_type="objects", unique=True)
        else:
            for o in members:
                same_colour = [m for m in members if m.colour == o.colour]
                if len(same_colour) == 1:
                    out.add("grounding", f"Find the {o.colour} {cat}.", [], [o],
                            answer_type="objects", unique=False)
        out.add("multi_grounding", f"Find all {_plural(cat)}.", [], members, answer_type="objects")
    for cat in absent[:2]:
        out.add("counting", f"How many {_plural(cat)} are in the room?", ["0"], answer_type="number")
        out.add("multi_grounding", f"Find all {_plural(cat)}.", [], [], answer_type="objects")

    pairs = [(a, b) for i, a in enumerate(unique) for b in unique[i + 1:]]
    for k in rng.permutation(len(pairs))[: max(2, len(objs))]:
        a, b = pairs[int(k)]
        dist = float(np.linalg.norm(a.center_3 - b.center_3))
        out.add("distance", f"How far apart are the {a.category} and the {b.category} in meters?",
                [_num(dist)], [a, b], answer_type="number", target_names=[a.category, b.category])

    lx, ly, lz = layout.size_3
    out.add("room_size", "What is the floor area of the room in square meters?", [_num(lx * ly)],
            answer_type="number", question_type="area")
    out.add("room_size", "How high is the ceiling in meters?", [_num(lz)], answer_type="number",
            question_type="height")

    triples = [(a, b, c) for a in unique for b in unique for c in unique if len({a.id, b.id, c.id}) == 3]
    wanted = max(2, len(objs))
    for k in rng.permutation(len(triples)):
        if out.counter["relative_direction"] >= wanted:
            break
        a, b, c = triples[int(k)]
        side = _relative_side(a, b, c)
        if side is None:
            continue
        out.add("relative_direction",
                f"Standing at the {a.category} facing the {b.category}, is the {c.category} to the left "
                "or to the right?", [side], [a, b, c], answer_type="choice", choices=["left", "right"],
                target_names=[a.category, b.category, c.category])
    return out.records
