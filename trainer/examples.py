"""The examples of each training stage: one scene (segments.json; for stage 4 also its records) -> examples.

Stages 1-3 use the simplified scene (one fused identifier + semantic token per object, paper 3.2)
and generate their question/answer pairs from segments.json alone; stage 4 uses the real proxies and
the annotation records. Questions are short templates and answers short strings, so that a small
model can learn them; they follow the toy world's phrasing where the tasks overlap.

Pure: dicts and records in, `Example`s out (a seeded `random.Random` decides sampling).
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from schemas.record import Record
from trainer.objects import OBJ_TOKEN_RE, instances_to_segments, obj_token, segment_identifiers

log = logging.getLogger(__name__)
OBJ_PLACEHOLDER = "<OBJ>"
NONE_ANSWER = "none"
# A counting answer that names what it counts first: "<OBJ002> <OBJ005>: 2", "none: 0".
LISTED_ANSWER_RE = re.compile(rf"(?P<objects>{OBJ_TOKEN_RE.pattern}(?: {OBJ_TOKEN_RE.pattern})*|{NONE_ANSWER}): "
                              rf"(?P<answer>.*)", re.DOTALL)
STAGE_MODES = {1: "fused", 2: "fused", 3: "fused", 4: "proxy"}


@dataclass
class Example:
    scene_id: str
    task: str
    question: str
    answer: str
    record_id: str = ""
    meta: dict = field(default_factory=dict)


# Stage 2's position questions name the object by identifier unless `train.position_names` says more.
POSITION_BY_IDENTIFIER = frozenset({"identifier"})


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def _referenceable(segments: list[dict], num_obj_tokens: int) -> list[dict]:
    """Segments with an identifier and a category, each with its identifier under "ident"."""
    ident = segment_identifiers(segments, num_obj_tokens)
    return [dict(s, ident=ident[s["id"]]) for s in segments if s["id"] in ident and s.get("category")]


def _tokens(ids) -> str:
    return " ".join(obj_token(i) for i in sorted(set(ids)))


def stage1_examples(scene_id: str, segments: list[dict], num_obj_tokens: int, rng: random.Random) -> list[Example]:
    """Naming both ways: `<OBJ012>` -> category, category -> its `<OBJxxx>` tokens."""
    objs = _referenceable(segments, num_obj_tokens)
    out = [Example(scene_id, "object_name", f"What is {obj_token(s['ident'])}?", s["category"]) for s in objs]
    by_cat: dict[str, list[int]] = defaultdict(list)
    for s in objs:
        by_cat[s["category"]].append(s["ident"])
    for cat, ids in sorted(by_cat.items()):
        out.append(Example(scene_id, "object_id", f"Which object is the {cat}?", _tokens(ids)))
    rng.shuffle(out)
    return out


def stage2_examples(scene_id: str, segments: list[dict], num_obj_tokens: int, rng: random.Random,
                    position_names: frozenset[str] = POSITION_BY_IDENTIFIER) -> list[Example]:
    """Coordinate alignment: where each object is and how big it is (metres, one decimal).

    `position_names` says how "where" names the object: by its identifier ("Where is <OBJ004>?")
    and/or by its category when no other object of the scene has it ("Where is the sofa?"), the way
    the spatial records ask. A model taught only the first reads positions by identifier and not by
    category, so it cannot start on records that name objects by category.
    measured: docs/RESULTS.md#position-by-category"""
    out = []
    objs = _referenceable(segments, num_obj_tokens)
    per_category = Counter(s["category"] for s in objs)
    for s in objs:
        tok = obj_token(s["ident"])
        cx, cy, cz = s["box"]["center"]
        sx, sy, sz = s["box"]["size"]
        where = f"{_fmt(cx)} {_fmt(cy)} {_fmt(cz)}"
        asked_of = {"segment": s["id"]}
        if "identifier" in position_names:
            out.append(Example(scene_id, "object_position", f"Where is {tok}?", where, meta=asked_of))
        if "category" in position_names and per_category[s["category"]] == 1:
            out.append(Example(scene_id, "object_position", f"Where is the {s['category']}?", where, meta=asked_of))
        out.append(Example(scene_id, "object_size", f"How big is {tok}?", f"{_fmt(sx)} {_fmt(sy)} {_fmt(sz)}"))
        out.append(Example(scene_id, "object_size", f"How tall is {tok} in meters?", _fmt(sz)))
    rng.shuffle(out)
    return out


# The tasks stage2_examples writes (a test checks them), which stage 3 may name to replay them.
STAGE2_TASKS = frozenset({"object_position", "object_size"})


def stage3_examples(scene_id: str, segments: list[dict], num_obj_tokens: int, rng: random.Random,
                    pairs_per_object: int = 3, answer_steps: frozenset[str] = frozenset()) -> list[Example]:
    """Object-object relations: distance (in steps when "distance" is in `answer_steps`), higher,
    larger, nearest."""
    objs = _referenceable(segments, num_obj_tokens)
    if len(objs) < 2:
        return []
    center_N3 = np.array([s["box"]["center"] for s in objs], float)
    volume_N = np.array([float(np.prod(s["box"]["size"])) for s in objs])
    dist_NN = np.linalg.norm(center_N3[:, None] - center_N3[None], axis=-1)
    out = []
    for i, s in enumerate(objs):
        ti = obj_token(s["ident"])
        nearest = int(np.argsort(dist_NN[i])[1])
        out.append(Example(scene_id, "relative_distance", f"Which object is closest to {ti}?",
                           obj_token(objs[nearest]["ident"])))
        others = [j for j in range(len(objs)) if j != i]
        for j in rng.sample(others, min(pairs_per_object, len(others))):
            tj = obj_token(objs[j]["ident"])
            kind = rng.randrange(3)
            if kind == 0:
                answer = _fmt(dist_NN[i, j])
                if "distance" in answer_steps:
                    answer = answer_in_steps("distance", [tuple(center_N3[i]), tuple(center_N3[j])], answer, (ti, tj))
                out.append(Example(scene_id, "distance", f"How far apart are {ti} and {tj} in meters?", answer))
            elif kind == 1:
                out.append(Example(scene_id, "relative_direction", f"Is {ti} higher than {tj}?",
                                   "yes" if center_N3[i, 2] > center_N3[j, 2] else "no"))
            else:
                out.append(Example(scene_id, "relative_size", f"Which is larger, {ti} or {tj}?",
                                   ti if volume_N[i] >= volume_N[j] else tj))
    rng.shuffle(out)
    return out


def split_listed_answer(text: str) -> tuple[str, str] | None:
    """("<OBJ002> <OBJ005>", "2") for a listed answer "<OBJ002> <OBJ005>: 2", ("", "0") for
    "none: 0", None for any other text."""
    m = LISTED_ANSWER_RE.fullmatch(text.strip())
    if m is None:
        return None
    return ("" if m["objects"] == NONE_ANSWER else m["objects"]), m["answer"].strip()


def unmatched_targets(record: Record, segments: list[dict]) -> list[int]:
    """The record's target ids that no segment of the scene was matched to (segments.json
    `instance_id`): such a record cannot be trained on, and its prediction can only miss."""
    matched = instances_to_segments(segments)
    return [t for t in record.target_ids if t not in matched]


# The offsets a distance's steps write as positive numbers (answer_in_steps): the toy world's longest
# room side (pipeline/toy/layout.py ROOM_SIDE_RANGE); a larger offset is still written, below zero.
OFFSET_SPAN_M = 8.0


def answer_in_steps(task: str, centres: list[tuple[float, ...]], answer: str,
                    names: list[str] | tuple[str, ...] = ()) -> str | None:
    """The answer after steps on the named objects' centres (x, y[, z], in the question's order), or
    None for a record these steps do not fit:

    - distance (two objects, with the `names` the question gives them): each object's name and where
      it is, as "Where is ...?" answers it, then how far the second lies east and north of the first,
      each offset written as (offset + OFFSET_SPAN_M) / 2 so that every offset up to OFFSET_SPAN_M
      either way is a positive number and 4.0 means none, then the distance:
      "sofa 1.0 2.0 0.4, table 2.2 1.6 0.4, 4.6 3.8: 1.3" (1.2 east, 0.4 south);
    - relative_direction as left/right (a viewer at the first object facing the second, the third
      queried): whether the second lies east or west, and north or south, of the first; of those
      two, the way the viewer faces most nearly (the axis of the longer offset); the third object's
      side of the viewer along the other axis; then the answer: "west north, north west: left".

    Why: a gradient step follows the part of an answer that is first order in what the model reads.
    A distance (a norm) and a side (the sign of a cross product) have none in the objects' positions,
    so a model that reads positions never starts on them; each step above is first order in the
    positions or the steps before it. measured: docs/RESULTS.md#spatial-probe
    A distance restates each object's name before its position because an offset between two objects
    the model looks up itself is two lookups in one number, of which a model learned one: with the
    offsets alone, every one of five seeds wrote an offset that left one object out. After its name,
    a position is the lookup "Where is ...?" trained, and each offset a difference of two numbers
    written just before it. measured: docs/RESULTS.md#distance-named
    Left/right names the offset's two signs before the facing because the facing alone (one of four
    directions, by the longer of two offsets) was the step that failed: with the signs written, the
    facing is a comparison of two offsets already signed. measured: docs/RESULTS.md#left-right-signs
    Offsets are shifted because a signed one is not first order: after a "-" the digits are the
    offset's magnitude, the product of its sign and its value, and a model that reads positions
    wrote "-0.1" for 43 of 100 east-west and 99 of 100 north-south offsets below -1 m.
    measured: docs/RESULTS.md#distance-offsets"""
    if task == "distance" and len(centres) == 2 and len(names) == 2 and all(len(c) == 3 for c in centres):
        (ax, ay, _), (bx, by, _) = centres
        where = ", ".join(f"{name} {_fmt(x)} {_fmt(y)} {_fmt(z)}" for name, (x, y, z) in zip(names, centres))
        return f"{where}, {(bx - ax + OFFSET_SPAN_M) / 2:.1f} {(by - ay + OFFSET_SPAN_M) / 2:.1f}: {answer}"
    if task == "relative_direction" and len(centres) == 3 and answer in ("left", "right"):
        (ax, ay), (bx, by), (cx, cy) = (c[:2] for c in centres)
        fx, fy = bx - ax, by - ay
        east_west, north_south = ("east" if fx > 0 else "west"), ("north" if fy > 0 else "south")
        if abs(fx) >= abs(fy):
            facing, across = east_west, ("north" if cy > ay else "south")
        else:
            facing, across = north_south, ("east" if cx > ax else "west")
        return f"{east_west} {north_south}, {facing} {across}: {answer}"
    return None


def final_answer(text: str) -> str:
    """The answer after any steps before it ("west north, north west: left" -> "left"), else the text."""
    return text.rsplit(": ", 1)[-1].strip()


def record_example(record: Record, segments: list[dict], num_obj_tokens: int,
                   with_answer: bool = True, count_by_listing: bool = False,
                   answer_steps: frozenset[str] = frozenset()) -> Example | None:
    """A record as a stage-4 example; None when a target is not in the scene's segments.

    Targets are ground-truth instance ids; they reach segments only through the matching
    (`instances_to_segments`), never by equality with a segment's label.

    With `count_by_listing`, a counting record whose counted objects are known (its target ids)
    is answered by naming them first, "<OBJ002> <OBJ005>: 2": the count is then the length of a list
    the model has just written, and each item is a category -> object lookup it learns anyway for
    grounding. Answering the bare number asks a small model to count in one step.
    measured: docs/RESULTS.md#count-by-listing

    Records of `answer_steps` tasks are answered after first-order steps on their targets' true box
    centres (`answer_in_steps`): the steps then agree with the answer, whichever segments matched.
    A distance in steps names its objects as the question does (its identifiers, else the record's
    `target_names`); a record that gives no names is not an example (None)."""
    seg_of_instance = instances_to_segments(segments)
    ident_of_seg = segment_identifiers(segments, num_obj_tokens)
    seg_ids = [seg_of_instance.get(t) for t in record.target_ids]
    idents = [ident_of_seg.get(s) if s is not None else None for s in seg_ids]
    question = record.question
    placeholders = question.count(OBJ_PLACEHOLDER)
    if placeholders > len(idents):
        raise ValueError(f"record {record.id} (scene {record.scene_id}): {placeholders} {OBJ_PLACEHOLDER} "
                         f"placeholders but {len(idents)} target ids")
    # The question must name its objects. The answer's targets matter only when training on an answer
    # that names them (objects, or a count that lists them): a number or a choice about objects the
    # question names by category ("How far apart are the sofa and the table?") needs no segment of them.
    names_targets = record.answer_type == "objects" or (count_by_listing and record.task == "counting")
    if None in idents[:placeholders] or (with_answer and names_targets and None in idents):
        return None
    for ident in idents[:placeholders]:
        question = question.replace(OBJ_PLACEHOLDER, obj_token(ident), 1)
    if record.situation:
        question = f"{record.situation} {question}"
    if record.choices and not all(c in question for c in record.choices):
        question = f"{question} ({' / '.join(record.choices)})"
    known = [i for i in idents if i is not None]
    if record.answer_type == "objects":
        answer = _tokens(known) if known else NONE_ANSWER
    elif record.answers:
        answer = record.answers[0]
        if count_by_listing and record.task == "counting" and with_answer:
            answer = _listed_count(answer, known)
        if record.task in answer_steps and with_answer:
            names = [obj_token(i) for i in idents[:placeholders]] + record.target_names[placeholders:]
            stepped = answer_in_steps(record.task, [tuple(b.center) for b in record.target_boxes], answer, names)
            if stepped is None and _needs_names(record, answer_steps):
                return None  # stage4_examples tallies it as SKIP_UNNAMED
            answer = stepped or answer
    elif with_answer:
        return None
    else:
        answer = ""
    return Example(record.scene_id, record.task, question, answer, record_id=record.id,
                   meta={"object_ids": sorted({s for s, i in zip(seg_ids, idents) if i is not None})})


def _listed_count(count: str, idents: list[int]) -> str:
    """The listed form of a count, or the bare count when its objects are unknown (a record with a
    count but no target ids) or do not match it."""
    try:
        n = int(float(count))
    except ValueError:
        return count
    if n != len(set(idents)):
        return count
    return f"{_tokens(idents) if idents else NONE_ANSWER}: {count}"


# Why `stage4_examples` skipped a record (keys of the `skipped` tally, per task).
SKIP_UNMATCHED = "unmatched_target"  # a target matches no segment of the scene
SKIP_OTHER = "other"  # a target beyond the identifiers, or no answer to train on
# a distance answered in steps restates its objects' names, and the record gives none (target_names)
SKIP_UNNAMED = "unnamed_targets"


def _needs_names(record: Record, answer_steps: frozenset[str]) -> bool:
    """Whether the record is a distance to answer in steps whose objects the question names in words
    that the record does not give (`target_names`)."""
    in_words = len(record.target_ids) - record.question.count(OBJ_PLACEHOLDER)
    return record.task == "distance" and "distance" in answer_steps and in_words > 0 and not record.target_names


def stage4_examples(scene_id: str, segments: list[dict], records: list[Record],
                    num_obj_tokens: int, rng: random.Random, count_by_listing: bool = False,
                    skipped: Counter | None = None, answer_steps: frozenset[str] = frozenset()) -> list[Example]:
    """The records as examples. Records that cannot be examples are counted in `skipped`, keyed by
    (task, reason) (`SKIP_UNMATCHED`, `SKIP_UNNAMED` or `SKIP_OTHER`), so that the trainer reports them."""
    out, num_skipped = [], 0
    for rec in records:
        ex = record_example(rec, segments, num_obj_tokens, count_by_listing=count_by_listing,
                            answer_steps=answer_steps)
        if ex is None:
            num_skipped += 1
            if skipped is not None:
                reason = (SKIP_UNMATCHED if unmatched_targets(rec, segments) else
                          SKIP_UNNAMED if _needs_names(rec, answer_steps) else SKIP_OTHER)
                skipped[(rec.task, reason)] += 1
        else:
            out.append(ex)
    if num_skipped:
        log.debug("scene %s: %d records skipped (by reason in the stage's skipped tally)", scene_id, num_skipped)
    rng.shuffle(out)
    return out


def _mixed(own: list[Example], replay: list[Example], rng: random.Random) -> list[Example]:
    out = own + replay
    rng.shuffle(out)
    return out


def sample_per_task(items: list, rng: random.Random, per_task: int | Mapping[str, int]) -> list:
    """`per_task` distinct items (records or examples) of each task among `items` (all of a task's when
    it has fewer), drawn by `rng`, task by task in name order. A mapping caps the tasks it names (task
    -> how many) and keeps every item of the others."""
    by_task: dict[str, list] = defaultdict(list)
    for item in items:
        by_task[item.task].append(item)
    out = []
    for task in sorted(by_task):
        cap = per_task if isinstance(per_task, int) else per_task.get(task)
        group = by_task[task]
        out.extend(group if cap is None else rng.sample(group, min(cap, len(group))))
    return out


def replay_sample(records: list[Record], replay_tasks: frozenset[str], rng: random.Random,
                  per_task: int = 1) -> list[Record]:
    """`per_task` distinct records of each of `replay_tasks` that the scene has (all of them when it
    has fewer), drawn by `rng` (so others each epoch): a replay that keeps a task alive at a fixed,
    small cost per scene."""
    return sample_per_task([rec for rec in records if rec.task in replay_tasks], rng, per_task)


def build_examples(stage: int, scene_id: str, segments: list[dict], records: list[Record],
                   num_obj_tokens: int, rng: random.Random, tasks: frozenset[str] | None = None,
                   record_tasks: frozenset[str] = frozenset(), count_by_listing: bool = False,
                   skipped: Counter | None = None, replay_tasks: frozenset[str] = frozenset(),
                   replay_per_task: int = 1, answer_steps: frozenset[str] = frozenset(),
                   position_names: frozenset[str] = POSITION_BY_IDENTIFIER) -> list[Example]:
    """The stage's examples of one scene, only those of `tasks` when given; stages 1-3 add the
    records of `record_tasks`, asked about the simplified scene (a record question refers to objects
    by identifier, which the fused tokens carry as well as the proxies do). Any stage adds
    `replay_per_task` records of each of `replay_tasks` (`replay_sample`). `count_by_listing`: see
    `record_example`; `answer_steps`: records of these tasks are answered in steps
    (`answer_in_steps`); `position_names`: see `stage2_examples`. `skipped` tallies the records of
    the stage's tasks that could not be examples (see `stage4_examples`)."""
    tally: Counter = Counter()
    examples = _stage_examples(stage, scene_id, segments, records, num_obj_tokens, rng, count_by_listing, tally,
                               answer_steps, position_names)
    if stage in (3, 4) and tasks is not None and tasks & STAGE2_TASKS:
        # Stage 3 replays the stage-2 tasks it names: without `object_position` a model forgets how
        # to read positions while it learns to relate them. measured: docs/RESULTS.md#spatial-trainer-path
        # Stage 4 asks them of the proxies: read off the simplified scene alone, positions do not
        # carry over to the proxies. measured: docs/RESULTS.md#proxy-positions
        replayed = stage2_examples(scene_id, segments, num_obj_tokens, rng, position_names)
        examples = _mixed(examples, replayed, rng)
    if tasks is not None:
        examples = [ex for ex in examples if ex.task in tasks]
        tally = Counter({key: n for key, n in tally.items() if key[0] in tasks})
    if stage < 4 and record_tasks:
        extra = stage4_examples(scene_id, segments, [r for r in records if r.task in record_tasks],
                                num_obj_tokens, rng, count_by_listing, tally, answer_steps)
        examples = _mixed(examples, extra, rng)
    if replay_tasks:
        extra = stage4_examples(scene_id, segments, replay_sample(records, replay_tasks, rng, replay_per_task),
                                num_obj_tokens, rng, count_by_listing, tally, answer_steps)
        examples = _mixed(examples, extra, rng)
    if skipped is not None:
        skipped.update(tally)
    return examples


def _stage_examples(stage: int, scene_id: str, segments: list[dict], records: list[Record],
                    num_obj_tokens: int, rng: random.Random, count_by_listing: bool,
                    skipped: Counter, answer_steps: frozenset[str] = frozenset(),
                    position_names: frozenset[str] = POSITION_BY_IDENTIFIER) -> list[Example]:
    if stage == 1:
        return stage1_examples(scene_id, segments, num_obj_tokens, rng)
    # Stages 2 and 3 replay stage 1's naming: without it a small language model forgets how to name
    # objects while it learns coordinates, and stage 4 then starts from scratch.
    # measured: docs/RESULTS.md#naming-replay
    if stage == 2:
        return _mixed(stage2_examples(scene_id, segments, num_obj_tokens, rng, position_names),
                      stage1_examples(scene_id, segments, num_obj_tokens, rng), rng)
    if stage == 3:
        return _mixed(stage3_examples(scene_id, segments, num_obj_tokens, rng, answer_steps=answer_steps),
                      stage1_examples(scene_id, segments, num_obj_tokens, rng), rng)
    if stage == 4:
        return stage4_examples(scene_id, segments, records, num_obj_tokens, rng, count_by_listing, skipped,
                               answer_steps)
    raise ValueError(f"unknown stage {stage}; stages are 1-4")
